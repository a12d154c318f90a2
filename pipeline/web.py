"""The operators' web page, served by the daemon (FastAPI on uvicorn, in a daemon thread).

Routes (``web.host:web.port``; no login: keep it on loopback or behind an authenticating proxy):

* ``GET /``: the page. Every camera with its health (up / down / ended, seconds since its last
  frame) and its live overlay stream; below, the recent events (newest first) with their snapshot,
  clip, label, score, tracks and time, filterable by camera, label and phase (query parameters
  ``camera``, ``label``, ``phase``; the default phase is ``start``: one row per action). The events
  and the health refresh every few seconds without reloading the page (the live streams go on).
* ``GET /fragments/events``: the events table alone (what the page refreshes), same parameters.
* ``GET /cameras/{camera}/live.mjpeg``: the camera's processed frames with skeletons, track ids and
  open actions drawn (:class:`pipeline.live.LiveFrames`), as ``multipart/x-mixed-replace`` JPEGs, at
  most ``web.stream_fps`` per second. ``GET /cameras/{camera}/latest.jpg``: one such frame (404 if
  none came within 2 s).
* ``GET /media/{path}``: a snapshot (``image/jpeg``) or clip (``video/mp4``) under the media folder.
* ``GET /api/cameras``, ``GET /api/events``: the same as JSON (events as ``sarde.event`` objects
  with their journal ``seq``).
* ``POST /api/reload``: the same as SIGHUP (a config reload, :mod:`pipeline.reload`); 202 when
  requested, 404 when the daemon was started without reloads (``sarde stage``).

The page reads the journal read-only (one connection per request, sqlite WAL readers never block the
stage's writes) and the camera health from :class:`pipeline.metrics.Health`.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates

log = logging.getLogger(__name__)

_TEMPLATES = Path(__file__).with_name("templates")
_PHASES = ("start", "update", "end")


class WebPage:
    """The page's data sources.

    Args:
        health: camera and loop health (:class:`pipeline.metrics.Health`).
        live: the live frames (:class:`pipeline.live.LiveFrames`).
        journal_path: the event journal (sqlite), or None: no events listed.
        media_dir: the snapshot / clip folder, or None.
        stream_fps: most frames per second per MJPEG stream.
        max_events: rows of the events table.
        reload: requests a config reload, or None.
        title: shown in the page header (e.g. the model id).
    """

    def __init__(self, health, live, journal_path: str | Path | None, media_dir: str | Path | None,
                 stream_fps: float = 5.0, max_events: int = 50, reload: Callable[[], None] | None = None,
                 title: str = ""):
        self.health, self.live = health, live
        self.journal_path = None if journal_path is None else Path(journal_path)
        self.media_dir = None if media_dir is None else Path(media_dir).resolve()
        self.stream_interval = 1.0 / float(stream_fps)
        self.max_events = int(max_events)
        self.reload = reload
        self.title = title

    # ------------------------------------------------------------------ data
    def cameras(self) -> dict:
        """``{"cameras": {camera: {"up", "last_frame_age_s", "ended"}}, "stage": {loop: {...}}}``."""
        return {"cameras": self.health.snapshot(), "stage": self.health.stage()}

    def events(self, camera: str | None, label: str | None, phase: str | None, limit: int | None = None):
        """``(rows, cameras, labels)``: the newest matching events as dicts (``seq``, the event's
        fields, ``snapshot_url`` / ``clip_url`` when the file is under the media folder and exists),
        and the values the filters offer. Empty when the journal is not there yet."""
        from pipeline.journal import EventJournal, JournalError

        if self.journal_path is None or not self.journal_path.is_file():
            return [], [], []
        try:
            journal = EventJournal(self.journal_path, readonly=True)
        except JournalError as exc:
            log.warning("web: cannot read the journal: %s", exc)
            return [], [], []
        try:
            found = journal.recent(limit or self.max_events, camera or None, label or None, phase or None)
            cams, labels = journal.distinct("camera"), journal.distinct("label")
        except JournalError as exc:
            log.warning("web: cannot read the journal: %s", exc)
            return [], [], []
        finally:
            journal.close()
        rows = []
        for seq, e in found:
            row = dict(e.to_dict(), seq=seq, time=time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.emitted_ts)) + " UTC")
            for key in ("snapshot", "clip"):
                row[f"{key}_url"] = self.media_url(getattr(e, key))
            rows.append(row)
        return rows, cams, labels

    def media_url(self, path: str | None) -> str | None:
        """``/media/<relative path>`` of a file under the media folder that exists, else None."""
        if path is None or self.media_dir is None:
            return None
        try:
            rel = Path(path).resolve().relative_to(self.media_dir)
        except ValueError:
            return None
        return f"/media/{rel.as_posix()}" if (self.media_dir / rel).is_file() else None

    def media_file(self, rel: str) -> Path | None:
        """The file ``rel`` names under the media folder (no way out of it), or None."""
        if self.media_dir is None:
            return None
        path = (self.media_dir / rel).resolve()
        if not path.is_relative_to(self.media_dir) or not path.is_file() or path.suffix not in (".jpg", ".mp4"):
            return None
        return path

    def mjpeg(self, camera: str):
        """Yields the multipart body of ``camera``'s live stream until it ends or the daemon stops."""
        seq, next_at = 0, 0.0
        while not self.live.closed:
            wait = next_at - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            got = self.live.jpeg(camera, after=seq, timeout_s=1.0)
            if got is None:
                if self.live.ended(camera) or self.live.closed:
                    return
                continue
            seq, data = got
            next_at = time.monotonic() + self.stream_interval
            yield (b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: " + str(len(data)).encode()
                   + b"\r\n\r\n" + data + b"\r\n")


