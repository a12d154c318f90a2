"""What a source URL is and what it may be called: pure functions, no OpenCV, no ZeroMQ.

One function per rule, used by the config, the CLI, the daemon, the wire format and the readers:

* :func:`mask_url`: a URL safe to log (credentials and secret query parameters replaced by ``***``).
* :func:`infer_kind` / :func:`source_kind`: ``file``, ``rtsp`` (any live network stream) or ``device``.
* :func:`lossless_default`: whether a kind sends every frame unless the config says otherwise.
* :func:`is_camera_name` / :func:`derive_camera_name`: the camera id rule ``[A-Za-z0-9_-]{1,64}``, and
  the id given to a ``--source`` that has no name (never containing user, password or query).
"""
from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "CAMERA_NAME_RULE", "KINDS", "mask_url", "infer_kind", "source_kind", "lossless_default",
    "is_camera_name", "derive_camera_name",
]

#: The camera id rule, as a regular expression (for messages and docs).
CAMERA_NAME_RULE = "[A-Za-z0-9_-]{1,64}"
#: The source kinds a reader knows; ``rtsp`` stands for every live network stream.
KINDS = ("file", "rtsp", "device")

#: URL schemes read as live network streams (kind ``rtsp``): reconnect with backoff, drop old frames.
_NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt")
_CAMERA_RE = re.compile(rf"^{CAMERA_NAME_RULE}$")
_DEVICE_RE = re.compile(r"^(/dev/video\d+|\d+)$")
_URL_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)([^/?#]*)(.*)$", re.S)
_SECRET_QUERY_RE = re.compile(r"(?i)([?&;](?:password|passwd|pwd|pass|token|secret|key|auth|signature)=)[^&;#]*")
_NAME_MAX = 56  # leaves room for a "-N" suffix within 64 characters


def _split_url(text: str) -> tuple[str, str | None, str, str] | None:
    """``(scheme://, userinfo or None, host[:port], rest)`` of a URL; None for anything else."""
    m = _URL_RE.match(text)
    if not m:
        return None
    scheme, netloc, rest = m.groups()
    userinfo, host = netloc.rsplit("@", 1) if "@" in netloc else (None, netloc)
    return scheme, userinfo, host, rest


def mask_url(url: str | int) -> str:
    """The URL with credentials replaced by ``***``, safe to log.

    Args:
        url: a URL, a file path or a device index.

    Returns:
        ``rtsp://user:secret@host:554/path`` -> ``rtsp://user:***@host:554/path``; a user-info part with
        no colon (a token) becomes ``***``; query parameters named like password/token/key/secret are
        masked. Non-URL strings and ints are returned as text unchanged. Never raises.
    """
    text = str(url)
    parts = _split_url(text)
    if parts is None:
        return text
    scheme, userinfo, host, rest = parts
    netloc = host
    if userinfo is not None:
        netloc = (userinfo.split(":", 1)[0] + ":***" if ":" in userinfo else "***") + "@" + host
    return scheme + netloc + _SECRET_QUERY_RE.sub(r"\1***", rest)


def infer_kind(url: str | int) -> str:
    """The kind of a source from its URL alone.

    Args:
        url: a file path, a URL, a device index or ``/dev/videoN``.

    Returns:
        ``"device"`` for an int, a digit string or ``/dev/videoN``; ``"rtsp"`` for a network URL
        (rtsp, rtsps, rtmp, http(s), udp, tcp, srt: any live network stream); ``"file"`` otherwise
        (including ``file://``). Never raises.
    """
    if isinstance(url, int) and not isinstance(url, bool):
        return "device"
    text = str(url)
    if _DEVICE_RE.match(text):
        return "device"
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    return "rtsp" if scheme in _NETWORK_SCHEMES else "file"


def source_kind(kind: str, url: str | int) -> str:
    """The kind a reader runs as: ``kind`` itself unless it is ``"auto"``, then :func:`infer_kind`.

    Args:
        kind: ``"auto"``, ``"file"``, ``"rtsp"`` or ``"device"`` (a config's ``sources[].kind``).
        url: the source's (resolved) URL, path or device.

    Returns:
        ``"file"``, ``"rtsp"`` or ``"device"``.

    Raises:
        ValueError: ``kind`` is none of the four.
    """
    if kind == "auto":
        return infer_kind(url)
    if kind not in KINDS:
        raise ValueError(f"kind must be auto, file, rtsp or device, got {kind!r}")
    return kind


def lossless_default(kind: str) -> bool:
    """Whether a source of ``kind`` (``file``/``rtsp``/``device``) sends every frame by default:
    True for files only; a live source drops old frames rather than stall the camera."""
    return kind == "file"


def is_camera_name(name: object) -> bool:
    """True if ``name`` is a str following the camera id rule :data:`CAMERA_NAME_RULE`."""
    return isinstance(name, str) and bool(_CAMERA_RE.match(name))


def derive_camera_name(url: str, taken: set[str]) -> str:
    """A camera id for a source given without a name (``--source URL``), unique within ``taken``.

    URLs are named by the stem of their path (``rtsp://u:p@cam.local/stream1`` -> ``stream1``), or by
    host and port when they have no path (``rtsp://admin:pw@host:554`` -> ``host_554``): never by the
    user, password, query or fragment. Paths and devices are named by their file stem
    (``/path/my clip.mp4`` -> ``my_clip``, ``/dev/video0`` -> ``video0``). Characters outside
    ``[A-Za-z0-9_-]`` become ``_``; at most 56 characters; ``cam`` if nothing is left; a name already in
    ``taken`` gets ``-2``, ``-3``, ...

    Args:
        url: the source as given on the command line.
        taken: ids already used; the returned id is added to it.

    Returns:
        An id matching :data:`CAMERA_NAME_RULE`. Never raises.
    """
    parts = _split_url(url)
    if parts is None:
        stem = Path(url.split("?")[0].rstrip("/")).stem
    else:
        _scheme, _userinfo, host, rest = parts
        path = re.split(r"[?#]", rest, maxsplit=1)[0].rstrip("/")
        stem = Path(path).stem if path else host
    base = re.sub(r"[^A-Za-z0-9_-]", "_", stem or "cam")[:_NAME_MAX] or "cam"
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}-{i}"
    taken.add(name)
    return name
