"""Live view: the latest processed frame of every camera, as JPEG with the overlay, for the web page.

The stage hands every processed frame to :meth:`LiveFrames.frame` (a frame sink, on its
post-processing thread): that only stores a reference (no copy, no drawing), so a daemon nobody
watches pays nothing. A viewer (:meth:`LiveFrames.jpeg`, on a web server thread) gets the newest
frame drawn with :func:`pipeline.snapshots.draw_overlay` and JPEG-encoded; the encoding is cached
per frame, so any number of viewers of one camera cost one encode per frame they see.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

from pipeline.snapshots import LastFrame, draw_overlay


@dataclass
class _Latest:
    frame: LastFrame
    labels: dict[int, str]
    seq: int  # counts frames handed in for this camera, from 1
    jpeg: bytes | None = None


class LiveFrames:
    """Latest frame per camera, shared between the stage and the web server's threads.

    Args:
        jpeg_quality: OpenCV JPEG quality of the live images, 1-100.
    """

    def __init__(self, jpeg_quality: int = 70):
        self.quality = int(jpeg_quality)
        self._latest: dict[str, _Latest] = {}
        self._ended: set[str] = set()
        self._cond = threading.Condition()
        self.closed = False

    def frame(self, camera: str, frame: LastFrame, labels: dict[int, str]) -> None:
        """A processed frame of ``camera`` (stage thread): stored, viewers woken."""
        with self._cond:
            old = self._latest.get(camera)
            self._latest[camera] = _Latest(frame, dict(labels), (old.seq if old else 0) + 1)
            self._ended.discard(camera)
            self._cond.notify_all()

    def end_camera(self, camera: str) -> None:
        """``camera``'s stream ended: its last frame stays viewable, waiting viewers are woken."""
        with self._cond:
            self._ended.add(camera)
            self._cond.notify_all()

    def close(self) -> None:
        """The daemon is stopping: every waiting viewer returns."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def ended(self, camera: str) -> bool:
        """``camera``'s stream has ended (and no frame came since)."""
        with self._cond:
            return camera in self._ended

    def cameras(self) -> list[str]:
        """Cameras that have sent at least one frame, sorted."""
        with self._cond:
            return sorted(self._latest)

    def jpeg(self, camera: str, after: int = 0, timeout_s: float = 1.0) -> tuple[int, bytes] | None:
        """The newest frame of ``camera`` with a sequence number above ``after``, as
        ``(seq, JPEG bytes)`` (``(H, W)`` of the detector input, overlay drawn); waits up to
        ``timeout_s`` seconds for one. None when there is none by then (no frame yet, the stream
        ended, or the daemon is closing)."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.closed or camera in self._ended
                                       or (camera in self._latest and self._latest[camera].seq > after), timeout_s):
                return None
            latest = self._latest.get(camera)
            if latest is None or latest.seq <= after:
                return None
            if latest.jpeg is not None:
                return latest.seq, latest.jpeg
        import cv2

        ok, buf = cv2.imencode(".jpg", draw_overlay(latest.frame, latest.labels, camera),
                               [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return None
        latest.jpeg = buf.tobytes()  # a benign race: two viewers may both encode the same frame once
        return latest.seq, latest.jpeg
