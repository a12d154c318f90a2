"""Static INT8 quantisation of the pose detector, and the gate that decides whether it may be used.

:func:`quantize_detector` takes a converted FP32 detector (its manifest, :mod:`export.detector`),
runs onnxruntime's pre-processing (shape inference, graph optimisation), calibrates activation
ranges on real letterboxed CCTV frames (MinMax) and writes a QDQ model: per-channel symmetric INT8
weights, per-tensor asymmetric UINT8 activations (``QuantizeLinear`` / ``DequantizeLinear`` pairs
that onnxruntime's CPU provider fuses into integer kernels: VNNI ``vpdpbusd`` where the CPU has it,
AVX2 ``vpmaddubsw`` otherwise). Then :func:`gate` compares what the daemon would conclude from the
two models on other real frames: the persons PAF grouping finds and their joints.

Frames (:func:`gate_frames`): the real CCTV clips of ``videos/fightsurv_dev`` split **by source
video** (sources ordered by the sha256 of their URL, alternately to calibration and to the gate: no
source on both sides), the middle frame of each clip, plus a fall clip and vtest's small walkers in
the gate and a daily-activity clip in the calibration.

The gate (:class:`GateThresholds`, config ``detector.int8_gate``): persons of the FP32 and INT8
outputs (``engines.pose.PoseDecoder`` with the daemon's settings) are matched per frame by the
Hungarian assignment (``scipy.optimize.linear_sum_assignment``) on the median pixel distance of their
common joints (a pair further apart than ``match_px`` is no match). It passes when the share of FP32
persons without an INT8 match (lost), the share of INT8 persons without an FP32 match (added) and the
median and 95th-percentile joint distance of matched persons (detector-input pixels; one heatmap cell
is 8 px) are all within their thresholds. The figures, thresholds and verdict go into the INT8
manifest (``gate``); :func:`pipeline.assets.detector_manifest` uses an INT8 model only if it passed.
Beside them the gate records, unjudged, the FP32 model against itself on the same frames re-encoded
as JPEG at quality 90 (``reference_jpeg90``): measured on dm10, that imperceptible re-compression
changes the persons found as much as INT8 does (28 % lost, median joint error 1.2 px), because
many CCTV persons sit at the PAF-grouping filter's edge (``min_parts`` 3, ``min_person_score`` 0.25).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from engines.manifest import sha256_file, write_manifest

log = logging.getLogger(__name__)

__all__ = ["GateThresholds", "gate", "gate_frames", "match_persons", "quantize_detector", "verdict"]

#: Extra clips (relative to the data dir) and frame indices: calibration / gate.
_EXTRA_CALIBRATION = (("videos/gmdcsa24_s1/ADL/10.mp4", (20, 60)),)
_EXTRA_GATE = (("videos/gmdcsa24_s1/Fall/13.mp4", (20, 60)), ("videos/vtest/vtest.avi", (100, 300, 500, 700)))


@dataclass(frozen=True)
class GateThresholds:
    """Largest accepted INT8-vs-FP32 disagreement (module docstring).

    Attributes:
        max_persons_lost: share of FP32 persons with no INT8 match.
        max_persons_added: share of INT8 persons with no FP32 match.
        max_median_joint_error_px: median joint distance of matched persons, detector-input pixels.
        max_p95_joint_error_px: 95th percentile of the same.
        match_px: persons whose common joints are further apart (median) than this are no match.
    """

    max_persons_lost: float = 0.05
    max_persons_added: float = 0.05
    max_median_joint_error_px: float = 1.5
    max_p95_joint_error_px: float = 6.0
    match_px: float = 16.0


def match_persons(a: np.ndarray, b: np.ndarray, match_px: float) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
    """Match the persons of two decodings of one frame.

    Args:
        a, b: ``(P, 18, 3)`` / ``(Q, 18, 3)`` float32 COCO-18 joints ``(x, y, score)`` in the same
            pixel frame; a joint with score 0 is absent.
        match_px: the largest median distance of common joints for a match, pixels.

    Returns:
        ``(pairs, errors)``: matched index pairs ``(i, j)`` and, per pair, the distances of their
        common joints (pixels).
    """
    from scipy.optimize import linear_sum_assignment

    if len(a) == 0 or len(b) == 0:
        return [], []
    cost = np.full((len(a), len(b)), 1e6)
    dists: dict[tuple[int, int], np.ndarray] = {}
    for i, pa in enumerate(a):
        for j, pb in enumerate(b):
            both = (pa[:, 2] > 0) & (pb[:, 2] > 0)
            if both.any():
                d = np.linalg.norm(pa[both, :2] - pb[both, :2], axis=1)
                dists[i, j] = d
                cost[i, j] = float(np.median(d))
    rows, cols = linear_sum_assignment(cost)
    pairs = [(int(i), int(j)) for i, j in zip(rows, cols) if cost[i, j] <= match_px]
    return pairs, [dists[p] for p in pairs]


def _disagreement(base: list[np.ndarray], other, frames, decoder, match_px: float) -> dict:
    """Persons and joints ``other`` finds on ``frames`` against ``base`` (the FP32 persons of each frame)."""
    n_a = n_b = n_m = 0
    errors: list[np.ndarray] = []
    for a, frame in zip(base, frames):
        b = decoder.decode(other.raw(frame[None])[0])
        pairs, d = match_persons(a, b, match_px)
        n_a, n_b, n_m = n_a + len(a), n_b + len(b), n_m + len(pairs)
        errors += d
    err = np.concatenate(errors) if errors else np.zeros(0)
    return {
        "frames": len(frames), "persons_fp32": n_a, "persons_int8": n_b, "matched": n_m,
        "persons_lost": round((n_a - n_m) / max(n_a, 1), 4),
        "persons_added": round((n_b - n_m) / max(n_b, 1), 4),
        "median_joint_error_px": round(float(np.median(err)), 3) if err.size else None,
        "p95_joint_error_px": round(float(np.percentile(err, 95)), 3) if err.size else None,
    }


def _jpeg90(x: np.ndarray) -> np.ndarray:
    import cv2

    return np.stack([cv2.imdecode(cv2.imencode(".jpg", f, [cv2.IMWRITE_JPEG_QUALITY, 90])[1], cv2.IMREAD_COLOR) for f in x])


def gate(fp32, int8, frames: list[np.ndarray], decoder, thresholds: GateThresholds) -> dict:
    """Compare two detectors on ``frames`` as the daemon would use them.

    Args:
        fp32, int8: :class:`engines.detector.PoseDetector` (``raw`` gives the network output).
        frames: ``(H, W, 3)`` uint8 BGR letterboxed frames at the detector input size.
        decoder: the daemon's :class:`engines.pose.PoseDecoder`.
        thresholds: the limits.

    Returns:
        ``{"passed": bool, "frames": int, "persons_fp32", "persons_int8", "matched", "persons_lost",
        "persons_added", "median_joint_error_px", "p95_joint_error_px", "thresholds": {...},
        "failed": [names of the figures over their limit], "reference_jpeg90": {...}}``.
        ``reference_jpeg90`` is not judged: the same figures for the FP32 model against itself on the
        frames re-encoded as JPEG at quality 90 (``persons_int8`` there counts the re-encoded frames'
        persons), the disagreement an imperceptible re-compression causes, to read the INT8 figures by.
    """
    base = [decoder.decode(fp32.raw(f[None])[0]) for f in frames]  # the FP32 persons, decoded once
    figures = _disagreement(base, int8, frames, decoder, thresholds.match_px)
    reference = _disagreement(base, fp32, [_jpeg90(f[None])[0] for f in frames], decoder, thresholds.match_px)
    return {**figures, **verdict(figures, thresholds), "reference_jpeg90": reference}


def verdict(figures: dict, thresholds: GateThresholds) -> dict:
    """``{"passed": bool, "failed": [figures over their limit], "thresholds": {...}}`` of the gate
    figures of :func:`gate` against ``thresholds`` (no persons at all fails: it proves nothing)."""
    t = thresholds
    failed = [name for name, value, limit in (
        ("persons_lost", figures["persons_lost"], t.max_persons_lost),
        ("persons_added", figures["persons_added"], t.max_persons_added),
        ("median_joint_error_px", figures["median_joint_error_px"], t.max_median_joint_error_px),
        ("p95_joint_error_px", figures["p95_joint_error_px"], t.max_p95_joint_error_px),
    ) if value is None or value > limit]
    if not figures["persons_fp32"]:
        failed.append("no_persons")
    return {"passed": not failed, "failed": failed, "thresholds": asdict(thresholds)}


def _read(path: Path, indices) -> list[np.ndarray]:
    import cv2

    cap = cv2.VideoCapture(str(path))
    out = []
    try:
        if indices is None:  # the middle frame
            indices = (max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) // 2),)
        for k in indices:
            cap.set(cv2.CAP_PROP_POS_FRAMES, k)
            ok, img = cap.read()
            if ok:
                out.append(img)
    finally:
        cap.release()
    return out


def gate_frames(data_dir: str | Path, size: tuple[int, int], calibration_max: int = 40,
                gate_max: int = 60) -> tuple[list[np.ndarray], list[np.ndarray], dict]:
    """Real letterboxed frames for calibration and for the gate, from disjoint source videos.

    Args:
        data_dir: the shared data folder (``videos/fightsurv_dev`` with ``sources.json``).
        size: ``(W, H)`` detector input, pixels.
        calibration_max, gate_max: most fightsurv clips on each side (evenly spread).

    Returns:
        ``(calibration, gate, provenance)``: lists of ``(H, W, 3)`` uint8 BGR frames, and a dict of
        the clips used on each side (for the manifest).

    Raises:
        FileNotFoundError: no ``videos/fightsurv_dev/sources.json`` under ``data_dir``.
    """
    from engines.letterbox import letterbox

    root = Path(data_dir)
    src_file = root / "videos" / "fightsurv_dev" / "sources.json"
    if not src_file.is_file():
        raise FileNotFoundError(f"{src_file} not found: INT8 calibration needs the real CCTV clips")
    sources: dict[str, str] = json.loads(src_file.read_text())
    order = sorted(set(sources.values()), key=lambda url: hashlib.sha256(url.encode()).hexdigest())
    side = {url: k % 2 for k, url in enumerate(order)}  # 0: calibration, 1: gate
    clips: list[list[Path]] = [[], []]
    for clip_id in sorted(sources):
        folder = "fight" if clip_id.startswith("fi") else "noFight"
        path = root / "videos" / "fightsurv_dev" / folder / f"{clip_id}.mp4"
        if path.is_file():
            clips[side[sources[clip_id]]].append(path)
    for k, most in enumerate((calibration_max, gate_max)):
        if len(clips[k]) > most:
            pick = np.linspace(0, len(clips[k]) - 1, most).round().astype(int)
            clips[k] = [clips[k][i] for i in pick]
    out: list[list[np.ndarray]] = [[], []]
    used: list[list[str]] = [[], []]
    for k, extra in enumerate((_EXTRA_CALIBRATION, _EXTRA_GATE)):
        items = [(p, None) for p in clips[k]] + [(root / rel, idx) for rel, idx in extra if (root / rel).is_file()]
        for path, idx in items:
            frames = _read(path, idx)
            out[k] += [letterbox(f, size)[0] for f in frames]
            if frames:
                used[k].append(path.relative_to(root).as_posix())
    provenance = {"split": "fightsurv_dev by source video (sha256 order, alternating)",
                  "calibration_clips": used[0], "gate_clips": used[1]}
    return out[0], out[1], provenance


def quantize_detector(fp32_manifest: str | Path, out_dir: str | Path, decoder, thresholds: GateThresholds,
                      data_dir: str | Path, providers=("cpu",), calibration: str = "minmax",
                      keep_float: tuple[str, ...] = (), extra: dict | None = None) -> Path:
    """INT8 QDQ model of an FP32 detector, calibrated and gated on real frames (module docstring).

    Args:
        fp32_manifest: the FP32 detector's manifest (:func:`export.detector.export_detector`).
        out_dir: folder for ``<fp32 name>_int8.onnx`` and its manifest (``.json``).
        decoder: the daemon's :class:`engines.pose.PoseDecoder` (the gate compares its persons).
        thresholds: the gate's limits.
        data_dir: the shared data folder (:func:`gate_frames`).
        providers: execution providers of the gate's two sessions.
        calibration: activation-range method, ``minmax``, ``percentile`` (99.999th) or ``entropy``.
        keep_float: regular expressions of node names left in float (not quantised).
        extra: more fields for the manifest (the caller's cache key).

    Returns:
        Path of the INT8 manifest: the FP32 manifest's fields with ``onnx`` / ``onnx_sha256`` of the
        INT8 graph, ``precision: "int8"``, ``fp32_onnx_sha256``, ``quantization`` (format, types,
        calibration method and clips) and ``gate`` (:func:`gate`'s result). Written whether the
        gate passed or not (the verdict is cached with it).

    Raises:
        FileNotFoundError: the manifest, its ONNX or the calibration clips are missing.
        ImportError: onnxruntime's quantisation tools or onnx are not installed.
    """
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from engines.detector import PoseDetector

    fp32_manifest = Path(fp32_manifest)
    meta = json.loads(fp32_manifest.read_text())
    src = fp32_manifest.parent / meta["onnx"]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = (int(meta["input_size"]["width"]), int(meta["input_size"]["height"]))
    frames_cal, gate_set, provenance = gate_frames(data_dir, size)
    if not frames_cal or not gate_set:
        raise FileNotFoundError(f"no calibration / gate frames could be read under {data_dir}")
    input_name = meta["input"]["name"]

    class _Frames(CalibrationDataReader):
        def __init__(self):
            self._it = iter(frames_cal)

        def get_next(self):
            f = next(self._it, None)
            return None if f is None else {input_name: f[None].astype(np.float32)}

    stem = Path(meta["onnx"]).stem + "_int8"
    pre, onnx_path = out_dir / f"{stem}.pre.onnx", out_dir / f"{stem}.onnx"
    t0 = time.perf_counter()
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    import re

    import onnx

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if calibration not in methods:
        raise ValueError(f"calibration {calibration!r}: use one of {sorted(methods)}")
    names = [n.name for n in onnx.load(str(pre), load_external_data=False).graph.node]
    exclude = [n for n in names if any(re.search(p, n) for p in keep_float)]
    quantize_static(str(pre), str(onnx_path), _Frames(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    calibrate_method=methods[calibration], nodes_to_exclude=exclude,
                    extra_options={"CalibPercentile": 99.999} if calibration == "percentile" else None)
    pre.unlink(missing_ok=True)
    seconds = round(time.perf_counter() - t0, 1)
    manifest = dict(meta, onnx=onnx_path.name, onnx_sha256=sha256_file(onnx_path), precision="int8",
                    fp32_onnx_sha256=meta["onnx_sha256"], fp32_manifest=fp32_manifest.name,
                    quantization={"format": "QDQ", "weights": "int8 per channel", "activations": "uint8 per tensor",
                                  "calibration": calibration, "calibration_frames": len(frames_cal),
                                  "kept_float": exclude,
                                  "seconds": seconds, **provenance})
    manifest.update(extra or {})
    manifest.pop("parity", None)  # the FP32 model's TFLite parity; the INT8 model is judged by its gate
    path = out_dir / f"{stem}.json"
    import onnxruntime

    versions = {"onnxruntime": onnxruntime.__version__}
    write_manifest(path, manifest, versions)
    result = gate(PoseDetector(fp32_manifest, providers=providers), PoseDetector(path, providers=providers),
                  gate_set, decoder, thresholds)
    manifest["gate"] = result
    write_manifest(path, manifest, versions)
    log.info("INT8 detector %s: gate %s (%s)", onnx_path.name, "passed" if result["passed"] else "FAILED",
             ", ".join(f"{k} {result[k]}" for k in ("persons_lost", "persons_added", "median_joint_error_px",
                                                    "p95_joint_error_px")))
    return path
