"""Reader transport and process entry: send one source's frames to the stage over ZeroMQ.

One reader per source, normally its own process (:func:`reader_main`, for ``multiprocessing`` with
the ``spawn`` start method). A reader PUSH-connects to the stage's endpoint and sends the messages
of :mod:`pipeline.wire`: letterboxed ``(H, W, 3)`` uint8 BGR frames at the detector input size,
``status`` messages while it has nothing to send, and ``eos`` at the end of a file. What a source is
(:mod:`pipeline.sources`), the settings (:mod:`pipeline.reader_settings`) and how frames are got out
of it (:mod:`pipeline.capture`) live beside this module.

Two modes:

* **lossless** (default for files): every frame is sent, the reader waits (blocking send, polled so
  that ``stop`` is honoured) while the stage is busy. Frames are read as fast as the stage takes them.
* **live** (RTSP and other network streams, devices, and files with ``lossless=False``, which are
  then paced to their own frame rate like a camera): newest frame wins. A capture thread grabs
  continuously into a one-slot buffer; a frame overwritten before it was sent counts as dropped. The
  sender sends with ``zmq.NOBLOCK`` and counts ``zmq.Again`` (high-water mark reached) as dropped.
  The camera is never stalled.

Every message carries the reader's ``session`` (:mod:`pipeline.wire`): ``settings.session`` when
``sarde run`` handed one down, else this process's own random token. The stage binds the camera
to it.

``seq`` is assigned to every frame that passes ``max_fps`` decimation, so the gaps a receiver sees in
``seq`` are exactly the frames counted in ``dropped``.

Failures: a file that cannot be opened logs one line and :func:`run_reader` returns
:data:`EXIT_NO_SOURCE` (2). A live source that cannot be opened, fails or times out a read is
released and reopened with exponential backoff plus jitter (``reconnects`` counts reopen attempts);
meanwhile ``status`` messages with ``source_up`` false tell the stage the camera is down.
Credentials in URLs are masked (:func:`pipeline.sources.mask_url`) in every log line.
"""
from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from engines.contrast import letterbox_equalized
from pipeline.capture import Capture, Decimator, FrameSlot
from pipeline.curve import make_client
from pipeline.reader_settings import ReaderSettings
from pipeline.wire import FrameHeader, encode_frame, encode_status, process_session

log = logging.getLogger(__name__)

__all__ = ["ReaderSettings", "run_reader", "reader_main", "EXIT_OK", "EXIT_NO_SOURCE", "EXIT_TRANSPORT"]

EXIT_OK = 0
#: A file source that cannot be opened.
EXIT_NO_SOURCE = 2
#: The ZeroMQ endpoint is invalid.
EXIT_TRANSPORT = 3


