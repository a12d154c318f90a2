"""Source readers: decode a file / RTSP stream / USB device, letterbox, push frames over ZeroMQ.

One reader per source, normally its own process (:func:`reader_main`, for ``multiprocessing`` with
the ``spawn`` start method). A reader PUSH-connects to the stage's endpoint and sends the messages
of :mod:`pipeline.wire`: letterboxed ``(H, W, 3)`` uint8 BGR frames at the detector input size,
``status`` messages while it has nothing to send, and ``eos`` at the end of a file.

Two modes:

* **lossless** (default for files): every frame is sent, the reader waits (blocking send, polled so
  that ``stop`` is honoured) while the stage is busy. Frames are read as fast as the stage takes them.
* **live** (RTSP, devices, and files with ``lossless=False``, which are then paced to their own frame
  rate like a camera): newest frame wins. A capture thread grabs continuously into a one-slot buffer;
  a frame overwritten before it was sent counts as dropped. The sender sends with ``zmq.NOBLOCK`` and
  counts ``zmq.Again`` (high-water mark reached) as dropped. The camera is never stalled.

``seq`` is assigned to every frame that passes ``max_fps`` decimation, so the gaps a receiver sees in
``seq`` are exactly the frames counted in ``dropped``.

Failures: a file that cannot be opened logs one line and :func:`run_reader` returns
:data:`EXIT_NO_SOURCE` (2). A live source that cannot be opened, fails or times out a read is
released and reopened with exponential backoff plus jitter (``reconnects`` counts reopen attempts);
meanwhile ``status`` messages with ``source_up`` false tell the stage the camera is down.
Credentials in URLs are masked (:func:`mask_url`) in every log line.
"""
from __future__ import annotations

import logging
import operator
import os
import random
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np
import zmq

from engines.letterbox import letterbox
from pipeline.wire import FrameHeader, encode_frame, encode_status

log = logging.getLogger(__name__)

__all__ = [
    "ReaderSettings", "run_reader", "reader_main", "mask_url", "infer_kind",
    "EXIT_OK", "EXIT_NO_SOURCE", "EXIT_TRANSPORT", "RTSP_CAPTURE_OPTIONS",
]

EXIT_OK = 0
#: A file source that cannot be opened.
EXIT_NO_SOURCE = 2
#: The ZeroMQ endpoint is invalid.
EXIT_TRANSPORT = 3

#: FFmpeg options for network streams (``OPENCV_FFMPEG_CAPTURE_OPTIONS``); small probe sizes bring the
#: first RTSP frame from about 1.2 s to about 0.2 s on loopback. ``{transport}`` is tcp or udp.
RTSP_CAPTURE_OPTIONS = "rtsp_transport;{transport}|analyzeduration;100000|probesize;100000"
_NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
_CAMERA_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_DEVICE_RE = re.compile(r"^(/dev/video\d+|\d+)$")
_SECRET_QUERY_RE = re.compile(r"(?i)([?&;](?:password|passwd|pwd|pass|token|secret|key|auth|signature)=)[^&;#]*")
_ENV_LOCK = threading.Lock()


def mask_url(url: str | int) -> str:
    """The URL with credentials replaced by ``***``, safe to log.

    ``rtsp://user:secret@host:554/path`` -> ``rtsp://user:***@host:554/path``; a user-info part with no
    colon (a token) becomes ``***``; query parameters named like password/token/key/secret are masked.
    Non-URL strings and ints are returned as text unchanged.
    """
    text = str(url)
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)(.*)$", text, re.S)
    if not m:
        return text
    scheme, netloc, rest = m.groups()
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        userinfo = userinfo.split(":", 1)[0] + ":***" if ":" in userinfo else "***"
        netloc = f"{userinfo}@{host}"
    rest = _SECRET_QUERY_RE.sub(r"\1***", rest)
    return scheme + netloc + rest


def infer_kind(url: str | int) -> str:
    """``"device"`` for an int, a digit string or ``/dev/videoN``; ``"rtsp"`` for a network URL
    (rtsp, rtsps, rtmp, http(s), udp, tcp, srt: any live network stream); ``"file"`` otherwise
    (including ``file://``)."""
    if isinstance(url, int) and not isinstance(url, bool):
        return "device"
    text = str(url)
    if _DEVICE_RE.match(text):
        return "device"
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in _NETWORK_SCHEMES:
        return "rtsp"
    return "file"


