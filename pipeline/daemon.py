"""Composition of the daemon: models, sockets, reader processes, stage, outputs, metrics.

``sarde run`` = :func:`run_all` (readers as child processes + stage in this process);
``sarde stage`` = :func:`run_stage`; ``sarde reader`` = :func:`run_reader_process`.
"""
from __future__ import annotations

import dataclasses
import logging
import multiprocessing as mp
import signal
import sys
import threading
import time
from typing import Callable
from contextlib import ExitStack
from pathlib import Path

import zmq

from pipeline.assets import StartupError, detector_manifest, recognizer_manifest
from pipeline.config import Config, SourceConfig
from pipeline.curve import is_loopback_endpoint, load_keypair, load_public_key, make_server, start_authenticator
from pipeline.events import ActionEvent, EventLogic
from pipeline.metrics import Health, StageMetrics, serve
from pipeline.reader_settings import ReaderSettings
from pipeline.readers import reader_main
from pipeline.sources import lossless_default, source_kind
from pipeline.stage import Stage, StageSettings
from pipeline.watchdog import ReaderWatchdog
from pipeline.wire import MAX_HEADER_BYTES, new_session

log = logging.getLogger(__name__)

__version__ = "0.1.0"


def reader_settings(cfg: Config, src: SourceConfig, input_size: tuple[int, int],
                    session: str | None = None) -> ReaderSettings:
    """Map one validated source onto the reader's plain settings.

    Args:
        cfg: the validated config (transport, recogniser frame rate, data_dir for relative paths).
        src: one of ``cfg.sources``.
        input_size: detector input ``(W, H)``, pixels.
        session: the wire session token this reader sends (32 lowercase hex, from
            :func:`pipeline.wire.new_session`), None for the reader process's own.

    Returns:
        :class:`ReaderSettings` with the kind resolved by :func:`pipeline.sources.source_kind` (every
        network URL, rtmp/udp/tcp/srt included, is a live ``rtsp`` reader that reconnects) and
        ``lossless`` by :func:`pipeline.sources.lossless_default` unless the source sets it.
    """
    url = cfg.resolve_source_url(src.url)
    kind = source_kind(src.kind, url)
    lossless = src.lossless if src.lossless is not None else lossless_default(kind)
    # Windows are T frames at the model's frame rate: faster sources are decimated at the reader.
    max_fps = src.max_fps if src.max_fps is not None else cfg.recognizer.fps
    return ReaderSettings(
        camera=src.name, url=url, kind=kind, lossless=lossless, loop=src.loop, max_fps=max_fps,
        input_size=tuple(input_size), clahe_clip=cfg.detector.clahe_clip, endpoint=cfg.transport.frames_endpoint, sndhwm=cfg.transport.sndhwm,
        open_timeout_ms=src.open_timeout_ms, read_timeout_ms=src.read_timeout_ms,
        backoff_initial_s=src.backoff_initial_s, backoff_max_s=src.backoff_max_s,
        curve=client_curve(cfg, cfg.transport.frames_endpoint), session=session,
    )


def client_curve(cfg: Config, endpoint: str) -> tuple[bytes, tuple[bytes, bytes]] | None:
    """CURVE client keys ``(server public, (public, secret))`` for connecting to ``endpoint`` (a
    reader, ``sarde events``): from ``transport.curve`` when the endpoint is tcp and the client keys
    are configured, else None. Raises :class:`pipeline.curve.CurveError` on a bad key file."""
    c = cfg.transport.curve
    if c is None or c.client_key is None or not endpoint.startswith("tcp://"):
        return None
    return load_public_key(c.server_public_key), load_keypair(c.client_key)