class _Reader:
    """State of one running reader; :func:`run_reader` is the public entry.

    The capture side (:class:`pipeline.capture.Capture`) and this sender share ``state``
    (:class:`pipeline.capture.FrameSlot`): the one-slot buffer and the counters sent in every header.
    """

    def __init__(self, s: ReaderSettings, stop: "_LocalStop"):
        self.s = s
        self.stop = stop
        self.kind = s.source_kind
        self.lossless = s.is_lossless and self.kind == "file"
        self.capture = Capture(s, self.kind, stop)
        self.safe_url = self.capture.safe_url
        self.state = FrameSlot()
        self.sent = 0
        self.orig_size: tuple[int, int] | None = None
        self.last_scale = 1.0
        self.last_pad = (0, 0)
        self.eos_sent = False
        self.session = s.session or process_session()
        self.ctx: zmq.Context | None = None
        self.sock: zmq.Socket | None = None

    @property
    def dropped(self) -> int:
        return self.state.dropped

    @property
    def reconnects(self) -> int:
        return self.state.reconnects

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
        if self.s.curve is not None:
            make_client(sock, self.s.curve[0], self.s.curve[1])
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
        image, scale, pad = letterbox_equalized(frame, self.s.input_size, self.s.clahe_clip)  # (H, W, 3) uint8
        self.orig_size = (int(frame.shape[1]), int(frame.shape[0]))
        self.last_scale, self.last_pad = scale, pad
        state = self.state
        with state.lock:
            dropped, reconnects = state.dropped, state.reconnects
        header = FrameHeader(kind="frame", camera=self.s.camera, seq=seq, capture_ts=ts, shape=image.shape,
                             orig_size=self.orig_size, scale=scale, pad=pad, source_fps=self.capture.source_fps,
                             dropped=dropped, reconnects=reconnects, source_up=True, session=self.session)
        return encode_frame(header, image)

    def _status_parts(self, kind: str) -> list:
        state = self.state
        with state.lock:
            header = FrameHeader(kind=kind, camera=self.s.camera, seq=state.seq, capture_ts=time.time(),
                                 orig_size=self.orig_size, scale=self.last_scale, pad=self.last_pad,
                                 source_fps=self.capture.source_fps, dropped=state.dropped,
                                 reconnects=state.reconnects, source_up=state.source_up and kind != "eos",
                                 session=self.session)
        return encode_status(header)

    # ------------------------------------------------------------------ lossless file
    def run_lossless(self) -> int:
        decimator = Decimator(self.s.max_fps)
        state = self.state
        try:
            frames = self.capture.file_frames(paced=False)
            state.source_up = True
            for ts, frame in frames:
                if not decimator.keep(ts):
                    continue
                seq, state.seq = state.seq, state.seq + 1
                if not self._send_blocking(self._frame_parts(seq, ts, frame)):
                    return EXIT_OK
                self.sent += 1
        except FileNotFoundError:
            log.error("camera %s: cannot open video file %s", self.s.camera, self.safe_url)
            return EXIT_NO_SOURCE
        state.source_up = False
        if self.stop.is_set():
            return EXIT_OK
        if self._send_blocking(self._status_parts("eos")):
            log.info("camera %s: end of %s after %d frames; eos sent", self.s.camera, self.safe_url, self.sent)
            self.eos_sent = True
        return EXIT_OK

    # ------------------------------------------------------------------ live
    def run_live(self) -> int:
        if self.kind == "file":
            if self._open_check_file() is False:
                return EXIT_NO_SOURCE
            target = self.capture.run_paced_file
        else:
            target = self.capture.run_live
        thread = threading.Thread(target=target, args=(self.state,), name=f"capture-{self.s.camera}", daemon=True)
        thread.start()
        last_sent = time.monotonic()
        reported_up: bool | None = None
        state = self.state
        try:
            while not self.stop.is_set():
                with state.lock:
                    if state.slot is None and not state.eos and state.source_up == reported_up:
                        state.lock.wait(timeout=min(0.25, self.s.status_interval_s))
                    item, state.slot = state.slot, None
                    up, eos = state.source_up, state.eos
                if item is not None:
                    seq, ts, frame = item
                    if self._send_nowait(self._frame_parts(seq, ts, frame)):
                        self.sent += 1
                        last_sent = time.monotonic()
                        reported_up = True
                    else:
                        with state.lock:
                            state.dropped += 1
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
        if not self.capture.can_open():
            log.error("camera %s: cannot open video file %s", self.s.camera, self.safe_url)
            return False
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
    threading.Thread(target=_exit_with_parent, args=(os.getppid(), stop, settings.camera), name="parent-watch",
                     daemon=True).start()
    raise SystemExit(run_reader(settings, stop))


#: seconds a reader whose parent died may take to stop cleanly before it exits hard.
ORPHAN_GRACE_S = 3.0


def _exit_with_parent(parent: int, stop: Any, camera: str, period_s: float = 0.5) -> None:
    """Stop this reader when the process that started it is gone (``kill -9`` of the stage): an
    orphan would otherwise keep decoding and push its frames into the next stage on the same
    endpoint. Sets ``stop``, then exits with :data:`EXIT_TRANSPORT` after :data:`ORPHAN_GRACE_S`
    if the reader has not returned by then (a blocked send or lingering close)."""
    while os.getppid() == parent:
        if stop.is_set():
            return
        time.sleep(period_s)
    log.error("camera %s: parent process %d is gone; stopping this reader", camera, parent)
    stop.set()
    time.sleep(ORPHAN_GRACE_S)
    os._exit(EXIT_TRANSPORT)