@dataclass(frozen=True)
class ReaderSettings:
    """Plain settings of one reader (the daemon maps the validated config onto it).

    Attributes:
        camera: camera id, ``[A-Za-z0-9_-]{1,64}``.
        url: file path, network URL (``rtsp://user:pass@host/path``), device index or ``/dev/videoN``.
        endpoint: ZeroMQ endpoint to PUSH-connect to (``ipc://...`` or ``tcp://host:port``).
        input_size: detector input ``(W, H)``, pixels; frames are letterboxed to it.
        kind: ``"auto"`` (see :func:`infer_kind`), ``"file"``, ``"rtsp"`` or ``"device"``.
        lossless: send every frame, blocking (default: True for files, False for live sources).
            ``False`` on a file plays it in real time like a camera (live mode).
        loop: restart a file at its end instead of sending ``eos``.
        max_fps: decimate to at most this many frames per second, by capture timestamp (None: off).
        sndhwm: ZeroMQ send high-water mark, messages.
        open_timeout_ms, read_timeout_ms: FFmpeg open / read timeouts, milliseconds.
        backoff_initial_s, backoff_max_s: reconnect delay, doubling per failure, seconds.
        backoff_jitter: relative jitter of each delay (0.25 = +-25 %).
        status_interval_s: a ``status`` message is sent when nothing was sent for this long, seconds.
        eos_linger_ms: how long the socket may still flush queued frames after ``eos``, milliseconds.
            A file's last frames and its ``eos`` wait up to this long for a slow stage to take them
            (5 s lost the end of streams of 8 parallel clips on 2 busy cores); the daemon stops
            its readers itself when it ends.
        rtsp_transport: ``"tcp"`` or ``"udp"`` for RTSP.

    Raises:
        ValueError: on an invalid field.
    """

    camera: str
    url: str | int
    endpoint: str
    input_size: tuple[int, int] = (432, 368)
    kind: str = "auto"
    lossless: bool | None = None
    loop: bool = False
    max_fps: float | None = None
    sndhwm: int = 4
    open_timeout_ms: int = 5000
    read_timeout_ms: int = 2000
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0
    backoff_jitter: float = 0.25
    status_interval_s: float = 1.0
    eos_linger_ms: int = 120000
    rtsp_transport: str = "tcp"

    def __post_init__(self) -> None:
        if not isinstance(self.camera, str) or not _CAMERA_RE.match(self.camera):
            raise ValueError(f"camera must match [A-Za-z0-9_-]{{1,64}}, got {self.camera!r}")
        if self.kind not in ("auto", "file", "rtsp", "device"):
            raise ValueError(f"kind must be auto, file, rtsp or device, got {self.kind!r}")
        try:
            size = tuple(operator.index(a) for a in self.input_size)  # accepts numpy ints too
        except TypeError:
            size = ()
        if len(size) != 2 or not all(16 <= a <= 4096 for a in size):
            raise ValueError(f"input_size must be (W, H) ints in [16, 4096], got {self.input_size!r}")
        object.__setattr__(self, "input_size", size)
        if self.max_fps is not None and not self.max_fps > 0:
            raise ValueError(f"max_fps must be > 0 or None, got {self.max_fps!r}")
        if self.sndhwm < 1 or self.open_timeout_ms < 1 or self.read_timeout_ms < 1 or self.eos_linger_ms < 0:
            raise ValueError("sndhwm and the timeouts must be positive")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if not 0 <= self.backoff_jitter < 1 or not self.status_interval_s > 0:
            raise ValueError("need 0 <= backoff_jitter < 1 and status_interval_s > 0")
        if self.rtsp_transport not in ("tcp", "udp"):
            raise ValueError(f"rtsp_transport must be tcp or udp, got {self.rtsp_transport!r}")

    @property
    def source_kind(self) -> str:
        """The kind actually used: ``file``, ``rtsp`` or ``device``."""
        return infer_kind(self.url) if self.kind == "auto" else self.kind

    @property
    def is_lossless(self) -> bool:
        """Whether frames are sent blocking, without drops."""
        return self.source_kind == "file" if self.lossless is None else bool(self.lossless)


class _Decimator:
    """Passes at most ``max_fps`` frames per second of capture time, without drift or bursts."""

    def __init__(self, max_fps: float | None):
        self.period = None if max_fps is None else 1.0 / max_fps
        self.next_ts: float | None = None

    def keep(self, ts: float) -> bool:
        if self.period is None:
            return True
        if self.next_ts is not None and ts + 1e-3 < self.next_ts:
            return False
        if self.next_ts is None or ts - self.next_ts >= self.period:
            self.next_ts = ts + self.period  # first frame, or after a gap: restart the grid
        else:
            self.next_ts += self.period
        return True