def make_app(page: WebPage):
    """The FastAPI application of ``page`` (routes in the module docstring)."""
    app = FastAPI(title="sarde", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(_TEMPLATES))

    def _filters(camera: str | None, label: str | None, phase: str | None) -> dict:
        if phase not in (None, "", "all") and phase not in _PHASES:
            raise HTTPException(400, f"phase must be one of {_PHASES} or all")
        return {"camera": camera or None, "label": label or None,
                "phase": None if phase == "all" else (phase or "start")}

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request, camera: str | None = None, label: str | None = None, phase: str | None = None):
        f = _filters(camera, label, phase)
        rows, cams, labels = page.events(**f)
        health = page.cameras()
        live = sorted(set(health["cameras"]) | set(page.live.cameras()))
        return templates.TemplateResponse(request, "index.html", {
            "title": page.title, "health": health["cameras"], "stage": health["stage"], "live": live,
            "events": rows, "cams": sorted(set(cams) | set(live)), "labels": labels, "phases": _PHASES,
            "f": f, "phase_value": phase or "start", "reload": page.reload is not None})

    @app.get("/fragments/events", response_class=HTMLResponse)
    def events_fragment(request: Request, camera: str | None = None, label: str | None = None, phase: str | None = None):
        rows, _, _ = page.events(**_filters(camera, label, phase))
        return templates.TemplateResponse(request, "events.html", {"events": rows})

    @app.get("/api/cameras")
    def api_cameras():
        return page.cameras()

    @app.get("/api/events")
    def api_events(camera: str | None = None, label: str | None = None, phase: str | None = "all", limit: int = 50):
        rows, _, _ = page.events(**_filters(camera, label, phase), limit=max(1, min(limit, 1000)))
        return rows

    @app.post("/api/reload", status_code=202)
    def api_reload():
        if page.reload is None:
            raise HTTPException(404, "this daemon was started without config reloads")
        page.reload()
        return {"reload": "requested"}

    @app.get("/cameras/{camera}/live.mjpeg")
    def live(camera: str):
        if camera not in page.live.cameras() and camera not in page.cameras()["cameras"]:
            raise HTTPException(404, f"no camera {camera!r}")
        return StreamingResponse(page.mjpeg(camera), media_type="multipart/x-mixed-replace; boundary=frame",
                                 headers={"Cache-Control": "no-store"})

    @app.get("/cameras/{camera}/latest.jpg")
    def latest(camera: str):
        got = page.live.jpeg(camera, after=0, timeout_s=2.0)  # a camera that just came up: its first frame
        if got is None:
            raise HTTPException(404, f"no frame of camera {camera!r} yet")
        return Response(got[1], media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.get("/media/{rel:path}")
    def media(rel: str):
        path = page.media_file(rel)
        if path is None:
            raise HTTPException(404, "no such snapshot or clip")
        return FileResponse(path, media_type="image/jpeg" if path.suffix == ".jpg" else "video/mp4")

    @app.exception_handler(Exception)
    def _unexpected(request: Request, exc: Exception):  # a bad request never reaches the stage
        log.exception("web: %s %s failed", request.method, request.url.path)
        return JSONResponse({"detail": "internal error"}, status_code=500)

    return app


class WebServer:
    """uvicorn serving :func:`make_app` in a daemon thread on a socket bound at construction.

    Args:
        page: the page's data.
        host, port: bind address (port 0: a free one; :attr:`port` says which).

    Raises:
        OSError: the address cannot be bound (the caller reports it as a start-up error).
    """

    def __init__(self, page: WebPage, host: str, port: int):
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._sock.bind((host, port))
        except OSError:
            self._sock.close()
            raise
        self._sock.listen(64)
        self.host, self.port = host, self._sock.getsockname()[1]
        self.page = page
        config = uvicorn.Config(make_app(page), log_level="warning", access_log=False, timeout_graceful_shutdown=2,
                                lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]},
                                        name="sarde-web", daemon=True)
        self._thread.start()
        log.info("web page on http://%s:%d/", host, self.port)

    def close(self) -> None:
        """Stop serving: the live streams end, open requests get up to 2 s."""
        self.page.live.close()
        self._server.should_exit = True
        self._thread.join(5)
        self._sock.close()
