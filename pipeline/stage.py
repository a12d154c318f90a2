"""The GPU stage: frames in, action events out.

One loop receives frames from every reader (ZeroMQ PULL), batches them across cameras
(``detector.max_batch`` / ``detector.max_wait_ms``), runs the pose engine and PAF grouping, maps
joints back to original-frame pixels, tracks persons per camera, fills per-track ring buffers,
every ``stride`` frames builds ``(3, T, V, M)`` windows, classifies them in batches with the fused
SARDE graph, and turns the scores into start / update / end events.

Bad input (malformed message, wrong frame size, unknown camera) is logged (rate-limited),
counted in ``sarde_messages_rejected_total{reason}`` and dropped; it never stops the loop.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import zmq

from engines.skeleton import normalize_keypoints
from pipeline.events import ActionEvent, EventLogic
from pipeline.letterbox import unletterbox
from pipeline.metrics import Health, StageMetrics
from pipeline.tracking import Tracker
from pipeline.wire import FrameHeader, WireError, decode
from pipeline.windows import TrackBuffers, Window, WindowScheduler

log = logging.getLogger(__name__)


class RateLimitedLog:
    """Log a warning at most once per ``period_s`` per key, with the count suppressed meanwhile."""

    def __init__(self, period_s: float = 5.0):
        self.period = period_s
        self._last: dict[str, tuple[float, int]] = {}

    def warning(self, key: str, msg: str, *args) -> None:
        now = time.monotonic()
        last, suppressed = self._last.get(key, (-1e9, 0))
        if now - last >= self.period:
            extra = f" ({suppressed} similar suppressed)" if suppressed else ""
            log.warning(msg + extra, *args)
            self._last[key] = (now, 0)
        else:
            self._last[key] = (last, suppressed + 1)


@dataclass
class CameraState:
    """Everything the stage keeps per camera."""

    name: str
    tracker: Tracker
    buffers: TrackBuffers
    scheduler: WindowScheduler
    frame_size: tuple[int, int] | None = None  # (W, H) original pixels
    last_seq: int = -1
    reader_dropped: int = 0
    reader_reconnects: int = 0
    ended: bool = False
    frames: int = 0


@dataclass
class StageSettings:
    """Plain settings of the stage (mapped from the validated config by the CLI)."""

    detector_max_batch: int = 4
    detector_max_wait_ms: float = 5.0
    num_frames: int = 150
    num_persons: int = 2
    stride: int = 30
    min_frames: int = 15
    pair_distance: float = 1.5
    max_age: int = 15
    max_distance: float = 0.5
    min_joints: int = 3
    cameras: list[str] | None = None  # None: accept any camera name
    end_when_all_eos: bool = False
    expected_cameras: list[str] = field(default_factory=list)


class Stage:
    """Receive, detect, track, window, recognise, emit.

    Args:
        socket: a bound ZeroMQ PULL socket that readers PUSH frames to.
        detector: object with ``infer((N, H, W, 3) uint8) -> list[(P, 18, 3)]`` and ``input_size``.
        recognizer: object with ``classify((N, 3, T, V, M)) -> (scores (N, K), depth)``,
            ``labels`` and ``model_id``.
        logic: the event logic.
        emit: called with every :class:`ActionEvent` (publisher, journal, stdout).
        metrics, health: the metrics registry and camera liveness.
    """

    def __init__(self, settings: StageSettings, socket: zmq.Socket, detector, recognizer, logic: EventLogic,
                 emit: Callable[[ActionEvent], None], metrics: StageMetrics, health: Health):
        self.s = settings
        self.socket = socket
        self.detector = detector
        self.recognizer = recognizer
        self.logic = logic
        self.emit = emit
        self.metrics = metrics
        self.health = health
        self.cameras: dict[str, CameraState] = {}
        self.rl = RateLimitedLog()
        self.input_size = tuple(detector.input_size)  # (W, H)
        self.poller = zmq.Poller()
        self.poller.register(socket, zmq.POLLIN)
        self._pending_eos: list[CameraState] = []
        self.windows_total = 0
        self.events_total = 0

    # ------------------------------------------------------------------ receive
    def _camera(self, name: str) -> CameraState | None:
        cam = self.cameras.get(name)
        if cam is None:
            if self.s.cameras is not None and name not in self.s.cameras:
                return None
            cam = CameraState(
                name=name,
                tracker=Tracker(max_age=self.s.max_age, max_distance=self.s.max_distance, min_joints=self.s.min_joints),
                buffers=TrackBuffers(num_frames=self.s.num_frames),
                scheduler=WindowScheduler(stride=self.s.stride, min_frames=self.s.min_frames,
                                          num_persons=self.s.num_persons, pair_distance=self.s.pair_distance),
            )
            self.cameras[name] = cam
        return cam

    def _reject(self, reason: str, detail: str, camera: str | None = None) -> None:
        self.metrics.messages_rejected.labels(reason).inc()
        if camera is not None:
            self.metrics.frames_dropped.labels(camera, "stage").inc()
        self.rl.warning(reason, "rejected message (%s): %s", reason, detail)

    def _accept(self, parts: list) -> tuple[FrameHeader, np.ndarray] | None:
        """Validate one message; handle status/eos; return a frame to detect or None."""
        try:
            header, image = decode(parts)
        except WireError as exc:
            self._reject(exc.reason, str(exc))
            return None
        cam = self._camera(header.camera)
        if cam is None:
            self._reject("camera", f"unknown camera {header.camera!r}")
            return None
        self._reader_counters(cam, header)
        if header.kind == "status":
            self.health.source(cam.name, bool(header.source_up))
            return None
        if header.kind == "eos":
            # Frames of this camera may still sit in the batch being collected: end it after them.
            self._pending_eos.append(cam)
            return None
        if image is None or tuple(image.shape[1::-1]) != self.input_size:
            shape = None if image is None else image.shape
            self._reject("frame_size", f"camera {cam.name}: frame {shape} is not the detector input {self.input_size[::-1]}", cam.name)
            return None
        if header.seq == 0 and cam.last_seq >= 0:
            # A reader restarted (process restart, file reopened): close the old tracks, start afresh.
            log.info("camera %s: reader restarted (sequence back to 0); ending its %d tracks", cam.name, len(cam.tracker.active_ids))
            self._end_camera(cam)
            del self.cameras[cam.name]
            cam = self._camera(header.camera)
        elif cam.ended:
            self._reject("after_eos", f"camera {cam.name}: frame {header.seq} after its end of stream", cam.name)
            return None
        if header.seq <= cam.last_seq:
            self._reject("seq", f"camera {cam.name}: sequence went back from {cam.last_seq} to {header.seq}", cam.name)
            return None
        cam.last_seq = header.seq
        cam.frame_size = (int(header.orig_size[0]), int(header.orig_size[1]))
        self.metrics.frames_received.labels(cam.name).inc()
        self.health.frame(cam.name)
        return header, image

    def _reader_counters(self, cam: CameraState, header: FrameHeader) -> None:
        dropped = int(header.dropped or 0)
        if dropped > cam.reader_dropped:
            self.metrics.frames_dropped.labels(cam.name, "reader").inc(dropped - cam.reader_dropped)
        cam.reader_dropped = max(cam.reader_dropped, dropped)
        reconnects = int(header.reconnects or 0)
        if reconnects > cam.reader_reconnects:
            self.metrics.reader_reconnects.labels(cam.name).inc(reconnects - cam.reader_reconnects)
        cam.reader_reconnects = max(cam.reader_reconnects, reconnects)

    def _collect(self, timeout_ms: float) -> list[tuple[FrameHeader, np.ndarray, float]]:
        """Up to ``max_batch`` frames: wait ``timeout_ms`` for the first, then ``max_wait_ms`` to fill."""
        batch: list[tuple[FrameHeader, np.ndarray, float]] = []
        deadline = None
        wait = timeout_ms
        while len(batch) < self.s.detector_max_batch:
            if not self.poller.poll(wait):
                break
            parts = self.socket.recv_multipart(copy=False)
            received = time.time()
            got = self._accept([p.buffer for p in parts])
            if got is not None:
                batch.append((*got, received))
                if deadline is None:
                    deadline = time.monotonic() + self.s.detector_max_wait_ms / 1000
            if deadline is not None:
                wait = max(0.0, (deadline - time.monotonic()) * 1000)
                if wait == 0:
                    break
        self.metrics.queue_depth.labels("detector_batch").set(len(batch))
        return batch

    # ------------------------------------------------------------------ process
    def _detect(self, batch: list[tuple[FrameHeader, np.ndarray, float]]) -> list[Window]:
        images = np.stack([img for _, img, _ in batch])  # (N, H, W, 3) uint8
        t0 = time.perf_counter()
        persons = self.detector.infer(images)
        self.metrics.detector_latency.observe(time.perf_counter() - t0)
        self.metrics.detector_batch.observe(len(batch))
        windows: list[Window] = []
        for (header, _, received), people in zip(batch, persons):
            cam = self.cameras[header.camera]
            people = unletterbox(people, header.scale, tuple(header.pad))  # (P, 18, 3) original pixels
            new = self._track(cam, header, people)
            for w in new:
                w.received_ts = received  # type: ignore[attr-defined]  # for the event-latency histogram
            windows.extend(new)
            self.metrics.frames_processed.labels(cam.name).inc()
            self.metrics.frame_latency.observe(max(0.0, time.time() - header.capture_ts))
        return windows

    def _track(self, cam: CameraState, header: FrameHeader, people: np.ndarray) -> list[Window]:
        frame_no = header.seq
        cam.frames += 1
        self.metrics.persons_detected.labels(cam.name).inc(len(people))
        update = self.tracker_update(cam, frame_no, people)
        norm = normalize_keypoints(people, cam.frame_size) if len(people) else people  # (P, 18, 3)
        for track_id, idx in update.assignments:
            cam.buffers.append(track_id, frame_no, header.capture_ts, norm[idx])
        windows = []
        if update.ended:
            windows.extend(cam.scheduler.flush(cam.buffers, update.ended, frame_no, cam.name))
            self._end_tracks(cam, update.ended)
        windows.extend(cam.scheduler.due(cam.buffers, cam.tracker.active_ids, frame_no, cam.name))
        self.metrics.active_tracks.labels(cam.name).set(len(cam.tracker.active_ids))
        return windows

    def tracker_update(self, cam: CameraState, frame_no: int, people: np.ndarray):
        return cam.tracker.update(frame_no, people)

    def _end_tracks(self, cam: CameraState, track_ids: Iterable[int]) -> None:
        ended = set(track_ids)
        for key in self.logic.groups(cam.name):
            if ended & set(key):
                self._emit_all(self.logic.end_group(cam.name, key))
        for t in ended:
            cam.buffers.drop(t)

    def _end_camera(self, cam: CameraState) -> None:
        if cam.ended:
            return
        last = max(cam.last_seq, 0)
        remaining = cam.tracker.finish()
        windows = cam.scheduler.flush(cam.buffers, remaining, last, cam.name)
        self._recognise(windows)
        self._end_tracks(cam, remaining)
        cam.ended = True
        self.health.ended(cam.name)
        self.metrics.active_tracks.labels(cam.name).set(0)

    def _recognise(self, windows: list[Window]) -> None:
        if not windows:
            return
        self.metrics.queue_depth.labels("windows").set(len(windows))
        data = np.stack([w.data for w in windows])  # (N, 3, T, V, M)
        t0 = time.perf_counter()
        scores, _depth = self.recognizer.classify(data)
        self.metrics.recognizer_latency.observe(time.perf_counter() - t0)
        self.metrics.recognizer_batch.observe(len(windows))
        for w, s in zip(windows, scores):
            self.metrics.windows_classified.labels(w.camera).inc()
            self.windows_total += 1
            events = self.logic.update(w, s)
            self._emit_all(events)
            received = getattr(w, "received_ts", None)
            if events and received is not None:
                self.metrics.event_latency.observe(max(0.0, time.time() - received))
        self.metrics.queue_depth.labels("windows").set(0)

    def _emit_all(self, events: list[ActionEvent]) -> None:
        for e in events:
            self.metrics.events.labels(e.camera, e.label, e.phase).inc()
            self.events_total += 1
            self.emit(e)

    # ------------------------------------------------------------------ loop
    def all_ended(self) -> bool:
        expected = self.s.expected_cameras
        return bool(expected) and all(c in self.cameras and self.cameras[c].ended for c in expected)

    def step(self, timeout_ms: float = 100.0) -> int:
        """Process at most one detector batch; returns the number of frames processed."""
        batch = self._collect(timeout_ms)
        if batch:
            self._recognise(self._detect(batch))
        while self._pending_eos:
            cam = self._pending_eos.pop(0)
            log.info("camera %s: end of stream after %d frames", cam.name, cam.frames)
            self._end_camera(cam)
        return len(batch)

    def end_camera_by_name(self, name: str) -> None:
        """End a camera whose reader died without an end-of-stream message."""
        cam = self._camera(name)
        if cam is not None:
            self._end_camera(cam)

    def run(self, stop, idle: Callable[[], None] | None = None) -> None:
        """Loop until ``stop`` is set or, with ``end_when_all_eos``, every expected camera ended.

        ``idle`` is called after every step (the daemon checks its reader processes there).
        """
        log.info("stage running: detector batch <= %d, T=%d, M=%d, stride %d",
                 self.s.detector_max_batch, self.s.num_frames, self.s.num_persons, self.s.stride)
        while not stop.is_set():
            self.step()
            if idle is not None:
                idle()
            if self.s.end_when_all_eos and self.all_ended():
                log.info("all file sources ended")
                break
        self.shutdown()

    def shutdown(self) -> None:
        """End every camera's tracks (flushing partial windows) and every open event."""
        for cam in self.cameras.values():
            if not cam.ended:
                self._end_camera(cam)
        self._emit_all(self.logic.flush())
