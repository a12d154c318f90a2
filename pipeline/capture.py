"""Getting frames out of a source: OpenCV / FFmpeg opening, file iteration, decimation, live capture.

:class:`Capture` opens one source with bounded timeouts (:meth:`Capture.open`), iterates a file as
``(capture_ts, frame)`` pairs (:meth:`Capture.file_frames`, optionally paced to the file's own frame
rate and looping), and runs the capture thread of a live source (:meth:`Capture.run_live`: grab for
ever, reopen with exponential backoff plus jitter) or of a file played like a camera
(:meth:`Capture.run_paced_file`). Live capture writes into a :class:`FrameSlot`, the one-slot
newest-frame-wins buffer the sender in :mod:`pipeline.readers` takes frames from.
:class:`Decimator` keeps at most ``max_fps`` frames per second of capture time.

Frames are ``(H, W, 3)`` uint8 BGR as OpenCV decodes them; capture timestamps are unix seconds.
Credentials in URLs are masked (:func:`pipeline.sources.mask_url`) in every log line.
"""
from __future__ import annotations

import logging
import os
import random
import threading
import time
from typing import Any, Iterator

import cv2
import numpy as np

from pipeline.reader_settings import ReaderSettings
from pipeline.sources import mask_url

log = logging.getLogger(__name__)

__all__ = ["RTSP_CAPTURE_OPTIONS", "Capture", "Decimator", "FrameSlot"]

#: FFmpeg options for network streams (``OPENCV_FFMPEG_CAPTURE_OPTIONS``); small probe sizes bring the
#: first RTSP frame from about 1.2 s to about 0.2 s on loopback. ``{transport}`` is tcp or udp.
RTSP_CAPTURE_OPTIONS = "rtsp_transport;{transport}|analyzeduration;100000|probesize;100000"
_ENV_LOCK = threading.Lock()


class Decimator:
    """Passes at most ``max_fps`` frames per second of capture time, without drift or bursts.

    Args:
        max_fps: frames per second to keep at most; None keeps every frame.
    """

    def __init__(self, max_fps: float | None):
        self.period = None if max_fps is None else 1.0 / max_fps
        self.next_ts: float | None = None

    def keep(self, ts: float) -> bool:
        """Whether the frame captured at ``ts`` (seconds, non-decreasing) is kept."""
        if self.period is None:
            return True
        if self.next_ts is not None and ts + 1e-3 < self.next_ts:
            return False
        if self.next_ts is None or ts - self.next_ts >= self.period:
            self.next_ts = ts + self.period  # first frame, or after a gap: restart the grid
        else:
            self.next_ts += self.period
        return True


class FrameSlot:
    """State shared by a capture thread and the sender, guarded by the condition ``lock``.

    Attributes:
        lock: a ``threading.Condition``; notified when a frame arrives, ``source_up`` changes or the
            stream ends.
        slot: the newest unsent ``(seq, capture_ts, frame)``, or None.
        seq: the ``seq`` the next kept frame gets.
        dropped: frames lost (overwritten in the slot, or refused by the transport).
        reconnects: source reopen attempts.
        source_up: whether the source is open and delivering.
        eos: the capture thread reached the end of a file.
    """

    def __init__(self) -> None:
        self.lock = threading.Condition()
        self.slot: tuple[int, float, np.ndarray] | None = None
        self.seq = 0
        self.dropped = 0
        self.reconnects = 0
        self.source_up = False
        self.eos = False

    def publish(self, ts: float, frame: np.ndarray) -> None:
        """Put the newest frame into the one-slot buffer; an unsent older frame counts as dropped."""
        with self.lock:
            if self.slot is not None:
                self.dropped += 1
            self.slot = (self.seq, ts, frame)
            self.seq += 1
            self.lock.notify()

    def set_up(self, up: bool) -> None:
        """Record whether the source is up, waking the sender on a change."""
        with self.lock:
            if self.source_up != up:
                self.source_up = up
                self.lock.notify()

    def count_reconnect(self) -> None:
        """Count one reopen attempt."""
        with self.lock:
            self.reconnects += 1

    def end(self, discard: bool = False) -> None:
        """The stream ended: source down, ``eos`` set; ``discard`` also drops an unsent frame."""
        with self.lock:
            if discard:
                self.slot = None
            self.source_up = False
            self.eos = True
            self.lock.notify()


