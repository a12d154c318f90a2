"""Event clips: a short video of every action's start, with pre-roll from a bounded ring buffer.

For every camera the stage hands each processed frame (:class:`pipeline.snapshots.LastFrame`: the
letterboxed detector input it already holds, no copy) with the labels of the actions open at that
moment to :meth:`ClipRecorder.frame`; the recorder keeps the last ``pre_s`` seconds of them in a ring
buffer (``round(pre_s * fps)`` frames per camera, references only: about 0.5 MB a frame at
432x368). On a ``start`` event, :meth:`ClipRecorder.start` takes the ring's frames as the pre-roll,
goes on collecting the camera's next ``round(post_s * fps)`` frames as the post-roll and returns the
path the clip will have, ``<media_dir>/<camera>/<UTC date>/<event_id>.mp4`` beside the snapshot
(the event's ``clip`` field, ``sarde.event/3``). When the post-roll is complete (or the camera's
stream ends first) a writer thread draws the overlay on every frame
(:func:`pipeline.snapshots.draw_overlay`: the event's tracks, and those of other open actions, in
red with their label on every frame, pre-roll included; the event's label and score as a caption on
the frames after the start), encodes it with OpenCV's
``VideoWriter`` (MPEG-4 Part 2, ``mp4v``, at the window frame rate) to a temporary file and renames
it into place, so the path holds a whole clip or nothing; then the media retention runs when due
(:meth:`pipeline.snapshots.SnapshotWriter.prune_if_due`: snapshots and clips together, by age and size).

Nothing here can stop the stage: a clip that cannot be written (encoder failure, disk full, the
writer's queue of ``max_pending`` clips full) is logged and counted (``sarde_clip_errors_total``),
and its event has already gone out.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.snapshots import LastFrame, SnapshotWriter, draw_overlay

log = logging.getLogger(__name__)


@dataclass
class _Clip:
    camera: str
    path: Path
    caption: str
    tracks: dict = field(default_factory=dict)  # {track id: label} of the event, drawn on every frame
    frames: list = field(default_factory=list)  # [(LastFrame, {track id: label}, after start?)]
    post_left: int = 0


class ClipRecorder:
    """Pre-/post-roll clips of start events, written by one background thread.

    Args:
        store: the snapshot writer whose root, file naming and retention the clips share.
        pre_s: seconds before the start event, >= 0.
        post_s: seconds after it, > 0.
        fps: the frame rate of the frames handed in (the window rate), frames/s.
        metrics: the stage's :class:`pipeline.metrics.StageMetrics` (``clips`` and ``clip_errors``
            counters), or None.
        max_pending: clips waiting for the writer; one more is dropped (logged, counted).

    Raises:
        ValueError: ``pre_s < 0``, ``post_s <= 0`` or ``fps <= 0``.
    """

    def __init__(self, store: SnapshotWriter, pre_s: float = 2.0, post_s: float = 3.0, fps: float = 15.0,
                 metrics=None, max_pending: int = 16):
        if pre_s < 0 or post_s <= 0 or fps <= 0:
            raise ValueError(f"clip pre_s {pre_s} must be >= 0, post_s {post_s} and fps {fps} > 0")
        self.store = store
        self.fps = float(fps)
        self.pre_frames = int(round(pre_s * fps))
        self.post_frames = max(1, int(round(post_s * fps)))
        self.metrics = metrics
        self._rings: dict[str, deque] = {}
        self._open: dict[str, list[_Clip]] = {}
        self._jobs: queue.Queue = queue.Queue(maxsize=max_pending)
        self.written: list[Path] = []
        self._thread = threading.Thread(target=self._work, name="sarde-clips", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- stage thread
    def frame(self, camera: str, frame: LastFrame, labels: dict[int, str]) -> None:
        """One processed frame of ``camera`` with ``{track id: label}`` of the actions open on it."""
        item = (frame, dict(labels))
        ring = self._rings.get(camera)
        if ring is None:
            ring = self._rings[camera] = deque(maxlen=max(1, self.pre_frames))
        if self.pre_frames:
            ring.append(item)
        clips = self._open.get(camera)
        if not clips:
            return
        for clip in list(clips):
            clip.frames.append((*item, True))
            clip.post_left -= 1
            if clip.post_left <= 0:
                clips.remove(clip)
                self._submit(clip)

    def start(self, camera: str, event_id: str, label: str, score: float, track_ids=(), when: float | None = None) -> Path:
        """Begin the clip of a start event of ``track_ids``: the ring's frames are its pre-roll.
        Returns the path the clip will be renamed to once written (see the module docstring)."""
        path = self.store.path_of(camera, event_id, ".mp4", when)
        pre = [(*item, False) for item in self._rings.get(camera, ())]
        clip = _Clip(camera, path, f"{label} {score:.2f}", {int(t): label for t in track_ids}, pre, self.post_frames)
        self._open.setdefault(camera, []).append(clip)
        return path

    def end_camera(self, camera: str) -> None:
        """``camera``'s stream ended: its open clips are written with the post-roll they have."""
        for clip in self._open.pop(camera, []):
            self._submit(clip)
        self._rings.pop(camera, None)

    def close(self, timeout_s: float = 30.0) -> None:
        """Write every open clip, then stop the writer thread (waits up to ``timeout_s``)."""
        for camera in list(self._open):
            self.end_camera(camera)
        self._jobs.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.error("event clips: the writer did not finish within %.0f s; clips still queued are lost", timeout_s)

    def _submit(self, clip: _Clip) -> None:
        if not clip.frames:
            self._failed(clip, "no frames")
            return
        try:
            self._jobs.put_nowait(clip)
        except queue.Full:
            self._failed(clip, f"the writer is behind ({self._jobs.maxsize} clips queued)")

    # ---------------------------------------------------------------- writer thread
    def _work(self) -> None:
        while True:
            clip = self._jobs.get()
            if clip is None:
                return
            try:
                self._write(clip)
            except Exception as exc:  # noqa: BLE001 - a clip must never stop the writer
                self._failed(clip, str(exc))
                continue
            self.written.append(clip.path)
            if self.metrics is not None:
                self.metrics.clips.labels(clip.camera).inc()
            self.store.prune_if_due()

    def _write(self, clip: _Clip) -> None:
        import cv2

        clip.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = clip.path.with_name(clip.path.stem + ".part.mp4")  # a suffix OpenCV knows, renamed when whole
        h, w = clip.frames[0][0].image.shape[:2]
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (w, h))
        if not writer.isOpened():
            raise OSError(f"OpenCV cannot open an mp4v writer for {tmp}")
        try:
            for frame, labels, after in clip.frames:
                img = draw_overlay(frame, {**labels, **clip.tracks}, clip.caption if after else None)
                if img.shape[:2] != (h, w):
                    img = cv2.resize(img, (w, h))
                writer.write(np.ascontiguousarray(img))
        finally:
            writer.release()
        os.replace(tmp, clip.path)

    def _failed(self, clip: _Clip, why: str) -> None:
        log.warning("camera %s: event clip %s not written: %s", clip.camera, clip.path.name, why)
        if self.metrics is not None:
            self.metrics.clip_errors.inc()