def server_curve(cfg: Config, ctx: zmq.Context, stack: ExitStack) -> tuple[bytes, bytes] | None:
    """The stage's CURVE key pair, with the ZAP authenticator for ``authorized_keys`` started on
    ``ctx`` (stopped by ``stack``); None without ``transport.curve.server_key``. Every non-loopback tcp
    endpoint the stage binds needs it unless ``transport.insecure``.

    Raises:
        StartupError: a non-loopback endpoint without keys and without ``insecure: true``.
        pipeline.curve.CurveError: a bad key file or folder.
    """
    c = cfg.transport.curve
    binds = [e for e in (cfg.transport.frames_bind or cfg.transport.frames_endpoint, cfg.events.pub_endpoint) if e]
    exposed = [e for e in binds if not is_loopback_endpoint(e)]
    if c is None or c.server_key is None:
        if exposed and not cfg.transport.insecure:
            raise StartupError(f"{exposed[0]} is reachable from other hosts without CURVE keys: make keys with `sarde keys` "
                               "and set transport.curve, bind 127.0.0.1, or set transport.insecure: true")
        if exposed:
            log.warning("transport.insecure: %s bound without CURVE: anyone who reaches it can send frames / read events",
                        ", ".join(exposed))
        return None
    keypair = load_keypair(c.server_key)
    auth = start_authenticator(ctx, c.authorized_keys)
    stack.callback(auth.stop)
    log.info("CURVE on the tcp endpoints; clients admitted from %s", c.authorized_keys)
    return keypair


def install_signal_handlers(stop: threading.Event, reload: Callable[[], None] | None = None) -> None:
    """SIGINT / SIGTERM set ``stop``: the loops finish their step and shut down cleanly. SIGHUP calls
    ``reload`` (a config reload request, :class:`pipeline.reload.Reloader`) when given."""
    def handler(signum, _frame):
        log.info("received %s, shutting down", signal.Signals(signum).name)
        stop.set()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    if reload is not None:
        def hup(signum, _frame):
            log.info("received SIGHUP: reloading the config")
            reload()
        signal.signal(signal.SIGHUP, hup)


def load_models(cfg: Config, progress: bool = True):
    """Detector and recogniser, created on first use; raises StartupError / ModelLoadError."""
    from engines.detector import PoseDetector
    from engines.pose import PoseDecoder

    det_manifest = detector_manifest(cfg)
    d = cfg.detector
    try:
        decoder = PoseDecoder(**d.decoder_settings())
    except ValueError as exc:
        raise StartupError(f"detector decoder settings: {exc}; fix the detector section of the config") from exc
    detector = PoseDetector(det_manifest, providers=d.providers, decoder=decoder, intra_op_threads=d.intra_op_threads,
                            memory_arena=d.cpu_memory_arena)
    if cfg.recognizer.model == "none":  # record-only: detect, track, build and record windows
        return detector, None
    return detector, load_recognizer(cfg)


