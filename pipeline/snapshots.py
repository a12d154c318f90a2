"""Event snapshots: a JPEG of what the model saw when an action started, with the overlay drawn on it.

For every live track the stage keeps the latest frame it was seen in (the letterboxed detector
input it already holds, no copy; frames are shared between the tracks they show and freed when
their tracks end) with the persons found on it and their track ids (:class:`LastFrame`). On every ``start``
event, :meth:`SnapshotWriter.save` draws the overlay with OpenCV (:func:`draw_overlay`: COCO-18
skeletons, track ids, the event's label and score; the event's tracks in red, other persons in grey)
and writes ``<media_dir>/<camera>/<UTC date>/<event_id>.jpg``; the event carries that path
(``snapshot`` field of ``sarde.event/2``). Retention (:meth:`SnapshotWriter.prune`, by age and by
total size, oldest first) runs after every write; a failed write is logged and counted, never fatal,
and the event is emitted without a snapshot.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.layouts import COCO18_EDGES

log = logging.getLogger(__name__)

_EVENT = (40, 40, 230)   # BGR: the event's tracks
_OTHER = (160, 160, 160)  # BGR: everyone else


@dataclass
class LastFrame:
    """A processed frame: ``image`` ``(H, W, 3)`` uint8 BGR letterboxed detector input (read-only, a
    view of the received message), ``people`` ``(P, 18, 3)`` float32 joints in those pixels with
    scores, ``track_of`` ``{person index: track id}``, ``frame_no`` the camera's frame number."""

    image: np.ndarray
    people: np.ndarray
    track_of: dict[int, int]
    frame_no: int = 0


