"""Overlay videos: what the stage saw and concluded, per camera, as a video file.

With ``media.overlay_dir`` set (``sarde run --overlay DIR``) the stage draws every processed frame
(the letterboxed detector input it already holds) with the persons' skeletons and track ids, the
tracks of open actions in red with their label (:func:`pipeline.snapshots.draw_overlay`), and
writes it with OpenCV's ``VideoWriter`` (MPEG-4 Part 2, ``mp4v``) at the window frame rate to
``<overlay_dir>/<camera>-<UTC start time>.mp4``: one file per camera and run. A writer that fails is
logged once and that camera's overlay stops; detection and events go on.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from pipeline.snapshots import LastFrame, draw_overlay

log = logging.getLogger(__name__)


class OverlayWriter:
    """One overlay video per camera under ``out_dir`` (created).

    Args:
        out_dir: folder of the videos.
        fps: frame rate written into the files (the daemon's window rate, frames/s).

    Raises:
        OSError: ``out_dir`` cannot be created (a start-up error).
    """

    def __init__(self, out_dir: str | Path, fps: float = 15.0):
        self.root = Path(out_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.fps = float(fps)
        self._writers: dict[str, object] = {}
        self.paths: dict[str, Path] = {}
        self.frames: dict[str, int] = {}
        self._failed: set[str] = set()

    def frame(self, camera: str, frame: LastFrame, labels: dict[int, str]) -> None:
        """Draw and append one frame of ``camera`` (``labels``: ``{track id: label}`` of open actions)."""
        if camera in self._failed:
            return
        import cv2

        img = draw_overlay(frame, labels, camera)
        writer = self._writers.get(camera)
        if writer is None:
            path = self.root / f"{camera}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.mp4"
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (img.shape[1], img.shape[0]))
            if not writer.isOpened():
                log.error("camera %s: cannot open overlay video %s; no overlay for this camera", camera, path)
                self._failed.add(camera)
                return
            self._writers[camera], self.paths[camera], self.frames[camera] = writer, path, 0
            log.info("camera %s: overlay video %s", camera, path)
        writer.write(np.ascontiguousarray(img))
        self.frames[camera] += 1

    def end_camera(self, camera: str) -> None:
        """Finish ``camera``'s file (its stream ended)."""
        writer = self._writers.pop(camera, None)
        if writer is not None:
            writer.release()

    def close(self) -> None:
        for camera in list(self._writers):
            self.end_camera(camera)