class _Reader:
    """State of one running reader; :func:`run_reader` is the public entry."""

    def __init__(self, s: ReaderSettings, stop: "_LocalStop"):
        self.s = s
        self.stop = stop
        self.kind = s.source_kind
        self.lossless = s.is_lossless and self.kind == "file"
        self.safe_url = mask_url(s.url)
        self.lock = threading.Condition()
        # counters and state (guarded by self.lock where two threads touch them)
        self.seq = 0
        self.dropped = 0
        self.reconnects = 0
        self.sent = 0
        self.source_up = False
        self.orig_size: tuple[int, int] | None = None
        self.source_fps: float | None = None
        self.last_scale = 1.0
        self.last_pad = (0, 0)
        self.slot: tuple[int, float, np.ndarray] | None = None
        self.eos = False  # the capture thread reached the end of a file
        self.eos_sent = False
        self.ctx: zmq.Context | None = None
        self.sock: zmq.Socket | None = None

    # ------------------------------------------------------------------ source
    def _open(self) -> cv2.VideoCapture | None:
        """Open the source with bounded timeouts; None if it cannot be opened."""
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

    def _file_frames(self, paced: bool) -> Iterator[tuple[float, np.ndarray]]:
        """Yield ``(capture_ts, frame)`` from a file: start wall time + media time (+ loop offset).

        Raises:
            FileNotFoundError: the file cannot be opened (first pass only).
        """
        cap = self._open()
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
                cap = self._open()
                if cap is None:
                    log.error("camera %s: cannot reopen %s to loop", self.s.camera, self.safe_url)
                    return
                log.debug("camera %s: looping %s", self.s.camera, self.safe_url)
        finally:
            cap.release()

    # ------------------------------------------------------------------ transport
    def _connect(self) -> bool:
        self.ctx = zmq.Context(io_threads=1)
        sock = self.ctx.socket(zmq.PUSH)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, self.s.sndhwm)
        sock.setsockopt(zmq.IMMEDIATE, 1)  # no queueing towards a stage that is not connected
        if not self.lossless:
            # Live: bound the kernel send buffer to about one frame (Linux doubles it), otherwise TCP autotuning
            # (megabytes on loopback) queues seconds of stale frames behind a slow stage.
            w, h = self.s.input_size
            sock.setsockopt(zmq.SNDBUF, w * h * 3)
        try:
            sock.connect(self.s.endpoint)
        except zmq.ZMQError as exc:
            log.error("camera %s: cannot connect to %s: %s", self.s.camera, self.s.endpoint, exc)
            sock.close(linger=0)
            self.ctx.term()
            self.ctx = None
            return False
        self.sock = sock
        return True

    def _close(self, linger_ms: int = 0) -> None:
        if self.sock is not None:
            self.sock.close(linger=linger_ms)
            self.sock = None
        if self.ctx is not None:
            self.ctx.term()
            self.ctx = None

    def _send_blocking(self, parts: list) -> bool:
        """Send, waiting while the high-water mark is reached; False if ``stop`` was set first."""
        stalled_since = time.monotonic()
        warned = False
        while not self.stop.is_set():
            if self.sock.poll(100, zmq.POLLOUT) and self._send_nowait(parts):
                return True
            if not warned and time.monotonic() - stalled_since > 5.0:
                log.warning("camera %s: stage has not taken a frame for 5 s (lossless mode waits)", self.s.camera)
                warned = True
        return False

    def _send_nowait(self, parts: list) -> bool:
        try:
            self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
            return True
        except zmq.Again:
            return False

    def _frame_parts(self, seq: int, ts: float, frame: np.ndarray) -> list:
        image, scale, pad = letterbox(frame, self.s.input_size)  # (H, W, 3) uint8
        self.orig_size = (int(frame.shape[1]), int(frame.shape[0]))
        self.last_scale, self.last_pad = scale, pad
        with self.lock:
            dropped, reconnects = self.dropped, self.reconnects
        header = FrameHeader(kind="frame", camera=self.s.camera, seq=seq, capture_ts=ts, shape=image.shape,
                             orig_size=self.orig_size, scale=scale, pad=pad, source_fps=self.source_fps,
                             dropped=dropped, reconnects=reconnects, source_up=True)
        return encode_frame(header, image)

    def _status_parts(self, kind: str) -> list:
        with self.lock:
            header = FrameHeader(kind=kind, camera=self.s.camera, seq=self.seq, capture_ts=time.time(),
                                 orig_size=self.orig_size, scale=self.last_scale, pad=self.last_pad,
                                 source_fps=self.source_fps, dropped=self.dropped,
                                 reconnects=self.reconnects, source_up=self.source_up and kind != "eos")
        return encode_status(header)

    # ------------------------------------------------------------------ lossless file
    def run_lossless(self) -> int:
        decimator = _Decimator(self.s.max_fps)
        try:
            frames = self._file_frames(paced=False)
            self.source_up = True
            for ts, frame in frames:
                if not decimator.keep(ts):
                    continue
                seq, self.seq = self.seq, self.seq + 1
                if not self._send_blocking(self._frame_parts(seq, ts, frame)):
                    return EXIT_OK
                self.sent += 1
        except FileNotFoundError:
            log.error("camera %s: cannot open video file %s", self.s.camera, self.safe_url)
            return EXIT_NO_SOURCE
        self.source_up = False
        if self.stop.is_set():
            return EXIT_OK
        if self._send_blocking(self._status_parts("eos")):
            log.info("camera %s: end of %s after %d frames; eos sent", self.s.camera, self.safe_url, self.sent)
            self.eos_sent = True
        return EXIT_OK

    # ------------------------------------------------------------------ live
    def _publish(self, ts: float, frame: np.ndarray) -> None:
        """Put the newest frame into the one-slot buffer; an unsent older frame counts as dropped."""
        with self.lock:
            if self.slot is not None:
                self.dropped += 1
            self.slot = (self.seq, ts, frame)
            self.seq += 1
            self.lock.notify()

    def _set_up(self, up: bool) -> None:
        with self.lock:
            if self.source_up != up:
                self.source_up = up
                self.lock.notify()

    def _backoff(self, delay: float) -> bool:
        """Sleep ``delay`` +- jitter; True if ``stop`` was set meanwhile."""
        j = self.s.backoff_jitter
        return self.stop.wait(delay * random.uniform(1.0 - j, 1.0 + j))

    def _capture_live(self) -> None:
        """Capture thread for RTSP / devices: grab for ever, reopen with backoff on failure."""
        s = self.s
        delay = s.backoff_initial_s
        decimator = _Decimator(s.max_fps)
        timeout_s = 0.95 * s.read_timeout_ms / 1000.0
        attempt = 0
        while not self.stop.is_set():
            if attempt > 0:
                with self.lock:
                    self.reconnects += 1
            attempt += 1
            t0 = time.monotonic()
            cap = self._open()
            if cap is None:
                self._set_up(False)
                log.warning("camera %s: cannot open %s (attempt %d); retrying in %.1f s", s.camera, self.safe_url, attempt, delay)
                if self._backoff(delay):
                    break
                delay = min(delay * 2.0, s.backoff_max_s)
                continue
            self._set_up(True)
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
                        self._publish(ts, frame)
            finally:
                cap.release()
            self._set_up(False)
            if self.stop.is_set():
                break
            log.warning("camera %s: %s: %s after %d frames; reopening in %.1f s", s.camera, self.safe_url, failure,
                        frames, delay)
            if self._backoff(delay):
                break
            delay = min(delay * 2.0, s.backoff_max_s)

    def _capture_paced_file(self) -> None:
        """Capture thread for a file in live mode: real-time playback into the one-slot buffer."""
        decimator = _Decimator(self.s.max_fps)
        try:
            self._set_up(True)
            for ts, frame in self._file_frames(paced=True):
                if decimator.keep(ts):
                    self._publish(ts, frame)
        except FileNotFoundError:
            with self.lock:
                self.slot = None
        finally:
            with self.lock:
                self.source_up = False
                self.eos = True
                self.lock.notify()

    def run_live(self) -> int:
        if self.kind == "file":
            if self._open_check_file() is False:
                return EXIT_NO_SOURCE
            target = self._capture_paced_file
        else:
            target = self._capture_live
        thread = threading.Thread(target=target, name=f"capture-{self.s.camera}", daemon=True)
        thread.start()
        last_sent = time.monotonic()
        reported_up: bool | None = None
        try:
            while not self.stop.is_set():
                with self.lock:
                    if self.slot is None and not self.eos and self.source_up == reported_up:
                        self.lock.wait(timeout=min(0.25, self.s.status_interval_s))
                    item, self.slot = self.slot, None
                    up, eos = self.source_up, self.eos
                if item is not None:
                    seq, ts, frame = item
                    if self._send_nowait(self._frame_parts(seq, ts, frame)):
                        self.sent += 1
                        last_sent = time.monotonic()
                        reported_up = True
                    else:
                        with self.lock:
                            self.dropped += 1
                    continue
                if eos:
                    if self._send_blocking_for(self._status_parts("eos"), self.s.eos_linger_ms / 1000.0):
                        self.eos_sent = True
                        log.info("camera %s: end of %s after %d frames sent; eos sent", self.s.camera, self.safe_url, self.sent)
                    return EXIT_OK
                if up != reported_up or time.monotonic() - last_sent >= self.s.status_interval_s:
                    if self._send_nowait(self._status_parts("status")):
                        last_sent = time.monotonic()
                        reported_up = up
        finally:
            self.stop.set()  # the reader's own stop (_LocalStop): ends the capture thread
            thread.join(timeout=(self.s.open_timeout_ms + self.s.read_timeout_ms) / 1000.0 + 1.0)
            if thread.is_alive():
                log.warning("camera %s: capture thread still blocked in the source; leaving it (daemon)", self.s.camera)
        return EXIT_OK

    def _send_blocking_for(self, parts: list, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while not self.stop.is_set() and time.monotonic() < deadline:
            if self.sock.poll(50, zmq.POLLOUT) and self._send_nowait(parts):
                return True
        return False

    def _open_check_file(self) -> bool:
        cap = self._open()
        if cap is None:
            log.error("camera %s: cannot open video file %s", self.s.camera, self.safe_url)
            return False
        cap.release()
        return True


class _LocalStop:
    """A stop flag that also fires when the caller's ``stop`` fires (so the reader can end its own
    capture thread at ``eos`` without setting the caller's event)."""

    def __init__(self, outer: Any):
        self.outer = outer
        self.inner = threading.Event()

    def set(self) -> None:
        self.inner.set()

    def is_set(self) -> bool:
        return self.inner.is_set() or self.outer.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            left = 0.05 if deadline is None else min(0.05, deadline - time.monotonic())
            if left <= 0:
                return False
            if self.outer.wait(left):
                return True
        return True


def run_reader(settings: ReaderSettings, stop: Any) -> int:
    """Run one reader until its file ends or ``stop`` is set.

    Args:
        settings: the reader's settings.
        stop: a ``threading.Event`` or ``multiprocessing.Event``; setting it ends the reader within
            about ``read_timeout_ms`` (the capture thread may be blocked in the source that long).

    Returns:
        :data:`EXIT_OK` (stopped, or a file ended and ``eos`` was sent), :data:`EXIT_NO_SOURCE` (a file
        that cannot be opened), :data:`EXIT_TRANSPORT` (bad endpoint).
    """
    local = _LocalStop(stop)
    reader = _Reader(settings, local)
    mode = "lossless" if reader.lossless else "live"
    if settings.is_lossless and not reader.lossless:
        log.warning("camera %s: lossless mode on a live %s source would stall the camera; using live mode",
                    settings.camera, reader.kind)
    if reader.kind == "file" and not Path(str(settings.url)).is_file() and "://" not in str(settings.url):
        log.error("camera %s: video file %s does not exist", settings.camera, reader.safe_url)
        return EXIT_NO_SOURCE
    if not reader._connect():
        return EXIT_TRANSPORT
    log.info("camera %s: reading %s (%s, %s) -> %s, input %dx%d", settings.camera, reader.safe_url, reader.kind, mode,
             settings.endpoint, *settings.input_size)
    code = EXIT_OK
    try:
        code = reader.run_lossless() if mode == "lossless" else reader.run_live()
    finally:
        local.set()
        reader._close(settings.eos_linger_ms if reader.eos_sent else 0)
        log.info("camera %s: reader stopped (sent %d, dropped %d, reconnects %d, exit %d)", settings.camera,
                 reader.sent, reader.dropped, reader.reconnects, code)
    return code


def reader_main(settings: ReaderSettings, stop: Any = None) -> None:
    """Process entry (``multiprocessing`` spawn target): SIGTERM/SIGINT -> stop; exits with
    :func:`run_reader`'s code. Configures basic logging to stderr if the process has none."""
    threading.current_thread().name = f"reader-{settings.camera}"
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")
    if stop is None:
        stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        def handler(signum, _frame):
            log.info("camera %s: received %s, stopping", settings.camera, signal.Signals(signum).name)
            stop.set()
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)
    raise SystemExit(run_reader(settings, stop))