class Outputs:
    """Where events go: journal (durable, first), ZeroMQ PUB, stdout as JSON lines."""

    def __init__(self, cfg: Config, ctx: zmq.Context, metrics: StageMetrics,
                 curve_keypair: tuple[bytes, bytes] | None = None):
        from pipeline.journal import EventJournal
        from pipeline.publish import EventPublisher

        ev = cfg.events
        self.journal = EventJournal(ev.journal) if ev.journal else None
        try:
            curve = curve_keypair if ev.pub_endpoint and ev.pub_endpoint.startswith("tcp://") else None
            self.publisher = (EventPublisher(ev.pub_endpoint, ev.topic_prefix, self.journal, context=ctx, curve_keypair=curve)
                              if ev.pub_endpoint else None)
        except BaseException:
            if self.journal is not None:
                self.journal.close()
            raise
        try:
            self.mqtt = open_mqtt(ev, self.journal) if ev.mqtt is not None else None
        except BaseException:
            if self.publisher is not None:
                self.publisher.close()
            if self.journal is not None:
                self.journal.close()
            raise
        self.stdout = ev.stdout
        self.metrics = metrics
        self._retention = (None if ev.journal_retention_days is None else 86400.0 * ev.journal_retention_days,
                           ev.journal_max_events)
        self._prune_every, self._since_prune = ev.journal_prune_every, 0
        self._prune()
        self._close_open_actions()

    def _close_open_actions(self) -> None:
        """Actions a previous stage started and never ended (it was killed) get their ``end`` now:
        same ``event_id``, camera, tracks and label, the last stored score, a window from the first
        stored event's start to the last one's end, ``interrupted`` true and the current schema (also
        for an action an older build left open as ``sarde.event/1``); emitted like any event
        (journal, PUB, stdout)."""
        if self.journal is None:
            return
        from pipeline.events import SCHEMA, EventWindow

        for first, last in self.journal.open_actions():
            span = EventWindow(start_ts=first.window.start_ts, end_ts=last.window.end_ts,
                               start_frame=first.window.start_frame, end_frame=last.window.end_frame)
            log.warning("camera %s: action %s (%s) was left open by a stage that stopped without ending it; ending it now",
                        last.camera, last.event_id, last.label)
            self(dataclasses.replace(last, phase="end", window=span, emitted_ts=time.time(), interrupted=True,
                                     snapshot=None, clip=None, schema=SCHEMA))

    def _prune(self) -> None:
        """Journal retention (config ``events.journal_*``); a failure is logged and counted, never fatal."""
        from pipeline.journal import JournalError

        self._since_prune = 0
        if self.journal is None or self._retention == (None, None):
            return
        try:
            n = self.journal.prune(*self._retention)
        except JournalError as exc:
            self.metrics.journal_errors.inc()
            log.error("journal retention failed: %s", exc)
            return
        if n:
            self.metrics.journal_pruned.inc(n)
            log.info("journal retention: %d old events deleted from %s", n, self.journal.path)

    def __call__(self, event: ActionEvent) -> None:
        from pipeline.journal import JournalError

        failed_before = self.publisher.publish_failed if self.publisher is not None else 0
        seq = None
        try:
            if self.publisher is not None:
                seq = self.publisher.publish(event)
            elif self.journal is not None:
                seq = self.journal.append(event)
        except JournalError as exc:
            # The journal failed (disk full, file removed): keep the daemon up and the event visible.
            self.metrics.journal_errors.inc()
            log.error("journal write failed for event %s: %s", event.event_id, exc)
            if self.publisher is not None:
                self.publisher.send_only(event)
        if self.publisher is not None and self.publisher.publish_failed > failed_before:
            self.metrics.events_publish_failed.inc(self.publisher.publish_failed - failed_before)
        if self.mqtt is not None:
            self.mqtt.publish(seq, event)
        self._since_prune += 1
        if self._since_prune >= self._prune_every:
            self._prune()
        if self.stdout:
            sys.stdout.write(event.to_json() + "\n")
            sys.stdout.flush()

    def close(self) -> None:
        if self.mqtt is not None:
            self.mqtt.close()
        if self.publisher is not None:
            self.publisher.close()
        if self.journal is not None:
            self.journal.close()