def draw_overlay(frame: LastFrame, labels: dict[int, str], caption: str | None = None,
                 min_score: float = 0.05) -> np.ndarray:
    """A copy of ``frame.image`` with every person's skeleton (joints with score ``> min_score``) and
    track id; the tracks in ``labels`` in red with their label, everyone else in grey; ``caption``
    (e.g. ``"fighting 0.93"``) at the top left.

    Args:
        frame: the frame and its persons (:class:`LastFrame`).
        labels: ``{track id: label}`` of the tracks to highlight.
        caption: text of the banner, or None for none.

    Returns:
        ``(H, W, 3)`` uint8 BGR.
    """
    import cv2

    img = np.ascontiguousarray(frame.image).copy()
    for p, joints in enumerate(np.asarray(frame.people, np.float32)):
        tid = frame.track_of.get(p)
        colour = _EVENT if tid in labels else _OTHER
        ok = joints[:, 2] > min_score
        for a, b in COCO18_EDGES:
            if ok[a] and ok[b]:
                cv2.line(img, tuple(int(round(v)) for v in joints[a, :2]), tuple(int(round(v)) for v in joints[b, :2]),
                         colour, 2, cv2.LINE_AA)
        for j in np.flatnonzero(ok):
            cv2.circle(img, tuple(int(round(v)) for v in joints[j, :2]), 3, colour, -1, cv2.LINE_AA)
        if tid is not None and ok.any():
            x, y = joints[ok, 0].min(), joints[ok, 1].min()
            text = f"#{tid}" + (f" {labels[tid]}" if labels.get(tid) else "")
            cv2.putText(img, text, (int(x), max(12, int(y) - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    if caption:
        cv2.rectangle(img, (0, 0), (12 + 11 * len(caption), 24), (0, 0, 0), -1)
        cv2.putText(img, caption, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
    return img


class SnapshotWriter:
    """Writes event snapshots under ``media_dir`` and keeps it within its retention.

    Args:
        media_dir: root folder (created).
        retention_days: snapshots older than this are deleted (None: no age limit).
        max_bytes: the oldest snapshots are deleted while the folder holds more (None: no size limit).
        jpeg_quality: OpenCV JPEG quality, 1-100.
        prune_interval_s: writes run the retention at most this often (it lists the whole folder,
            and a snapshot is written on the stage's post-processing thread); the folder may exceed
            its limits by what is written in between.

    Raises:
        OSError: ``media_dir`` cannot be created (a start-up error).
    """

    def __init__(self, media_dir: str | Path, retention_days: float | None = 7.0, max_bytes: int | None = 1 << 30,
                 jpeg_quality: int = 85, prune_interval_s: float = 60.0):
        self.root = Path(media_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_age_s = None if retention_days is None else 86400.0 * retention_days
        self.max_bytes = max_bytes
        self.quality = int(jpeg_quality)
        self._prune_lock = threading.Lock()
        self.prune_interval_s = float(prune_interval_s)
        self._last_prune = float("-inf")  # time.monotonic() of the last retention run

    def save(self, camera: str, event_id: str, image: np.ndarray, when: float | None = None) -> Path:
        """Write ``image`` (``(H, W, 3)`` uint8 BGR) as ``<camera>/<YYYY-MM-DD>/<event_id>.jpg`` (UTC date of
        ``when``, default now), atomically (temporary file, then rename), then run the retention if
        it is due (:meth:`prune_if_due`).

        Raises:
            OSError: the file cannot be written. ValueError: OpenCV cannot encode the image.
        """
        import cv2

        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError(f"cannot encode a {image.shape} image as JPEG")
        path = self.path_of(camera, event_id, ".jpg", when)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".jpg.tmp")
        tmp.write_bytes(buf.tobytes())
        os.replace(tmp, path)
        self.prune_if_due()
        return path

    def path_of(self, camera: str, event_id: str, suffix: str, when: float | None = None) -> Path:
        """``<root>/<camera>/<UTC date of when (default now)>/<event_id><suffix>``: where an event's media goes."""
        return self.root / camera / time.strftime("%Y-%m-%d", time.gmtime(when or time.time())) / f"{event_id}{suffix}"

    def prune_if_due(self) -> int:
        """:meth:`prune` if the last run is ``prune_interval_s`` or more ago (the first call always
        runs); returns how many files were deleted."""
        if time.monotonic() - self._last_prune < self.prune_interval_s:
            return 0
        return self.prune()

    def prune(self, now: float | None = None) -> int:
        """Delete media (snapshots, and the event clips of :mod:`pipeline.event_clips` kept under the
        same root) older than the age limit, then the oldest while over the size limit, and the date
        folders left empty. Thread-safe (the clip writer prunes too). Returns how many files were deleted."""
        with self._prune_lock:
            self._last_prune = time.monotonic()
            return prune_media(self.root, self.max_age_s, self.max_bytes, now)


#: What :func:`prune_media` counts and deletes.
MEDIA_SUFFIXES = (".jpg", ".mp4")


def prune_media(root: Path, max_age_s: float | None, max_bytes: int | None, now: float | None = None) -> int:
    """Under ``root/<camera>/<date>/``: delete files with a :data:`MEDIA_SUFFIXES` suffix older than
    ``max_age_s`` seconds (by mtime), then the oldest while they total more than ``max_bytes``, then
    the date folders left empty. None disables a limit. Returns how many files were deleted; a file
    that cannot be deleted is logged and skipped."""
    now = time.time() if now is None else now
    files = []
    for p in root.glob("*/*/*"):
        if p.suffix not in MEDIA_SUFFIXES:
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        files.append((st.st_mtime, st.st_size, p))
    files.sort()
    total = sum(size for _, size, _ in files)
    deleted = 0
    for mtime, size, p in files:
        too_old = max_age_s is not None and now - mtime > max_age_s
        too_big = max_bytes is not None and total > max_bytes
        if not (too_old or too_big):
            break
        try:
            p.unlink()
            deleted += 1
            total -= size
        except FileNotFoundError:
            total -= size
        except OSError as exc:
            log.warning("media retention: cannot delete %s: %s", p, exc)
    if deleted:
        for d in sorted((d for d in root.glob("*/*") if d.is_dir()), reverse=True):
            try:
                d.rmdir()  # only if empty
            except OSError:
                pass
    return deleted
