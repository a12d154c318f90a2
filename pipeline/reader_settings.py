"""The plain settings of one reader (:class:`ReaderSettings`), validated when built.

The daemon maps a validated :class:`pipeline.config.SourceConfig` onto it
(:func:`pipeline.daemon.reader_settings`); ``sarde reader`` and the tests build it directly.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

from pipeline.sources import CAMERA_NAME_RULE, is_camera_name, lossless_default, source_kind
from pipeline.wire import is_session

__all__ = ["ReaderSettings"]


@dataclass(frozen=True)
class ReaderSettings:
    """Plain settings of one reader (the daemon maps the validated config onto it).

    Attributes:
        camera: camera id, ``[A-Za-z0-9_-]{1,64}``.
        url: file path, network URL (``rtsp://user:pass@host/path``), device index or ``/dev/videoN``.
        endpoint: ZeroMQ endpoint to PUSH-connect to (``ipc://...`` or ``tcp://host:port``).
        input_size: detector input ``(W, H)``, pixels; frames are letterboxed to it.
        clahe_clip: CLAHE clip limit applied to the letterboxed picture (``engines.contrast``); 0 = off.
        kind: ``"auto"`` (see :func:`pipeline.sources.infer_kind`), ``"file"``, ``"rtsp"`` or ``"device"``.
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
        curve: CURVE client keys ``(server public, (public, secret))`` for a tcp endpoint
            (:mod:`pipeline.curve`); excluded from the repr so that no secret reaches a log.
        session: the wire session token to send (32 lowercase hex chars, :mod:`pipeline.wire`), set by
            ``sarde run`` so that its stage knows each camera's session from the start and a
            restarted reader keeps it; None: the reader process's own random token
            (:func:`pipeline.wire.process_session`). Excluded from the repr (without CURVE it is
            what proves a reader owns its camera).

    Raises:
        ValueError: on an invalid field.
    """

    camera: str
    url: str | int
    endpoint: str
    input_size: tuple[int, int] = (432, 368)
    clahe_clip: float = 0.0
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
    #: CURVE client keys for a tcp endpoint: ``(server public, (public, secret))`` Z85 (never in repr / logs).
    curve: tuple[bytes, tuple[bytes, bytes]] | None = field(default=None, repr=False)
    #: wire session token (32 lowercase hex) or None for the process's own (never in repr / logs).
    session: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not is_camera_name(self.camera):
            raise ValueError(f"camera must match {CAMERA_NAME_RULE}, got {self.camera!r}")
        source_kind(self.kind, self.url)  # raises ValueError on an unknown kind
        try:
            size = tuple(operator.index(a) for a in self.input_size)  # accepts numpy ints too
        except TypeError:
            size = ()
        if len(size) != 2 or not all(16 <= a <= 4096 for a in size):
            raise ValueError(f"input_size must be (W, H) ints in [16, 4096], got {self.input_size!r}")
        object.__setattr__(self, "input_size", size)
        if not self.clahe_clip >= 0:
            raise ValueError(f"clahe_clip must be >= 0, got {self.clahe_clip!r}")
        if self.max_fps is not None and not self.max_fps > 0:
            raise ValueError(f"max_fps must be > 0 or None, got {self.max_fps!r}")
        if self.sndhwm < 1 or self.open_timeout_ms < 1 or self.read_timeout_ms < 1 or self.eos_linger_ms < 0:
            raise ValueError("sndhwm and the timeouts must be positive")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_initial_s <= backoff_max_s")
        if not 0 <= self.backoff_jitter < 1 or not self.status_interval_s > 0:
            raise ValueError("need 0 <= backoff_jitter < 1 and status_interval_s > 0")
        if self.session is not None and not is_session(self.session):
            raise ValueError("session must be 32 lowercase hex chars (secrets.token_hex(16)) or None")
        if self.rtsp_transport not in ("tcp", "udp"):
            raise ValueError(f"rtsp_transport must be tcp or udp, got {self.rtsp_transport!r}")

    @property
    def source_kind(self) -> str:
        """The kind actually used: ``file``, ``rtsp`` or ``device`` (:func:`pipeline.sources.source_kind`)."""
        return source_kind(self.kind, self.url)

    @property
    def is_lossless(self) -> bool:
        """Whether frames are sent blocking, without drops (default: :func:`pipeline.sources.lossless_default`)."""
        return lossless_default(self.source_kind) if self.lossless is None else bool(self.lossless)