def open_mqtt(ev, journal):
    """The :class:`pipeline.mqtt.MqttSink` of ``events.mqtt``; raises :class:`StartupError` (one line)
    without a journal (the source of its re-sends), without paho-mqtt, or with an unreadable password file."""
    m = ev.mqtt
    if journal is None:
        raise StartupError("events.mqtt needs events.journal (events the broker did not acknowledge are re-sent from it)")
    password = None
    if m.password_file is not None:
        try:
            password = Path(m.password_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise StartupError(f"events.mqtt.password_file {m.password_file}: {exc.strerror}; point it to a readable file") from exc
    try:
        from pipeline.mqtt import MqttSink
        return MqttSink(m.host, m.port, journal.path, m.topic_prefix, m.qos, m.client_id, username=m.username,
                        password=password)
    except ImportError as exc:
        raise StartupError(f"events.mqtt needs paho-mqtt ({exc}); pip install paho-mqtt") from exc


def open_outputs(cfg: Config, ctx: zmq.Context, metrics: StageMetrics,
                 curve_keypair: tuple[bytes, bytes] | None = None) -> Outputs:
    """:class:`Outputs` of ``cfg``; raises :class:`StartupError` (one line) if the journal cannot be
    opened or the events endpoint cannot be bound."""
    from pipeline.journal import JournalError

    try:
        return Outputs(cfg, ctx, metrics, curve_keypair)
    except JournalError as exc:
        raise StartupError(f"cannot open the event journal {cfg.events.journal}: {exc}; set events.journal to a writable sqlite file path") from exc
    except zmq.ZMQError as exc:
        raise StartupError(f"cannot bind events endpoint {cfg.events.pub_endpoint} ({exc}); set events.pub_endpoint to a free address") from exc


def silent_labels(cfg: Config, recognizer) -> list[str]:
    """Model labels that never raise events: ``events.ignore_labels``, the model's background class,
    and, when ``events.alert_labels`` is set, every label not in it.

    Raises:
        StartupError: ``alert_labels`` names a label the model does not have, or leaves nothing to alert.
    """
    labels = list(recognizer.labels)
    silent = set(cfg.events.ignore_labels) | {getattr(recognizer, "background", "other")}
    alerts = cfg.events.alert_labels
    if alerts is not None:
        unknown = sorted(set(alerts) - set(labels))
        if unknown:
            raise StartupError(f"events.alert_labels {unknown} are not labels of the model {labels}; fix events.alert_labels")
        silent |= set(labels) - set(alerts)
    unknown_pairs = sorted(set(cfg.events.pair_labels) - set(labels))
    if unknown_pairs:
        raise StartupError(f"events.pair_labels {unknown_pairs} are not labels of the model {labels}; fix events.pair_labels")
    if not set(labels) - silent:
        raise StartupError(f"no model label can raise an event (labels {labels}, silent {sorted(silent)}); fix events.alert_labels / ignore_labels")
    return sorted(silent & set(labels))


def event_logic(cfg: Config, recognizer) -> EventLogic:
    """The :class:`EventLogic` of ``cfg.events`` for ``recognizer`` (at start-up and on a config reload).

    Raises:
        StartupError: labels in the config the model does not have (:func:`silent_labels`).
    """
    ev = cfg.events
    return EventLogic(recognizer.labels, threshold=ev.threshold, end_threshold=ev.end_threshold, smoothing=ev.smoothing,
                      min_windows=ev.min_windows, ignore_labels=tuple(silent_labels(cfg, recognizer)),
                      model_id=recognizer.model_id, pair_labels=tuple(ev.pair_labels),
                      pair_min_joints=ev.pair_min_joints)


def load_recognizer(cfg: Config):
    """The recogniser of ``cfg.recognizer`` (a manifest path; ``default`` resolved before), validated
    against the config's ``T``, ``M`` and fps. Raises StartupError / ModelLoadError."""
    from engines.recognizer import Recognizer

    r = cfg.recognizer
    return Recognizer(recognizer_manifest(cfg), providers=r.providers, num_frames=r.num_frames,
                      num_persons=r.num_persons, intra_op_threads=r.intra_op_threads, max_batch=r.max_batch, fps=r.fps)


def build_stage(cfg: Config, ctx: zmq.Context, stack: ExitStack, expected_files: list[str], progress: bool = True,
                sessions: dict[str, str] | None = None, reload: Callable[[], None] | None = None):
    """Everything the stage needs, bound and ready; resources are closed by ``stack``.

    ``sessions``: camera -> the wire session token of the reader this process spawns for it (the
    stage then accepts that camera from that session only, from its first message on); None or a
    camera not in it: the camera belongs to the first session that sends for it. ``reload``:
    requests a config reload (the web page's ``POST /api/reload``), None for none."""
    detector, recognizer = load_models(cfg, progress)
    metrics = StageMetrics()
    cams = [s.name for s in cfg.sources]
    health = Health(metrics, cams, cfg.metrics.camera_timeout_s, cfg.metrics.stage_stall_s)
    metrics.build_info.info({
        "version": __version__,
        "detector": Path(detector.manifest_path).parent.name if hasattr(detector, "manifest_path") else "pose",
        "detector_providers": ",".join(detector.providers),
        "recognizer_model_id": recognizer.model_id if recognizer is not None else "none",
        "recognizer_providers": ",".join(recognizer.providers) if recognizer is not None else "",
    })
    if cfg.metrics.enabled:
        try:
            server, port = serve(metrics, health, cfg.metrics.host, cfg.metrics.port)
        except OSError as exc:
            raise StartupError(f"cannot serve metrics on {cfg.metrics.host}:{cfg.metrics.port} ({exc.strerror}); set metrics.port to a free port") from exc
        stack.callback(server.shutdown)
        metrics.http_port = port  # type: ignore[attr-defined]
    keypair = server_curve(cfg, ctx, stack)
    outputs = open_outputs(cfg, ctx, metrics, keypair)
    stack.callback(outputs.close)
    sock = ctx.socket(zmq.PULL)
    sock.setsockopt(zmq.RCVHWM, cfg.transport.rcvhwm)
    sock.setsockopt(zmq.LINGER, 0)
    # Every part is bounded before libzmq allocates it: a frame is exactly the detector input
    # (W x H x 3 bytes, the readers letterbox to it), a header at most MAX_HEADER_BYTES; a peer that
    # sends a bigger part is disconnected by libzmq and its message never reaches the stage.
    w, h = detector.input_size
    sock.setsockopt(zmq.MAXMSGSIZE, min(cfg.transport.max_frame_bytes, int(w) * int(h) * 3) + MAX_HEADER_BYTES)
    # A small kernel receive buffer keeps live frames fresh over tcp (ZeroMQ queues the oldest).
    sock.setsockopt(zmq.RCVBUF, 1 << 20)
    stack.callback(sock.close, 0)  # before bind: an open socket would keep ctx.term() waiting for ever
    bind = cfg.transport.frames_bind or cfg.transport.frames_endpoint
    if keypair is not None and bind.startswith("tcp://"):
        make_server(sock, keypair)
    try:
        sock.bind(bind)
    except zmq.ZMQError as exc:
        raise StartupError(f"cannot bind frames endpoint {bind} ({exc}); set transport.frames_endpoint to a free address") from exc
    r, t, ev = cfg.recognizer, cfg.tracking, cfg.events
    settings = StageSettings(
        detector_max_batch=cfg.detector.max_batch, detector_max_wait_ms=cfg.detector.max_wait_ms,
        num_frames=r.num_frames, num_persons=r.num_persons, stride=r.stride, min_frames=r.min_frames,
        pair_distance=r.pair_distance, fps=r.fps, max_age=t.max_age, max_distance=t.max_distance, min_joints=t.min_joints,
        cameras=cams or None, max_cameras=cfg.transport.max_cameras, debug_topk=ev.debug_topk,
        peer_identity=keypair is not None and bind.startswith("tcp://"),
        sessions=dict(sessions or {}), session_takeover_s=cfg.transport.session_takeover_s,
        debug_interval_s=ev.debug_interval_s, end_when_all_eos=bool(expected_files), expected_cameras=expected_files,
    )
    logic = None if recognizer is None else event_logic(cfg, recognizer)
    recorder = None
    if cfg.record_poses is not None:
        from pipeline.recorder import PoseRecorder
        try:
            recorder = PoseRecorder(cfg.record_poses)
        except OSError as exc:
            raise StartupError(f"cannot open record_poses file {cfg.record_poses} ({exc.strerror}); set record_poses to a writable path") from exc
        stack.callback(recorder.close)
    snapshots = None
    if cfg.media.snapshot_dir is not None and recognizer is not None:
        from pipeline.snapshots import SnapshotWriter
        m = cfg.media
        try:
            snapshots = SnapshotWriter(m.snapshot_dir, m.retention_days, None if m.max_mb is None else int(m.max_mb * 2**20),
                                       m.jpeg_quality)
        except OSError as exc:
            raise StartupError(f"cannot create media.snapshot_dir {m.snapshot_dir} ({exc.strerror}); set it to a writable folder or null") from exc
    sinks = []
    if cfg.media.overlay_dir is not None:
        from pipeline.overlay import OverlayWriter
        try:
            overlay = OverlayWriter(cfg.media.overlay_dir, cfg.recognizer.fps)
        except OSError as exc:
            raise StartupError(f"cannot create media.overlay_dir {cfg.media.overlay_dir} ({exc.strerror}); set it to a writable folder or null") from exc
        stack.callback(overlay.close)
        sinks.append(overlay)
    if cfg.web.enabled:
        sinks.append(open_web(cfg, stack, health, reload, recognizer.model_id if recognizer is not None else "record-only"))
    clips = None
    if snapshots is not None and cfg.media.clips:
        from pipeline.event_clips import ClipRecorder
        clips = ClipRecorder(snapshots, cfg.media.clip_pre_s, cfg.media.clip_post_s, cfg.recognizer.fps, metrics)
        stack.callback(clips.close)  # after the stage ran: the clips of its last events are written
    return Stage(settings, sock, detector, recognizer, logic, outputs, metrics, health, recorder, snapshots,
                 frame_sinks=sinks, clips=clips)


def open_web(cfg: Config, stack: ExitStack, health: Health, reload: Callable[[], None] | None, title: str):
    """The operators' web page of ``cfg.web`` (:mod:`pipeline.web`), serving until ``stack`` closes;
    returns its :class:`pipeline.live.LiveFrames` (a frame sink of the stage). Raises
    :class:`StartupError` (one line) when the address cannot be bound."""
    from pipeline.live import LiveFrames
    from pipeline.web import WebPage, WebServer

    live = LiveFrames()
    w = cfg.web
    page = WebPage(health, live, cfg.events.journal, cfg.media.snapshot_dir, w.stream_fps, w.events, reload, title)
    try:
        server = WebServer(page, w.host, w.port)
    except OSError as exc:
        raise StartupError(f"cannot serve the web page on {w.host}:{w.port} ({exc.strerror}); set web.port to a free port") from exc
    stack.callback(server.close)
    return live


def check_file_sources(cfg: Config, sources: list[SourceConfig]) -> None:
    """Every video file source exists and its first frame decodes (OpenCV); raises
    :class:`StartupError` naming the first that does not. Live sources are not probed: a camera
    that is down at start-up is retried by its reader."""
    import cv2

    for src in sources:
        path = cfg.resolve_source_url(src.url)
        if "://" in str(path):
            continue
        if not Path(path).is_file():
            raise StartupError(f"source {src.name}: video file {path} does not exist; fix its url or --source")
        cap = cv2.VideoCapture(str(path))
        try:
            ok = cap.isOpened() and cap.read()[0]
        finally:
            cap.release()
        if not ok:
            raise StartupError(f"source {src.name}: cannot decode video file {path}; pass a video OpenCV/FFmpeg can read")


def start_readers(settings: list[ReaderSettings]) -> list:
    """One spawned reader process per source (daemonic, named ``sarde-reader-<camera>``), started."""
    mpctx = mp.get_context("spawn")
    procs = [mpctx.Process(target=reader_main, args=(s,), name=f"sarde-reader-{s.camera}", daemon=True)
             for s in settings]
    for p in procs:
        p.start()
    return procs


def run_all(cfg: Config, progress: bool = True, reload_config: Callable[[], Config] | None = None) -> int:
    """Readers (one process per source) and the stage in this process. Returns the exit code.

    ``reload_config``: re-reads the config on SIGHUP (:mod:`pipeline.reload`); None: SIGHUP is not handled."""
    if not cfg.sources:
        raise StartupError("no sources: add one under `sources:` in the config or pass --source PATH_OR_URL")
    stop = threading.Event()
    reload_requested = threading.Event()
    install_signal_handlers(stop, reload_requested.set if reload_config is not None else None)
    ctx = zmq.Context()
    with ExitStack() as stack:
        stack.callback(ctx.term)
        kinds = {s.name: source_kind(s.kind, cfg.resolve_source_url(s.url)) for s in cfg.sources}
        check_file_sources(cfg, [s for s in cfg.sources if kinds[s.name] == "file"])
        files = [s.name for s in cfg.sources if kinds[s.name] == "file" and not s.loop]
        only_files = len(files) == len(cfg.sources)
        # One session token per camera, known to the stage before its reader starts (no
        # first-come binding) and kept by a restarted reader (the watchdog reuses its settings);
        # readers exit with this process, so no orphan goes on sending with a token.
        sessions = {s.name: new_session() for s in cfg.sources}
        stage = build_stage(cfg, ctx, stack, files if only_files else [], progress, sessions=sessions,
                            reload=reload_requested.set if reload_config is not None else None)
        settings = [reader_settings(cfg, s, stage.input_size, session=sessions[s.name]) for s in cfg.sources]
        procs = start_readers(settings)
        stack.callback(_stop_processes, procs)
        watchdog = ReaderWatchdog(
            settings, procs, start=lambda st: start_readers([st])[0], end_camera=stage.end_camera_by_name,
            camera_ended=lambda name: name in stage.cameras and stage.cameras[name].ended,
            restarts=lambda camera: stage.metrics.reader_restarts.labels(camera).inc())
        if reload_config is None:
            idle = watchdog.check
        else:
            from pipeline.reload import Reloader

            def add_source(src) -> None:
                session = new_session()
                stage.s.sessions[src.name] = session
                if stage.s.cameras is not None and src.name not in stage.s.cameras:
                    stage.s.cameras.append(src.name)
                st = reader_settings(cfg, src, stage.input_size, session=session)
                watchdog.add(st, start_readers([st])[0])  # watchdog.procs is `procs`: stopped at exit
                log.info("camera %s: added by a config reload", src.name)

            def remove_source(name: str) -> None:
                proc = watchdog.remove(name)
                if proc is not None:
                    _stop_processes([proc])
                stage.end_camera_by_name(name)
                log.info("camera %s: removed by a config reload", name)

            reloader = Reloader(stage, cfg, reload_config, event_logic, load_recognizer, wanted=reload_requested,
                                add_source=add_source, remove_source=remove_source)

            def idle() -> None:
                watchdog.check()
                reloader.check()
        stage.run(stop, idle=idle)
        log.info("stage done: %d windows classified, %d events", stage.windows_total, stage.events_total)
    return 0


def _stop_processes(procs) -> None:
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.kill()


def run_stage(cfg: Config, progress: bool = True) -> int:
    """Only the stage: readers run elsewhere (``sarde reader``) and connect to transport.frames_endpoint."""
    stop = threading.Event()
    install_signal_handlers(stop)
    ctx = zmq.Context()
    with ExitStack() as stack:
        stack.callback(ctx.term)
        stage = build_stage(cfg, ctx, stack, [], progress)
        stage.run(stop)
    return 0


def run_reader_process(cfg: Config, input_size: tuple[int, int]) -> int:
    """Only the readers: one child process per configured source; waits for them."""
    stop = threading.Event()
    install_signal_handlers(stop)
    procs = start_readers([reader_settings(cfg, s, input_size) for s in cfg.sources])
    while not stop.wait(0.5) and any(p.is_alive() for p in procs):
        pass
    _stop_processes(procs)
    return max((p.exitcode or 0 for p in procs), default=0)
