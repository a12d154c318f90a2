"""Manifests written next to every exported artifact, and the helpers every exporter shares.

A manifest is one JSON object (UTF-8, sorted keys, 2-space indent) describing an artifact: its file
name and sha256, the source it came from (path + sha256), input/output shapes and layouts, the parity
check against the reference implementation, ``created_at`` (UTC, ISO 8601) and the library versions
used. Consumers (``engines.detector``, ``pipeline.assets``) read it with :func:`read_manifest`.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

from engines.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["ManifestError", "sha256_file", "write_manifest", "read_manifest", "atomic_write_bytes"]

_CHUNK = 1 << 20


class ManifestError(UserError, ValueError):
    """A manifest is missing, unreadable, not a JSON object, or lacks a required field.

    The message always names the manifest path.
    """


def sha256_file(path: str | Path) -> str:
    """Hex sha256 digest of a file's bytes, read in 1 MiB chunks.

    Raises:
        FileNotFoundError / OSError: if the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    Readers (another test run, a starting daemon) never see a half-written artifact.
    Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_manifest(path: str | Path, data: Mapping[str, Any], versions: Mapping[str, str] | None = None) -> Path:
    """Write a manifest atomically as JSON with sorted keys.

    Args:
        path: the ``.json`` file to write (parent folders are created).
        data: JSON-serialisable fields of the artifact (NumPy scalars are not accepted: convert first).
        versions: library versions used to build the artifact, e.g. ``{"onnx": "1.17.0"}``; stored
            under ``versions`` (merged over any ``versions`` already in ``data``).

    Returns:
        The manifest path. ``created_at`` (UTC ISO 8601, seconds) is added.

    Raises:
        TypeError: if a value is not JSON-serialisable.
    """
    record = dict(data)
    if versions is not None:
        record["versions"] = {**dict(record.get("versions", {})), **{k: str(v) for k, v in versions.items()}}
    record["created_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    text = json.dumps(record, sort_keys=True, indent=2, allow_nan=False) + "\n"
    out = atomic_write_bytes(path, text.encode("utf-8"))
    log.info("wrote manifest %s", out)
    return out


def read_manifest(path: str | Path, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a manifest written by :func:`write_manifest`.

    Args:
        path: the manifest ``.json`` file.
        required: top-level keys that must be present.

    Returns:
        The manifest as a dict.

    Raises:
        ManifestError: if the file is missing or unreadable, not valid JSON, not a JSON object, or
            lacks one of ``required``; the message names the path.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ManifestError(f"manifest not found: {path}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"manifest {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ManifestError(f"manifest {path} must hold a JSON object, got {type(data).__name__}")
    missing = [key for key in required if key not in data]
    if missing:
        raise ManifestError(f"manifest {path} lacks required field(s) {missing}")
    return data

