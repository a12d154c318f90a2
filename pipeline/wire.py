"""Frame wire format between readers and the stage (ZeroMQ multipart, no pickle).

A message is a ZeroMQ multipart message:

* ``kind == "frame"``: ``[header, pixels]``: ``header`` is UTF-8 JSON (at most
  :data:`MAX_HEADER_BYTES`), ``pixels`` the raw C-contiguous ``(H, W, 3)`` uint8 buffer of the
  letterboxed detector input (BGR, as decoded by OpenCV), exactly ``H * W * 3`` bytes, at most
  :data:`MAX_FRAME_BYTES`.
* ``kind == "status"`` / ``"eos"``: ``[header]`` alone. ``status``: the reader is alive but has no
  frame to send (e.g. the source is down, ``source_up`` false); ``eos``: a file source ended, the
  reader exits next.

A message has at most :data:`MAX_PARTS` (2) parts. The stage receives part by part and keeps no more
than that; the rest of a longer message is received and dropped one part at a time, then the message
is rejected as ``parts``. That bounds what the *application* holds, not what libzmq holds: libzmq
delivers a multipart message atomically (the application sees its first part only once all parts
are in libzmq's pipe) and its receive high-water mark counts whole messages, and no libzmq option
bounds the number of parts. What one message can occupy inside libzmq is therefore bounded only by
``zmq.MAXMSGSIZE`` (set per part by the daemon) times the parts a peer chooses to send.

Sending is zero-copy: :func:`encode_frame` returns a ``memoryview`` of the image for
``socket.send_multipart(parts, copy=False)`` (ZeroMQ keeps a reference until the bytes are out; do not
modify the image afterwards). Receiving: :func:`decode` accepts ``bytes``, ``memoryview`` or
``zmq.Frame`` parts (``recv_multipart(copy=False)``) and returns a read-only ``np.frombuffer`` view on
the pixel part, no copy.

Header fields (JSON object, exactly these keys):

=============  ==========================================================================
``v``          wire version, :data:`WIRE_VERSION` (2). Only this version is accepted: readers and
               the stage ship together, so a message of another version (1 had no ``session``)
               is rejected with reason ``version``.
``kind``       ``"frame"`` | ``"status"`` | ``"eos"``
``session``    the sending reader's session: 32 lowercase hex chars, random
               (``secrets.token_hex(16)``), made once per reader process
               (:func:`process_session`) or handed to it by ``sarde run``, constant for the
               process's life. The stage binds a camera to the first session it hears from (or
               the one ``sarde run`` gave that camera's reader) and rejects other sessions' messages
               for it as ``peer``, so that without CURVE a stranger on the frames socket cannot
               jump, reset or end another reader's sequence.
``camera``     camera id, ``[A-Za-z0-9_-]{1,64}``
``seq``        int >= 0. Frames: the per-camera capture index (strictly increasing; gaps are
               frames dropped or decimated before sending). status/eos: frames captured so far.
``capture_ts`` float, unix seconds: when the frame was captured (live: wall clock at grab; files:
               start wall time + media timestamp); status/eos: when the message was made
``shape``      ``[H, W, 3]`` of the pixels (frame); ``null`` for status/eos
``dtype``      ``"uint8"``
``orig_size``  ``[W0, H0]`` original frame size in pixels, or ``null`` if not known yet
``scale``      letterbox scale (detector-input pixels per original pixel), > 0
``pad``        ``[pad_x, pad_y]`` letterbox offset, pixels (see :mod:`engines.letterbox`)
``source_fps`` float frames/s reported by the source, or ``null``
``dropped``    cumulative frames the reader dropped (live back-pressure), int >= 0
``reconnects`` cumulative source reopen attempts, int >= 0
``source_up``  bool: the source is open and delivering
=============  ==========================================================================

:func:`decode` raises :class:`WireError` whose ``reason`` is one of :data:`REASONS`, for counting
rejected messages by reason.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

import numpy as np

from pipeline.sources import CAMERA_NAME_RULE, is_camera_name

__all__ = [
    "WIRE_VERSION", "MAX_HEADER_BYTES", "MAX_SIDE", "MAX_FRAME_BYTES", "MAX_PARTS", "KINDS", "REASONS",
    "FrameHeader", "WireError", "encode_frame", "encode_status", "decode", "is_session", "new_session",
    "process_session",
]

WIRE_VERSION = 2
#: Most parts of one message (a frame: header + pixels).
MAX_PARTS = 2
#: Largest accepted header, bytes of UTF-8 JSON.
MAX_HEADER_BYTES = 4096
#: Largest accepted image side (H or W), pixels.
MAX_SIDE = 4096
#: Largest accepted pixel buffer, bytes (4096 x 4096 x 3). Also a sensible ``zmq.MAXMSGSIZE``.
MAX_FRAME_BYTES = MAX_SIDE * MAX_SIDE * 3
KINDS = ("frame", "status", "eos")
#: Every ``WireError.reason``.
REASONS = ("parts", "header_size", "json", "field", "version", "shape", "size", "dtype")

_FIELDS = ("v", "kind", "session", "camera", "seq", "capture_ts", "shape", "dtype", "orig_size", "scale", "pad",
           "source_fps", "dropped", "reconnects", "source_up")


_SESSION_RULE = re.compile(r"[0-9a-f]{32}")


def is_session(x: Any) -> bool:
    """Whether ``x`` is a session token: a ``str`` of exactly 32 lowercase hex chars."""
    return isinstance(x, str) and _SESSION_RULE.fullmatch(x) is not None


def new_session() -> str:
    """A fresh random session token: 32 lowercase hex chars (``secrets.token_hex(16)``, 128 bits)."""
    return secrets.token_hex(16)


_process_session = new_session()


def _renew_process_session() -> None:
    global _process_session
    _process_session = new_session()


if hasattr(os, "register_at_fork"):  # a forked child is another reader process: its own token
    os.register_at_fork(after_in_child=_renew_process_session)


def process_session() -> str:
    """This process's session token (32 lowercase hex chars), made at import and constant for the
    life of the process (a forked child gets a new one); the default ``session`` of a header."""
    return _process_session


class WireError(ValueError):
    """A message that does not follow the wire format.

    Attributes:
        reason: one of :data:`REASONS` (a fixed, small set, usable as a metric label).
    """

    def __init__(self, reason: str, message: str):
        if reason not in REASONS:
            raise ValueError(f"unknown WireError reason {reason!r}")
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class FrameHeader:
    """The JSON header of one message; see the module docstring for each field's meaning."""

    kind: str
    camera: str
    seq: int
    capture_ts: float
    shape: tuple[int, int, int] | None = None
    dtype: str = "uint8"
    orig_size: tuple[int, int] | None = None
    scale: float = 1.0
    pad: tuple[int, int] = (0, 0)
    source_fps: float | None = None
    dropped: int = 0
    reconnects: int = 0
    source_up: bool = True
    session: str = field(default_factory=process_session)
    v: int = field(default=WIRE_VERSION)

    def to_json(self) -> bytes:
        """UTF-8 JSON bytes (compact). Raises :class:`WireError` if a field is invalid or too big."""
        _check_fields(self)
        obj = asdict(self)
        for key in ("shape", "orig_size", "pad"):
            if obj[key] is not None:
                obj[key] = list(obj[key])
        data = json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("utf-8")
        if len(data) > MAX_HEADER_BYTES:
            raise WireError("header_size", f"header is {len(data)} bytes, more than {MAX_HEADER_BYTES}")
        return data


