"""Prometheus metrics and the health endpoint of the stage.

All metrics live in one :class:`StageMetrics` over a private ``CollectorRegistry`` (so several
stages can run in one test process). :func:`serve` exposes ``/metrics`` (Prometheus text format)
and ``/healthz`` (JSON: per-camera liveness; HTTP 503 when a configured camera is down) with the
standard library's WSGI server in a daemon thread.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from socketserver import ThreadingMixIn

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, make_wsgi_app

log = logging.getLogger(__name__)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class StageMetrics:
    """Every metric of the stage. Names follow Prometheus conventions (``_total``, ``_seconds``)."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.frames_received = Counter("sarde_frames_received_total", "Frames received by the stage.", ["camera"], registry=r)
        self.frames_processed = Counter("sarde_frames_processed_total", "Frames run through detection and tracking.", ["camera"], registry=r)
        self.frames_dropped = Counter("sarde_frames_dropped_total", "Frames dropped, by the stage that dropped them (reader: newest-frame-wins or full HWM; stage: rejected).", ["camera", "stage"], registry=r)
        self.messages_rejected = Counter("sarde_messages_rejected_total", "Malformed or unusable messages rejected by the stage.", ["reason"], registry=r)
        self.detector_latency = Histogram("sarde_detector_latency_seconds", "Pose engine run time per batch.", buckets=_LATENCY_BUCKETS, registry=r)
        self.grouping_latency = Histogram("sarde_grouping_latency_seconds", "PAF grouping time per frame.", buckets=_LATENCY_BUCKETS, registry=r)
        self.tracking_latency = Histogram("sarde_tracking_latency_seconds", "Tracking, window buffers and scheduling per frame.", buckets=_LATENCY_BUCKETS, registry=r)
        self.emit_latency = Histogram("sarde_emit_latency_seconds", "Journal, PUB, MQTT and stdout per event.", buckets=_LATENCY_BUCKETS, registry=r)
        self.recognizer_latency = Histogram("sarde_recognizer_latency_seconds", "Fused SARDE graph run time per batch.", buckets=_LATENCY_BUCKETS, registry=r)
        self.frame_latency = Histogram("sarde_frame_latency_seconds", "Capture timestamp to end of tracking, per frame.", buckets=_LATENCY_BUCKETS, registry=r)
        self.event_latency = Histogram("sarde_event_latency_seconds", "Receipt of the frame that completes a window to event published, per camera.", ["camera"], buckets=_LATENCY_BUCKETS, registry=r)
        self.detector_batch = Histogram("sarde_detector_batch_size", "Frames per detector run.", buckets=_BATCH_BUCKETS, registry=r)
        self.recognizer_batch = Histogram("sarde_recognizer_batch_size", "Windows per recogniser run.", buckets=_BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge("sarde_queue_depth", "Items waiting in a stage queue.", ["queue"], registry=r)
        self.active_tracks = Gauge("sarde_active_tracks", "Tracks alive per camera.", ["camera"], registry=r)
        self.persons_detected = Counter("sarde_persons_detected_total", "Persons found by PAF grouping.", ["camera"], registry=r)
        self.windows_classified = Counter("sarde_windows_classified_total", "Windows run through the recogniser.", ["camera"], registry=r)
        self.events = Counter("sarde_events_total", "Action events emitted.", ["camera", "label", "phase"], registry=r)
        self.events_publish_failed = Counter("sarde_events_publish_failed_total", "Events not sent on the PUB socket (they are still in the journal).", registry=r)
        self.journal_pruned = Counter("sarde_journal_pruned_total", "Events deleted from the journal by its retention policy.", registry=r)
        self.config_reloads = Counter("sarde_config_reloads_total", "Config reloads (SIGHUP) by result: applied, or rejected (the running config stayed).", ["result"], registry=r)
        self.snapshots = Counter("sarde_snapshots_total", "Event snapshots written.", ["camera"], registry=r)
        self.clips = Counter("sarde_clips_total", "Event clips (pre- and post-roll video) written.", ["camera"], registry=r)
        self.clip_errors = Counter("sarde_clip_errors_total", "Event clips that could not be written (the event named a clip that never appeared).", registry=r)
        self.snapshot_errors = Counter("sarde_snapshot_errors_total", "Event snapshots that could not be written (the event went out without one).", registry=r)
        self.journal_errors = Counter("sarde_journal_errors_total", "Events the journal failed to store (still published).", registry=r)
        self.reader_reconnects = Counter("sarde_reader_reconnects_total", "Source reopen attempts reported by readers.", ["camera"], registry=r)
        self.reader_restarts = Counter("sarde_reader_restarts_total", "Reader processes restarted by the daemon's watchdog after they died.", ["camera"], registry=r)
        self.camera_up = Gauge("sarde_camera_up", "1 if the camera delivered a frame within camera_timeout_s and its reader reports the source up.", ["camera"], registry=r)
        self.camera_last_frame = Gauge("sarde_camera_last_frame_timestamp_seconds", "Unix time the stage last received a frame from the camera.", ["camera"], registry=r)
        self.build_info = Info("sarde_build", "Version, models and execution providers in use.", registry=r)


class Health:
    """Per-camera liveness and the stage's own loops, fed by the stage, read by ``/healthz`` and the
    ``sarde_camera_up`` gauge.

    Args:
        metrics: the registry whose gauges are refreshed.
        cameras: the configured cameras (others appear when they first report).
        timeout_s: a camera without a frame for this long is down, seconds.
        stall_s: a stage loop (engine thread, post-processing thread) that has not come round for this
            long is stalled, seconds: ``/healthz`` then answers 503 even if every camera is up.
    """

    def __init__(self, metrics: StageMetrics, cameras: list[str], timeout_s: float, stall_s: float = 30.0):
        self._metrics = metrics
        self._timeout = timeout_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {c: 0.0 for c in cameras}
        self._source_up: dict[str, bool] = {c: True for c in cameras}
        self._ended: set[str] = set()
        self._stall = stall_s
        self._beats: dict[str, float] = {}
        for c in cameras:
            metrics.camera_up.labels(c).set(0)

    def frame(self, camera: str, now: float | None = None) -> None:
        with self._lock:
            self._last[camera] = now or time.time()
            self._source_up[camera] = True
            self._ended.discard(camera)
        self._metrics.camera_last_frame.labels(camera).set(self._last[camera])

    def source(self, camera: str, up: bool) -> None:
        with self._lock:
            self._source_up[camera] = up
            self._last.setdefault(camera, 0.0)

    def ended(self, camera: str) -> None:
        with self._lock:
            self._ended.add(camera)

    def beat(self, loop: str, now: float | None = None) -> None:
        """A stage loop (``engine``, ``post``) came round."""
        with self._lock:
            self._beats[loop] = now or time.time()

    def stage(self, now: float | None = None) -> dict:
        """``{loop: {"last_beat_age_s": float, "stalled": bool}}`` for the loops that have beaten."""
        now = now or time.time()
        with self._lock:
            return {loop: {"last_beat_age_s": round(now - t, 3), "stalled": now - t > self._stall}
                    for loop, t in self._beats.items()}

    def snapshot(self, now: float | None = None) -> dict:
        """``{camera: {"up": bool, "last_frame_age_s": float | None, "ended": bool}}``; also refreshes the gauge."""
        now = now or time.time()
        out = {}
        with self._lock:
            for cam, last in self._last.items():
                up = self._source_up[cam] and last > 0 and now - last <= self._timeout and cam not in self._ended
                out[cam] = {"up": up, "last_frame_age_s": round(now - last, 3) if last else None, "ended": cam in self._ended}
                self._metrics.camera_up.labels(cam).set(1 if up else 0)
        return out


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature fixed by the base class
        log.debug("metrics http: " + format, *args)


def serve(metrics: StageMetrics, health: Health, host: str, port: int) -> tuple[_Server, int]:
    """Start ``/metrics`` and ``/healthz`` in a daemon thread; returns the server and its bound port.

    Raises:
        OSError: the address is in use or cannot be bound (the caller reports it as a start-up error).
    """
    prom = make_wsgi_app(metrics.registry)

    def app(environ, start_response):
        if environ.get("PATH_INFO") == "/healthz":
            snap = health.snapshot()
            live = [c for c, s in snap.items() if not s["ended"]]
            loops = health.stage()
            ok = all(snap[c]["up"] for c in live) and not any(v["stalled"] for v in loops.values())
            body = json.dumps({"ok": ok, "cameras": snap, "stage": loops}).encode()
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "application/json")])
            return [body]
        health.snapshot()
        return prom(environ, start_response)

    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="sarde-metrics-http", daemon=True)
    thread.start()
    bound = server.server_address[1]
    log.info("metrics on http://%s:%d/metrics, health on /healthz", host, bound)
    return server, bound
