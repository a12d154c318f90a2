"""The GPU stage: frames in, action events out.

One loop receives frames from every reader (ZeroMQ PULL), batches them across cameras
(``detector.max_batch`` / ``detector.max_wait_ms``), runs the pose engine and PAF grouping, maps
joints back to original-frame pixels, tracks persons per camera, fills per-track ring buffers,
every ``stride`` frames builds ``(3, T, V, M)`` windows, classifies them in batches with the fused
SARDE graph, and turns the scores into start / update / end events.

Bad input (malformed message, wrong frame size, unknown camera) is logged (rate-limited),
counted in ``sarde_messages_rejected_total{reason}`` and dropped; it never stops the loop.

Sessions: a camera belongs to one reader session (the header's ``session``, :mod:`pipeline.wire`):
the one ``sarde run`` gave that camera's reader (``StageSettings.sessions``), else the first that
sends for it. A message for the camera from any other session (a spoofed sequence jump, reset to 0
or end of stream) is rejected as ``peer``, with or without CURVE. A camera not pinned by
``sessions`` passes to a new session when its owner has been silent for more than
``session_takeover_s`` or has sent its end of stream (a reader restarted by hand, with a new
token); the takeover is logged and the camera starts afresh, as a restarted stream does. A pinned
camera never changes session (its restarted reader comes back with the same token).

Messages are received part by part and at most :data:`pipeline.wire.MAX_PARTS` are kept; see
:mod:`pipeline.wire` for what libzmq itself holds of a longer message before the stage sees it.
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import zmq

from engines.skeleton import normalize_keypoints
from pipeline.events import ActionEvent, EventLogic
from engines.letterbox import unletterbox
from pipeline.metrics import Health, StageMetrics
from pipeline.snapshots import LastFrame, draw_overlay
from pipeline.tracking import Tracker
from pipeline.wire import MAX_PARTS, FrameHeader, WireError, decode
from pipeline.windows import TrackBuffers, Window, WindowScheduler

log = logging.getLogger(__name__)
#: per-window top-k scores (``events.debug_topk``): a logger of its own, so it can be routed or silenced.
scores_log = logging.getLogger("pipeline.scores")


class RateLimitedLog:
    """Log a warning at most once per ``period_s`` per key, with the count suppressed meanwhile.

    Thread-safe: the stage's engine and post threads share one instance.
    """

    def __init__(self, period_s: float = 5.0):
        self.period = period_s
        self._last: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args) -> None:
        now = time.monotonic()
        with self._lock:
            last, suppressed = self._last.get(key, (-1e9, 0))
            emit = now - last >= self.period
            self._last[key] = (now, 0) if emit else (last, suppressed + 1)
        if emit:
            extra = f" ({suppressed} similar suppressed)" if suppressed else ""
            log.warning(msg + extra, *args)


@dataclass
class CameraState:
    """Everything the stage keeps per camera."""

    name: str
    tracker: Tracker
    buffers: TrackBuffers
    scheduler: WindowScheduler
    last_seq: int = -1
    peer: str | None = None  # CURVE public key of the reader that owns the camera
    session: str | None = None  # wire session of the reader that owns the camera (None: not yet bound)
    session_seen: float = 0.0  # time.monotonic() of the owner's latest message, seconds
    last_assignments: list = field(default_factory=list)  # (track id, person index) of the latest frame
    track_frames: dict = field(default_factory=dict)  # track id -> LastFrame it was last seen in (snapshots)
    reader_dropped: int = 0
    reader_reconnects: int = 0
    ended: bool = False
    frames: int = 0


@dataclass
class Item:
    """One accepted frame on its way through the stage."""

    header: FrameHeader
    image: np.ndarray  # (H, W, 3) uint8 at the detector input size
    cam: CameraState
    received: float  # unix seconds


def _peer(frame) -> str | None:
    """The CURVE client key libzmq attached to a received frame (``User-Id`` set by the ZAP
    authenticator), or None when the connection has no CURVE identity."""
    try:
        return frame.get("User-Id")
    except (zmq.ZMQError, AttributeError, KeyError):
        return None


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
    fps: float | None = None  # the model's window frame rate
    max_age: int = 15
    max_distance: float = 0.5
    min_joints: int = 3
    cameras: list[str] | None = None  # None: accept any camera name ...
    max_cameras: int = 64  # ... up to this many
    peer_identity: bool = False  # CURVE on the frames socket: a camera belongs to its reader's key
    sessions: dict[str, str] = field(default_factory=dict)  # camera -> the only session it accepts (sarde run)
    session_takeover_s: float = 10.0  # an unpinned camera's owner silent this long (s) may be replaced
    end_when_all_eos: bool = False
    debug_topk: int = 0  # log the top-k raw scores of every window (0: off) ...
    debug_interval_s: float = 1.0  # ... at most once per camera and track group per this many seconds
    expected_cameras: list[str] = field(default_factory=list)


class Stage:
    """Receive, detect, track, window, recognise, emit.

    Args:
        socket: a bound ZeroMQ PULL socket that readers PUSH frames to.
        detector: object with ``infer((N, H, W, 3) uint8) -> list[(P, 18, 3)]`` and ``input_size``.
        recognizer: object with ``classify((N, 3, T, V, M)) -> (scores (N, K), depth)``,
            ``labels`` and ``model_id``; ``None`` for a record-only stage (detect, track, build and
            record windows, classify nothing).
        logic: the event logic (``None`` with no recogniser).
        emit: called with every :class:`ActionEvent` (publisher, journal, stdout).
        metrics, health: the metrics registry and camera liveness.
        recorder: optional ``PoseRecorder`` writing every frame's persons as JSON lines.
        snapshots: optional :class:`pipeline.snapshots.SnapshotWriter` (a JPEG per start event).
        frame_sinks: consumers of every processed frame (:class:`pipeline.overlay.OverlayWriter`,
            :class:`pipeline.live.LiveFrames`): ``frame(camera, LastFrame, {track id: label})`` and
            ``end_camera(camera)``, called on the post-processing thread.
        clips: optional :class:`pipeline.event_clips.ClipRecorder` (a clip per start event; also fed
            every frame).
    """

    def __init__(self, settings: StageSettings, socket: zmq.Socket, detector, recognizer, logic: EventLogic,
                 emit: Callable[[ActionEvent], None], metrics: StageMetrics, health: Health, recorder=None,
                 snapshots=None, frame_sinks=(), clips=None):
        self.s = settings
        self.socket = socket
        self.detector = detector
        self.recognizer = recognizer
        self.logic = logic
        self.emit = emit
        self.metrics = metrics
        self.health = health
        self.recorder = recorder  # optional pipeline.recorder.PoseRecorder
        self.snapshots = snapshots  # optional pipeline.snapshots.SnapshotWriter
        # Consumers of every processed frame with the labels of the open actions (``frame(camera,
        # LastFrame, {track: label})`` and ``end_camera(camera)``): the overlay videos
        # (pipeline.overlay), the event clips' ring buffers (pipeline.event_clips), the web page's
        # live view (pipeline.live).
        self.clips = clips  # optional pipeline.event_clips.ClipRecorder (also one of the frame sinks)
        self.frame_sinks = list(frame_sinks) + ([clips] if clips is not None else [])
        self.cameras: dict[str, CameraState] = {}
        self.rl = RateLimitedLog()
        self.input_size = tuple(detector.input_size)  # (W, H)
        self.poller = zmq.Poller()
        self.poller.register(socket, zmq.POLLIN)
        # Cameras to end after the batch in flight (eos, restart, dead reader), in arrival order.
        # Appended by the engine thread (eos, restart) and by the main thread (dead reader, via
        # end_camera_by_name), taken by the engine thread: only under _control_lock.
        self._control: list[CameraState] = []
        self._control_lock = threading.Lock()
        self.windows_total = 0
        self._scores_logged: dict[tuple, float] = {}  # (camera, track ids) -> when its scores were last logged
        self.events_total = 0

    # ------------------------------------------------------------------ receive
    def _camera(self, name: str) -> CameraState | None:
        """The state of camera ``name``, created on its first message; None if it is not configured."""
        cam = self.cameras.get(name)
        if cam is None:
            if self.s.cameras is not None and name not in self.s.cameras:
                return None
            if self.s.cameras is None and len(self.cameras) >= self.s.max_cameras:
                return None
            with self._control_lock:
                cam = self.cameras.get(name) or self._new_camera(name)
        return cam

    def _new_camera(self, name: str) -> CameraState:
        """Create and register the state of camera ``name`` (caller holds ``_control_lock``)."""
        cam = CameraState(
            name=name,
            tracker=Tracker(max_age=self.s.max_age, max_distance=self.s.max_distance, min_joints=self.s.min_joints),
            buffers=TrackBuffers(num_frames=self.s.num_frames),
            scheduler=WindowScheduler(stride=self.s.stride, min_frames=self.s.min_frames,
                                      num_persons=self.s.num_persons, pair_distance=self.s.pair_distance),
            session=self.s.sessions.get(name),
        )
        self.cameras[name] = cam
        return cam

    def _reject(self, reason: str, detail: str, camera: str | None = None) -> None:
        self.metrics.messages_rejected.labels(reason).inc()
        if camera is not None:
            self.metrics.frames_dropped.labels(camera, "stage").inc()
        self.rl.warning(reason, "rejected message (%s): %s", reason, detail)

    def _accept(self, parts: list, peer: str | None = None) -> tuple[FrameHeader, np.ndarray, CameraState] | None:
        """Validate one message; handle status/eos; return a frame to detect or None.

        ``peer``: the sender's CURVE public key (ZAP ``User-Id``), None without CURVE. A camera belongs
        to the first peer that sends for it, and to one reader session (module docstring); any
        message for it from another peer or session (a spoofed sequence jump, reset or end of
        stream) is rejected as ``peer``."""
        try:
            header, image = decode(parts)
        except WireError as exc:
            self._reject(exc.reason, str(exc))
            return None
        cam = self._camera(header.camera)
        if cam is None:
            self._reject("camera", f"unknown camera {header.camera!r} (not in sources, or more than max_cameras)")
            return None
        if peer is not None:
            if cam.peer is None:
                cam.peer = peer
            elif cam.peer != peer:
                self._reject("peer", f"camera {cam.name}: message from another CURVE client than the camera's reader", cam.name)
                return None
        now = time.monotonic()
        if cam.session is None:
            cam.session = header.session
        elif header.session != cam.session:
            cam = self._take_over(cam, header.session, peer, now)
            if cam is None:
                return None
        cam.session_seen = now
        self._reader_counters(cam, header)
        if header.kind == "status":
            self.health.source(cam.name, bool(header.source_up))
            return None
        if header.kind == "eos":
            # Frames of this camera may still sit in the batch being collected: end it after them.
            self._end_after_batch(cam)
            return None
        if header.orig_size is None:  # allowed on status messages only: a frame needs it to be normalised
            self._reject("field", f"camera {cam.name}: frame {header.seq} without orig_size", cam.name)
            return None
        if image is None or tuple(image.shape[1::-1]) != self.input_size:
            shape = None if image is None else image.shape
            self._reject("frame_size", f"camera {cam.name}: frame {shape} is not the detector input {self.input_size[::-1]}", cam.name)
            return None
        if header.seq == 0 and cam.last_seq >= 0:
            # A reader restarted (process restart, file reopened): close the old tracks, start afresh.
            log.info("camera %s: reader restarted (sequence back to 0)", cam.name)
            with self._control_lock:
                self._control.append(cam)
                cam = self._new_camera(header.camera)  # replaces the old state
                cam.peer, cam.session, cam.session_seen = peer, header.session, time.monotonic()
        elif cam.ended:
            self._reject("after_eos", f"camera {cam.name}: frame {header.seq} after its end of stream", cam.name)
            return None
        if header.seq <= cam.last_seq:
            self._reject("seq", f"camera {cam.name}: sequence went back from {cam.last_seq} to {header.seq}", cam.name)
            return None
        if cam.last_seq < 0 and header.source_fps and self.s.fps and header.source_fps < 0.8 * self.s.fps:
            log.warning("camera %s delivers %.1f frames/s, below the model's %.1f: actions look %.1fx faster to the recogniser",
                        cam.name, header.source_fps, self.s.fps, self.s.fps / header.source_fps)
        cam.last_seq = header.seq
        self.metrics.frames_received.labels(cam.name).inc()
        self.health.frame(cam.name)
        return header, image, cam

    def _take_over(self, cam: CameraState, session: str, peer: str | None, now: float) -> CameraState | None:
        """A message for ``cam`` from ``session``, not the camera's owner: reject it as ``peer`` and
        return None, or, when the camera is not pinned by ``sessions`` and its owner has ended its
        stream or been silent for more than ``session_takeover_s``, end the old state after the
        batch in flight and return a fresh one owned by ``session``."""
        silent = now - cam.session_seen
        if cam.name in self.s.sessions or not (cam.ended or silent > self.s.session_takeover_s):
            self._reject("peer", f"camera {cam.name}: message from another reader session than the camera's", cam.name)
            return None
        log.warning("camera %s: a new reader session takes over (the previous one %s); starting the camera afresh",
                    cam.name, "ended its stream" if cam.ended else f"was silent for {silent:.1f} s")
        with self._control_lock:
            if not cam.ended:
                self._control.append(cam)
            new = self._new_camera(cam.name)  # replaces the old state
        new.peer, new.session = peer, session
        return new

    def _reader_counters(self, cam: CameraState, header: FrameHeader) -> None:
        dropped = int(header.dropped or 0)
        if dropped > cam.reader_dropped:
            self.metrics.frames_dropped.labels(cam.name, "reader").inc(dropped - cam.reader_dropped)
        cam.reader_dropped = max(cam.reader_dropped, dropped)
        reconnects = int(header.reconnects or 0)
        if reconnects > cam.reader_reconnects:
            self.metrics.reader_reconnects.labels(cam.name).inc(reconnects - cam.reader_reconnects)
        cam.reader_reconnects = max(cam.reader_reconnects, reconnects)

    def _collect(self, timeout_ms: float) -> list[Item]:
        """Up to ``max_batch`` frames: wait ``timeout_ms`` for the first, then ``max_wait_ms`` to fill."""
        batch: list[Item] = []
        deadline = None
        wait = timeout_ms
        while len(batch) < self.s.detector_max_batch:
            if not self.poller.poll(wait):
                break
            parts = self._receive()
            received = time.time()
            got = None
            if parts is not None:
                got = self._accept([p.buffer for p in parts], _peer(parts[0]) if self.s.peer_identity else None)
            if got is not None:
                header, image, cam = got
                batch.append(Item(header, image, cam, received))
                if deadline is None:
                    deadline = time.monotonic() + self.s.detector_max_wait_ms / 1000
            if deadline is not None:
                wait = max(0.0, (deadline - time.monotonic()) * 1000)
                if wait == 0:
                    break
        return batch

    def _receive(self) -> list | None:
        """One message from the socket (call when it is readable), part by part: its ``zmq.Frame``
        parts, or None when it had more than :data:`~pipeline.wire.MAX_PARTS` (rejected as ``parts``;
        the extra parts are received and dropped one at a time, no reference kept)."""
        parts = [self.socket.recv(copy=False)]
        n = 1
        while self.socket.get(zmq.RCVMORE):
            n += 1
            if n <= MAX_PARTS:
                parts.append(self.socket.recv(copy=False))
            else:
                parts.clear()
                self.socket.recv(copy=False)  # dropped at once
        if n > MAX_PARTS:
            self._reject("parts", f"a message of {n} parts, at most {MAX_PARTS} are allowed")
            return None
        return parts

    def _end_after_batch(self, cam: CameraState) -> None:
        """Queue ``cam`` to be ended after the batch now being collected (any thread)."""
        with self._control_lock:
            self._control.append(cam)

    def _take_control(self) -> list[CameraState]:
        """The cameras queued by :meth:`_end_after_batch` since the last call, in order (any thread)."""
        with self._control_lock:
            control, self._control = self._control, []
        return control

    def _engine(self, batch: list[Item]) -> np.ndarray:
        """Pose engine on one batch: ``(N, h, w, 57)`` heatmaps + PAFs (runs on the engine thread)."""
        images = np.stack([item.image for item in batch])  # (N, H, W, 3) uint8
        t0 = time.perf_counter()
        raw = self.detector.raw(images)
        self.metrics.detector_latency.observe(time.perf_counter() - t0)
        self.metrics.detector_batch.observe(len(batch))
        return raw

    def _post(self, batch: list[Item], raw: np.ndarray, control: list[CameraState]) -> None:
        """PAF grouping, tracking, windows, recognition and events for one engine batch, then the
        cameras that ended while it was collected."""
        windows: list[Window] = []
        for item, output in zip(batch, raw):
            t0 = time.perf_counter()
            try:
                found = self.detector.decoder.decode(output)  # (P, 18, 3) detector-input pixels
                self.metrics.grouping_latency.observe(time.perf_counter() - t0)
                people = unletterbox(found, item.header.scale, tuple(item.header.pad))  # original pixels
                t1 = time.perf_counter()
                new = self._track(item.cam, item.header, people)
                self.metrics.tracking_latency.observe(time.perf_counter() - t1)
                if self.snapshots is not None or self.frame_sinks:  # no copy of the image
                    seen = LastFrame(item.image, found, {i: t for t, i in item.cam.last_assignments}, item.header.seq)
                    if self.snapshots is not None:  # what a start event's snapshot shows
                        for t in seen.track_of.values():
                            item.cam.track_frames[t] = seen
                    if self.frame_sinks:
                        labels = self._open_labels(item.cam.name)
                        for sink in self.frame_sinks:
                            sink.frame(item.cam.name, seen, labels)
            except (ValueError, FloatingPointError) as exc:
                # Input the header let through but the geometry cannot use (e.g. absurd scale/pad):
                # drop this frame, keep the camera and the daemon running.
                self._reject("frame_content", f"camera {item.cam.name} frame {item.header.seq}: {exc}", item.cam.name)
                continue
            for w in new:
                w.received_ts = item.received  # for the event-latency histogram
            windows.extend(new)
            self.metrics.frames_processed.labels(item.cam.name).inc()
            self.metrics.frame_latency.observe(max(0.0, time.time() - item.header.capture_ts))
        self._recognise(windows)
        for cam in control:
            log.info("camera %s: end of stream after %d frames", cam.name, cam.frames)
            self._end_camera(cam)

    def _track(self, cam: CameraState, header: FrameHeader, people: np.ndarray) -> list[Window]:
        frame_no = header.seq
        cam.frames += 1
        self.metrics.persons_detected.labels(cam.name).inc(len(people))
        update = self.tracker_update(cam, frame_no, people)
        cam.last_assignments = update.assignments
        frame_size = (int(header.orig_size[0]), int(header.orig_size[1]))  # (W, H) original pixels of this frame
        norm = normalize_keypoints(people, frame_size) if len(people) else people  # (P, 18, 3)
        for track_id, idx in update.assignments:
            cam.buffers.append(track_id, frame_no, header.capture_ts, norm[idx])
        if self.recorder is not None:
            self.recorder.write(cam.name, frame_no, header.capture_ts, frame_size, people, update.assignments)
        windows = []
        if update.ended:
            # Classify the ended tracks' last windows before their events are closed.
            self._recognise(cam.scheduler.flush(cam.buffers, update.ended, frame_no, cam.name))
            self._end_tracks(cam, update.ended)
        windows.extend(cam.scheduler.due(cam.buffers, cam.tracker.active_ids, frame_no, cam.name))
        self.metrics.active_tracks.labels(cam.name).set(len(cam.tracker.active_ids))
        return windows

    def tracker_update(self, cam: CameraState, frame_no: int, people: np.ndarray):
        return cam.tracker.update(frame_no, people)

    def _end_tracks(self, cam: CameraState, track_ids: Iterable[int]) -> None:
        ended = set(track_ids)
        for key in (self.logic.groups(cam.name) if self.logic is not None else []):
            if ended & set(key):
                self._emit_all(self.logic.end_group(cam.name, key))
        for t in ended:
            cam.buffers.drop(t)
            cam.track_frames.pop(t, None)

    def _end_camera(self, cam: CameraState) -> None:
        if cam.ended:
            return
        last = max(cam.last_seq, 0)
        remaining = cam.tracker.finish()
        windows = cam.scheduler.flush(cam.buffers, remaining, last, cam.name)
        self._recognise(windows)
        self._end_tracks(cam, remaining)
        cam.ended = True
        for sink in self.frame_sinks:
            sink.end_camera(cam.name)
        self.health.ended(cam.name)
        self.metrics.active_tracks.labels(cam.name).set(0)

    def _recognise(self, windows: list[Window]) -> None:
        if not windows:
            return
        if self.recognizer is None:  # record-only stage (recognizer.model: none)
            if self.recorder is not None:
                for w in windows:
                    self.recorder.write_window(w)
            return
        self.metrics.queue_depth.labels("windows").set(len(windows))
        data = np.stack([w.data for w in windows])  # (N, 3, T, V, M)
        t0 = time.perf_counter()
        scores, _depth = self.recognizer.classify(data)
        self.metrics.recognizer_latency.observe(time.perf_counter() - t0)
        self.metrics.recognizer_batch.observe(len(windows))
        for w, s in zip(windows, scores):
            if self.recorder is not None:
                self.recorder.write_window(w, s)
            self.metrics.windows_classified.labels(w.camera).inc()
            self.windows_total += 1
            if self.s.debug_topk:
                self._log_scores(w, s)
            events = self.logic.update(w, s)
            self._emit_all(events)
            received = getattr(w, "received_ts", None)
            if events and received is not None:
                self.metrics.event_latency.labels(w.camera).observe(max(0.0, time.time() - received))
        self.metrics.queue_depth.labels("windows").set(0)

    def _log_scores(self, w: Window, scores: np.ndarray) -> None:
        """One line with the window's top-k labels and raw scores (``(K,)`` probabilities, before the
        EMA, the pair rule and the thresholds), rate-limited per camera and track group."""
        key = (w.camera, tuple(w.track_ids))
        now = time.monotonic()
        if now - self._scores_logged.get(key, -1e18) < self.s.debug_interval_s:
            return
        self._scores_logged[key] = now
        if len(self._scores_logged) > 4096:  # bounded: forget the oldest groups
            for old in sorted(self._scores_logged, key=self._scores_logged.get)[:2048]:
                del self._scores_logged[old]
        top = np.argsort(-scores)[: self.s.debug_topk]
        labels = self.recognizer.labels
        scores_log.info("camera %s tracks %s frames %d-%d: %s", w.camera, list(w.track_ids), w.start_frame, w.end_frame,
                        ", ".join(f"{labels[i]} {scores[i]:.3f}" for i in top))

    def _open_labels(self, camera: str) -> dict[int, str]:
        """``{track id: label}`` of the camera's open actions (what the overlay marks)."""
        if self.logic is None:
            return {}
        return {t: label for cam, key, label in self.logic.open_actions if cam == camera for t in key}

    def _media(self, e: ActionEvent) -> ActionEvent:
        """``e`` with the paths of its clip (:meth:`pipeline.event_clips.ClipRecorder.start`, written
        once its post-roll is in) and its snapshot (the latest frame that shows the event's tracks,
        with the overlay), when they are on and ``e`` starts an action; a failed snapshot is logged
        and counted, and ``e`` goes out without one."""
        cam = self.cameras.get(e.camera)
        if e.phase != "start" or cam is None:
            return e
        if self.clips is not None:
            e = dataclasses.replace(e, clip=str(self.clips.start(e.camera, e.event_id, e.label, e.score, e.track_ids,
                                                                e.emitted_ts)))
        if self.snapshots is None:
            return e
        seen = [cam.track_frames[t] for t in e.track_ids if t in cam.track_frames]
        if not seen:
            return e
        frame = max(seen, key=lambda f: f.frame_no)  # the latest frame showing the event's people
        try:
            path = self.snapshots.save(e.camera, e.event_id, draw_overlay(frame, {t: e.label for t in e.track_ids},
                                                                        f"{e.label} {e.score:.2f}"),
                                       e.emitted_ts)
        except (OSError, ValueError) as exc:
            self.metrics.snapshot_errors.inc()
            self.rl.warning("snapshot", "camera %s: snapshot of event %s not written: %s", e.camera, e.event_id, exc)
            return e
        self.metrics.snapshots.labels(e.camera).inc()
        return dataclasses.replace(e, snapshot=str(path))

    def swap_model(self, recognizer, logic: EventLogic) -> None:
        """Replace the recogniser and its event logic (a config reload; call between batches, on the
        post thread): every open action of the old model gets its ``end`` first, so each action keeps
        exactly one ``start`` and one ``end``."""
        if self.logic is not None:
            self._emit_all(self.logic.flush())
        old = getattr(self.recognizer, "model_id", None)
        self.recognizer, self.logic = recognizer, logic
        log.info("recogniser swapped: model %s -> %s", old, getattr(recognizer, "model_id", None))

    def emit_events(self, events: list[ActionEvent]) -> None:
        """Emit events made outside the stage's own logic (e.g. ends after a config reload)."""
        self._emit_all(events)

    def _emit_all(self, events: list[ActionEvent]) -> None:
        for e in events:
            e = self._media(e)
            self.metrics.events.labels(e.camera, e.label, e.phase).inc()
            self.events_total += 1
            t0 = time.perf_counter()
            self.emit(e)
            self.metrics.emit_latency.observe(time.perf_counter() - t0)

    # ------------------------------------------------------------------ loop
    def all_ended(self) -> bool:
        expected = self.s.expected_cameras
        return bool(expected) and all(c in self.cameras and self.cameras[c].ended for c in expected)

    def step(self, timeout_ms: float = 100.0) -> int:
        """Receive, detect and post-process at most one batch synchronously; returns frames processed."""
        batch = self._collect(timeout_ms)
        raw = self._engine(batch) if batch else None
        self._post(batch, raw if raw is not None else [], self._take_control())
        return len(batch)

    def forget_camera(self, name: str) -> bool:
        """Drop the state of an ended (or unknown) camera so a new reader can start it afresh under
        the same name (a source re-added by a config reload); False while it is still running."""
        with self._control_lock:
            cam = self.cameras.get(name)
            if cam is not None and not cam.ended:
                return False
            self.cameras.pop(name, None)
            return True

    def end_camera_by_name(self, name: str) -> None:
        """End a camera whose reader died without an end-of-stream message (after the batch in
        flight); a camera that never sent a message is created ended, so ``end_when_all_eos`` fires.
        Called from the main thread; camera states are created on the engine thread, hence the lock."""
        with self._control_lock:
            cam = self.cameras.get(name)
            if cam is None and (self.s.cameras is None or name in self.s.cameras):
                cam = self._new_camera(name)
            if cam is not None and not cam.ended:
                self._control.append(cam)

    def run(self, stop, idle: Callable[[], None] | None = None) -> None:
        """Loop until ``stop`` is set or, with ``end_when_all_eos``, every expected camera ended.

        Two threads overlap the work: the engine thread receives and batches frames and runs the
        pose engine (onnxruntime releases the GIL); this thread groups joints with the PAFs, tracks,
        builds windows and runs the recogniser on the previous batch. A queue of two batches
        between them bounds memory and pushes back on the readers (lossless files wait, live
        sources drop at their high-water mark). ``idle`` is called after every batch.
        """
        log.info("stage running: detector batch <= %d, T=%d, M=%d, stride %d",
                 self.s.detector_max_batch, self.s.num_frames, self.s.num_persons, self.s.stride)
        handoff: queue.Queue = queue.Queue(maxsize=2)
        engine_done = threading.Event()
        failure: list[BaseException] = []

        def engine_loop() -> None:
            try:
                while not stop.is_set() and not engine_done.is_set():
                    self.health.beat("engine")
                    batch = self._collect(100.0)
                    raw = self._engine(batch) if batch else None
                    control = self._take_control()
                    if batch or control:
                        while not stop.is_set():
                            try:
                                handoff.put((batch, raw, control), timeout=0.1)
                                break
                            except queue.Full:
                                continue
                    self.metrics.queue_depth.labels("engine_to_post").set(handoff.qsize())
            except BaseException as exc:  # surfaced and re-raised on the main thread
                failure.append(exc)
                stop.set()

        engine = threading.Thread(target=engine_loop, name="sarde-engine", daemon=True)
        engine.start()
        try:
            while not stop.is_set():
                self.health.beat("post")
                try:
                    batch, raw, control = handoff.get(timeout=0.1)
                    self._post(batch, raw if raw is not None else [], control)
                except queue.Empty:
                    pass
                if idle is not None:
                    idle()
                if self.s.end_when_all_eos and self.all_ended():
                    log.info("all file sources ended")
                    break
        finally:
            engine_done.set()
            engine.join(timeout=30)
            while not handoff.empty():
                batch, raw, control = handoff.get_nowait()
                self._post(batch, raw if raw is not None else [], control)
            if failure:
                raise failure[0]
            self.shutdown()

    def shutdown(self) -> None:
        """End every camera's tracks (flushing partial windows) and every open event."""
        for cam in self.cameras.values():
            if not cam.ended:
                self._end_camera(cam)
        if self.logic is not None:
            self._emit_all(self.logic.flush())