class Capture:
    """One source of one reader: opening, file iteration and the live capture loops.

    Args:
        settings: the reader's settings (URL, timeouts, backoff, loop, ``max_fps``, RTSP transport).
        kind: the resolved kind, ``file``, ``rtsp`` or ``device``.
        stop: an object with ``is_set()`` and ``wait(timeout) -> bool`` (a ``threading.Event``);
            setting it ends iteration and the capture loops.

    Attributes:
        source_fps: the frame rate the source reports (frames/s), None until opened or if unknown.
        safe_url: the URL with credentials masked.
    """

    def __init__(self, settings: ReaderSettings, kind: str, stop: Any):
        self.s = settings
        self.kind = kind
        self.stop = stop
        self.safe_url = mask_url(settings.url)
        self.source_fps: float | None = None

    def open(self) -> cv2.VideoCapture | None:
        """Open the source with the settings' open / read timeouts (ms); None if it cannot be opened.

        Devices open through V4L2, everything else through FFmpeg (network streams with
        :data:`RTSP_CAPTURE_OPTIONS`). Sets :attr:`source_fps`.
        """
        s = self.s
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, s.open_timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, s.read_timeout_ms]
        if self.kind == "device":
            target: str | int = int(s.url) if str(s.url).isdigit() else str(s.url)
            cap = cv2.VideoCapture(target, cv2.CAP_V4L2, params)
        else:
            url = str(s.url)
            options = None
            if self.kind == "rtsp":
                scheme = url.split("://", 1)[0].lower()
                options = RTSP_CAPTURE_OPTIONS.format(transport=s.rtsp_transport)
                if scheme not in ("rtsp", "rtsps"):
                    options = options.split("|", 1)[1]
            with _ENV_LOCK:  # the FFmpeg backend reads this variable at open time
                previous = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
                if options is None:
                    os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                else:
                    os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = options
                try:
                    cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
                finally:
                    if previous is None:
                        os.environ.pop("OPENCV_FFMPEG_CAPTURE_OPTIONS", None)
                    else:
                        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = previous
        if not cap.isOpened():
            cap.release()
            return None
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.source_fps = float(fps) if np.isfinite(fps) and 0 < fps < 1000 else None
        return cap

    def can_open(self) -> bool:
        """Whether the source opens (it is released again at once)."""
        cap = self.open()
        if cap is None:
            return False
        cap.release()
        return True

    def file_frames(self, paced: bool) -> Iterator[tuple[float, np.ndarray]]:
        """Yield ``(capture_ts, frame)`` from a file: start wall time + media time (+ loop offset), seconds.

        Args:
            paced: wait until each frame's media time has come (play like a camera).

        Raises:
            FileNotFoundError: the file cannot be opened (first pass only).
        """
        cap = self.open()
        if cap is None:
            raise FileNotFoundError(self.safe_url)
        start_wall, start_mono = time.time(), time.monotonic()
        offset = 0.0  # media seconds of the passes already played (looping)
        try:
            while not self.stop.is_set():
                frames, last_media = 0, -1.0
                step = 1.0 / self.source_fps if self.source_fps else 1.0 / 30.0
                while not self.stop.is_set() and cap.grab():
                    media = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                    if not np.isfinite(media) or media <= last_media:
                        media = last_media + step if last_media >= 0 else 0.0  # keep time monotonic
                    ok, frame = cap.retrieve()
                    if not ok or frame is None:
                        log.warning("camera %s: cannot decode frame %d of %s, skipped", self.s.camera, frames, self.safe_url)
                        continue
                    frames, last_media = frames + 1, media
                    if paced:  # play like a camera: wait until the frame's time has come
                        delay = start_mono + offset + media - time.monotonic()
                        if delay > 0 and self.stop.wait(delay):
                            return
                    yield start_wall + offset + media, frame
                cap.release()
                if self.stop.is_set() or not self.s.loop or frames == 0:
                    if frames == 0 and self.s.loop:
                        log.warning("camera %s: %s has no frames to loop over", self.s.camera, self.safe_url)
                    return
                offset += last_media + step
                cap = self.open()
                if cap is None:
                    log.error("camera %s: cannot reopen %s to loop", self.s.camera, self.safe_url)
                    return
                log.debug("camera %s: looping %s", self.s.camera, self.safe_url)
        finally:
            cap.release()

    def _backoff(self, delay: float) -> bool:
        """Sleep ``delay`` seconds +- jitter; True if ``stop`` was set meanwhile."""
        j = self.s.backoff_jitter
        return self.stop.wait(delay * random.uniform(1.0 - j, 1.0 + j))

    def run_live(self, state: FrameSlot) -> None:
        """Capture thread for RTSP / devices: grab for ever into ``state``, reopen with backoff on
        failure (a read slower than ``read_timeout_ms`` counts as one); returns when ``stop`` is set."""
        s = self.s
        delay = s.backoff_initial_s
        decimator = Decimator(s.max_fps)
        timeout_s = 0.95 * s.read_timeout_ms / 1000.0
        attempt = 0
        while not self.stop.is_set():
            if attempt > 0:
                state.count_reconnect()
            attempt += 1
            t0 = time.monotonic()
            cap = self.open()
            if cap is None:
                state.set_up(False)
                log.warning("camera %s: cannot open %s (attempt %d); retrying in %.1f s", s.camera, self.safe_url, attempt, delay)
                if self._backoff(delay):
                    break
                delay = min(delay * 2.0, s.backoff_max_s)
                continue
            state.set_up(True)
            frames = 0
            failure = "stopped"
            try:
                while not self.stop.is_set():
                    t_grab = time.monotonic()
                    ok = cap.grab()
                    waited = time.monotonic() - t_grab
                    if waited >= timeout_s:
                        # FFmpeg's read timeout fired. OpenCV then flushes the decoder and may still
                        # return a few buffered (stale) frames, one per timeout: do not wait for them.
                        failure = "read timed out after %.1f s" % waited
                        break
                    if not ok:
                        failure = "read failed (stream ended or connection lost)"
                        break
                    ts = time.time()
                    ok, frame = cap.retrieve()
                    if not ok or frame is None:
                        failure = "frame could not be decoded"
                        break
                    if frames == 0:
                        log.info("camera %s: %s open, first frame after %.2f s (%dx%d, %s fps)", s.camera, self.safe_url,
                                 time.monotonic() - t0, frame.shape[1], frame.shape[0], self.source_fps)
                        delay = s.backoff_initial_s
                    frames += 1
                    if decimator.keep(ts):
                        state.publish(ts, frame)
            finally:
                cap.release()
            state.set_up(False)
            if self.stop.is_set():
                break
            log.warning("camera %s: %s: %s after %d frames; reopening in %.1f s", s.camera, self.safe_url, failure,
                        frames, delay)
            if self._backoff(delay):
                break
            delay = min(delay * 2.0, s.backoff_max_s)

    def run_paced_file(self, state: FrameSlot) -> None:
        """Capture thread for a file in live mode: real-time playback into ``state``, then
        :meth:`FrameSlot.end` (also when the file cannot be opened)."""
        decimator = Decimator(self.s.max_fps)
        missing = False
        try:
            state.set_up(True)
            for ts, frame in self.file_frames(paced=True):
                if decimator.keep(ts):
                    state.publish(ts, frame)
        except FileNotFoundError:
            missing = True
        finally:
            state.end(discard=missing)
