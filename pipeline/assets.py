"""Model artifacts the daemon needs, created on first use and cached under ``paths.artifact_dir``.

* Detector: the OpenPose-style weights in ``paths.pose_model_dir`` converted once to ONNX
  (``export.detector``); re-converted when the weights' sha256 changes.
* Recogniser: ``recognizer.model: default`` trains and exports the default SARDE model from the
  recipe in ``configs/models/`` (``engines.sarde.zoo``); otherwise a manifest path.

Conversion needs the ``export`` extra (tensorflow, tf2onnx) and training the ``train`` extra (torch);
both are imported only here and only when an artifact is missing.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from pipeline.config import Config

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The daemon cannot start; the message (one line) says what to fix."""


def detector_manifest(cfg: Config) -> Path:
    """Path of the detector's ONNX manifest, converting the weights first if needed.

    Raises:
        StartupError: weights missing, or conversion needed but the export extra is not installed.
    """
    weights = Path(cfg.detector.weights)
    if not weights.is_absolute():
        weights = cfg.paths.pose_model_dir / weights
    if not weights.is_file():
        raise StartupError(f"detector weights not found: {weights}; set paths.pose_model_dir / detector.weights to an existing .tflite file")
    from export.manifest import sha256_file

    out_dir = cfg.paths.artifact_dir / "detector"
    digest = sha256_file(weights)
    for manifest in sorted(out_dir.glob("*.json")):
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if manifest.stem == weights.stem and data.get("source_sha256") == digest and (manifest.parent / data.get("onnx", "")).is_file():
            return manifest
    log.info("converting detector %s to ONNX under %s (first use)", weights.name, out_dir)
    try:
        from export.detector import export_detector
        return export_detector(weights, out_dir)
    except ImportError as exc:
        raise StartupError(f"the detector must be converted once and that needs the export extra ({exc.name} missing): "
                           "pip install -e '.[export]' or run `sarde export detector` where it is installed") from exc


def recognizer_manifest(cfg: Config, progress: bool = True) -> Path:
    """Path of the fused-graph manifest; trains + exports the default model on first use.

    Raises:
        StartupError: a configured manifest is missing, or training is needed without torch.
    """
    if cfg.recognizer.model != "default":
        path = Path(cfg.recognizer.model)
        if not path.is_file():
            raise StartupError(f"recogniser manifest not found: {path}; set recognizer.model to a manifest written by `sarde export recognizer` or to 'default'")
        return path
    try:
        from engines.sarde.zoo import ensure_default_model
    except ImportError as exc:
        raise StartupError(f"the default recogniser is trained on first use and needs the train extra ({exc.name} missing): "
                           "pip install -e '.[train,export]'") from exc
    return ensure_default_model(cfg.paths.artifact_dir, cfg.paths.data_dir, progress=progress)