#: largest integer any header field may hold (int64: counters, sequence numbers, Prometheus values).
MAX_INT = 2**63 - 1


def _is_int(x: Any) -> bool:
    """A JSON integer (not a bool) within int64."""
    return isinstance(x, int) and not isinstance(x, bool) and -MAX_INT <= x <= MAX_INT


def _is_num(x: Any) -> bool:
    """A finite JSON number (an integer within int64, or a finite float)."""
    return _is_int(x) or (isinstance(x, float) and math.isfinite(x))


def _int_pair(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and len(x) == 2 and all(_is_int(a) for a in x)


def _check_fields(h: FrameHeader) -> None:
    """Validate a header's fields (not the pixel buffer). Raises :class:`WireError`."""
    if not _is_int(h.v):
        raise WireError("field", f"v must be an int, got {h.v!r}")
    if h.v != WIRE_VERSION:
        raise WireError("version", f"wire version {h.v} is not supported (expected {WIRE_VERSION})")
    if h.kind not in KINDS:
        raise WireError("field", f"kind must be one of {KINDS}, got {h.kind!r}")
    if not is_session(h.session):
        raise WireError("field", f"session must be 32 lowercase hex chars, got {str(h.session)[:40]!r}")
    if not is_camera_name(h.camera):
        raise WireError("field", f"camera must match {CAMERA_NAME_RULE}, got {str(h.camera)[:80]!r}")
    if not _is_int(h.seq) or h.seq < 0:
        raise WireError("field", f"seq must be an int >= 0, got {h.seq!r}")
    if not _is_num(h.capture_ts) or h.capture_ts < 0:
        raise WireError("field", f"capture_ts must be finite unix seconds, got {h.capture_ts!r}")
    if h.orig_size is not None and not (_int_pair(h.orig_size) and all(0 < a <= 65536 for a in h.orig_size)):
        raise WireError("field", f"orig_size must be [W0, H0] positive ints or null, got {h.orig_size!r}")
    if not _is_num(h.scale) or h.scale <= 0:
        raise WireError("field", f"scale must be a finite float > 0, got {h.scale!r}")
    if not (_int_pair(h.pad) and all(0 <= a <= MAX_SIDE for a in h.pad)):
        raise WireError("field", f"pad must be [pad_x, pad_y] ints >= 0, got {h.pad!r}")
    if h.source_fps is not None and not (_is_num(h.source_fps) and h.source_fps >= 0):
        raise WireError("field", f"source_fps must be a finite float >= 0 or null, got {h.source_fps!r}")
    for name in ("dropped", "reconnects"):
        value = getattr(h, name)
        if not _is_int(value) or value < 0:
            raise WireError("field", f"{name} must be an int >= 0, got {value!r}")
    if not isinstance(h.source_up, bool):
        raise WireError("field", f"source_up must be a bool, got {h.source_up!r}")
    if h.dtype != "uint8":
        raise WireError("dtype", f"dtype must be 'uint8', got {str(h.dtype)[:40]!r}")
    if h.kind == "frame":
        shape = h.shape
        if not (isinstance(shape, (list, tuple)) and len(shape) == 3 and all(_is_int(a) for a in shape)
                and shape[2] == 3 and 0 < shape[0] <= MAX_SIDE and 0 < shape[1] <= MAX_SIDE):
            raise WireError("shape", f"shape must be [H, W, 3] with 1 <= H, W <= {MAX_SIDE}, got {shape!r}")
    elif h.shape is not None:
        raise WireError("shape", f"a {h.kind} message carries no pixels: shape must be null, got {h.shape!r}")


def encode_frame(header: FrameHeader, image: np.ndarray) -> list[bytes | memoryview]:
    """Encode a frame as ``[header JSON, pixel buffer]`` for ``send_multipart(parts, copy=False)``.

    Args:
        header: ``kind == "frame"``, ``shape == image.shape``.
        image: ``(H, W, 3)`` uint8, C-contiguous; the returned memoryview shares its memory, so it
            must not be modified until ZeroMQ has sent it.

    Returns:
        ``[bytes, memoryview]``.

    Raises:
        WireError: header invalid (``field``/``version``/``shape``/``dtype``/``header_size``), or the
            image does not match it (``shape``, ``dtype``) or is too large (``size``).
        ValueError: the image is not C-contiguous (a copy would be needed; make it contiguous first).
    """
    if header.kind != "frame":
        raise WireError("field", f"encode_frame needs kind 'frame', got {header.kind!r}")
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise WireError("dtype", f"image must be a uint8 ndarray, got {getattr(image, 'dtype', type(image))}")
    if header.shape is None or tuple(image.shape) != tuple(header.shape):
        raise WireError("shape", f"image shape {image.shape} differs from header shape {header.shape}")
    if not image.flags["C_CONTIGUOUS"]:
        raise ValueError("encode_frame: image must be C-contiguous (np.ascontiguousarray)")
    if image.nbytes > MAX_FRAME_BYTES:
        raise WireError("size", f"image is {image.nbytes} bytes, more than {MAX_FRAME_BYTES}")
    return [header.to_json(), memoryview(image).cast("B")]


def encode_status(header: FrameHeader) -> list[bytes]:
    """Encode a ``status`` or ``eos`` message: ``[header JSON]`` (``header.shape`` must be None).

    Raises:
        WireError: header invalid, or its kind is ``frame``.
    """
    if header.kind not in ("status", "eos"):
        raise WireError("field", f"encode_status needs kind 'status' or 'eos', got {header.kind!r}")
    return [header.to_json()]


def _as_buffer(part: Any) -> memoryview:
    buf = getattr(part, "buffer", None)  # zmq.Frame
    if buf is not None:
        return buf if isinstance(buf, memoryview) else memoryview(buf)
    try:
        return memoryview(part)
    except TypeError as exc:
        raise WireError("parts", f"message part of type {type(part).__name__} is not a buffer") from exc


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def decode(parts: Sequence[Any], max_frame_bytes: int = MAX_FRAME_BYTES) -> tuple[FrameHeader, np.ndarray | None]:
    """Validate and decode one multipart message.

    Args:
        parts: the message parts as ``bytes``, ``memoryview`` or ``zmq.Frame``.
        max_frame_bytes: largest accepted pixel buffer (at most :data:`MAX_FRAME_BYTES` is sensible).

    Returns:
        ``(header, image)``: ``image`` is a read-only ``(H, W, 3)`` uint8 ``np.frombuffer`` view on the
        pixel part for frames (no copy), ``None`` for status/eos.

    Raises:
        WireError: with ``reason`` ``parts`` (wrong number of parts for the kind), ``header_size``,
        ``json`` (not UTF-8 JSON object), ``version``, ``field`` (missing/unknown/invalid field),
        ``shape``, ``dtype`` or ``size`` (pixel buffer length differs from the shape, or too big).
    """
    if not isinstance(parts, (list, tuple)) or not 1 <= len(parts) <= MAX_PARTS:
        n = len(parts) if isinstance(parts, (list, tuple)) else type(parts).__name__
        raise WireError("parts", f"expected 1 to {MAX_PARTS} message parts, got {n}")
    raw = _as_buffer(parts[0])
    if raw.nbytes > MAX_HEADER_BYTES:
        raise WireError("header_size", f"header is {raw.nbytes} bytes, more than {MAX_HEADER_BYTES}")
    try:
        obj = json.loads(raw.tobytes().decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: deeply nested arrays
        raise WireError("json", f"header is not UTF-8 JSON: {str(exc)[:200]}") from None
    if not isinstance(obj, dict):
        raise WireError("json", f"header must be a JSON object, got {type(obj).__name__}")
    if "v" not in obj or not _is_int(obj["v"]):
        raise WireError("field", "header has no integer 'v' (wire version)")
    if obj["v"] != WIRE_VERSION:
        raise WireError("version", f"wire version {obj['v']} is not supported (expected {WIRE_VERSION})")
    keys = set(obj)
    if keys != set(_FIELDS):
        missing = sorted(set(_FIELDS) - keys)
        unknown = sorted(keys - set(_FIELDS))[:5]
        raise WireError("field", f"header fields: missing {missing}, unknown {unknown}")
    for key in ("shape", "orig_size", "pad"):
        if isinstance(obj[key], list):
            obj[key] = tuple(obj[key])
    header = FrameHeader(**obj)
    _check_fields(header)

    if header.kind == "frame":
        if len(parts) != 2:
            raise WireError("parts", f"a frame needs 2 parts (header, pixels), got {len(parts)}")
        h, w, c = header.shape  # type: ignore[misc]
        expected = h * w * c
        if expected > max_frame_bytes:
            raise WireError("size", f"frame of {expected} bytes exceeds the limit {max_frame_bytes}")
        pixels = _as_buffer(parts[1])
        if pixels.nbytes != expected:
            raise WireError("size", f"pixel part is {pixels.nbytes} bytes, shape {list(header.shape)} needs {expected}")
        image = np.frombuffer(pixels, dtype=np.uint8).reshape(h, w, c)  # (H, W, 3), no copy
        image.setflags(write=False)
        return header, image
    if len(parts) != 1:
        raise WireError("parts", f"a {header.kind} message has 1 part, got {len(parts)}")
    return header, None
