"""The INT8 detector and its gate against FP32, on real frames (CPU).

Measured on the shared dm10 weights (2-core AMD EPYC with AVX-512 VNNI): the INT8 QDQ model runs
2.0-2.7x faster per frame than FP32, but PAF grouping on its output misses about a quarter of the
persons FP32 finds on the gate's real CCTV frames, so the gate fails and the daemon keeps FP32. These
tests hold the gate to that: it must fail where INT8 loses persons, pass where nothing differs, and
its verdict (with the config's limits) decides which model the daemon loads.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from export.quantize import GateThresholds, gate, gate_frames, match_persons, verdict


def _person(x0: float, y0: float, score: float = 0.9) -> np.ndarray:
    p = np.zeros((18, 3), np.float32)
    p[:, 0], p[:, 1], p[:, 2] = x0 + np.arange(18), y0 + 5 * np.arange(18), score
    return p


def test_persons_are_matched_one_to_one_by_the_distance_of_common_joints():
    a = np.stack([_person(100, 50), _person(300, 60)])
    b = np.stack([_person(303, 64), _person(101, 50), _person(20, 20)])  # shuffled, 5 px and 1 px off, one extra
    b[1, 10:, 2] = 0  # joints INT8 did not find are not compared
    pairs, errors = match_persons(a, b, match_px=16.0)
    assert sorted(pairs) == [(0, 1), (1, 0)]
    by_pair = dict(zip(pairs, errors))
    assert np.allclose(by_pair[0, 1], 1.0) and len(by_pair[0, 1]) == 10
    assert np.allclose(by_pair[1, 0], 5.0) and len(by_pair[1, 0]) == 18
    assert match_persons(a, b[2:], match_px=16.0) == ([], [])  # too far apart: no match
    assert match_persons(a[:0], b, 16.0) == ([], [])


def test_verdict_names_every_figure_over_its_limit():
    t = GateThresholds()
    ok = {"persons_fp32": 97, "persons_lost": 0.02, "persons_added": 0.01, "median_joint_error_px": 0.5,
          "p95_joint_error_px": 3.0}
    assert verdict(ok, t)["passed"]
    bad = dict(ok, persons_lost=0.28, p95_joint_error_px=7.0)
    assert verdict(bad, t) == {"passed": False, "failed": ["persons_lost", "p95_joint_error_px"], "thresholds": verdict(ok, t)["thresholds"]}
    assert verdict(dict(ok, persons_fp32=0), t)["failed"] == ["no_persons"]


def test_calibration_and_gate_frames_come_from_different_source_videos(shared_dir):
    cal, gate_set, prov = gate_frames(shared_dir / "data", (432, 368))
    assert len(cal) >= 40 and len(gate_set) >= 60 and cal[0].shape == gate_set[0].shape == (368, 432, 3)
    sources = json.loads((shared_dir / "data" / "videos" / "fightsurv_dev" / "sources.json").read_text())
    src = lambda clips: {sources[Path(c).stem] for c in clips if "fightsurv_dev" in c}  # noqa: E731
    assert src(prov["calibration_clips"]) and src(prov["gate_clips"])
    assert not src(prov["calibration_clips"]) & src(prov["gate_clips"])


def test_the_gate_of_a_model_against_itself_is_exact(detector_onnx, shared_dir):
    from engines.detector import PoseDetector
    from engines.pose import PoseDecoder

    _, frames, _ = gate_frames(shared_dir / "data", (432, 368), gate_max=12)
    det = PoseDetector(detector_onnx, providers=("cpu",))
    g = gate(det, det, frames, PoseDecoder(min_parts=3, min_person_score=0.25), GateThresholds())
    assert g["passed"] and g["persons_fp32"] == g["persons_int8"] == g["matched"] > 5
    assert g["persons_lost"] == g["persons_added"] == 0 and g["median_joint_error_px"] == 0


def test_int8_detector_is_used_only_if_it_passes_its_gate(detector_onnx, shared_dir, tmp_path, caplog):
    """Quantise the real detector (calibrated on real CCTV frames), gate it on frames of other source
    videos: with the default limits it fails (INT8 loses persons) and the daemon gets the FP32 model;
    with limits loose enough for the measured figures the same cached model is used."""
    from pipeline.assets import detector_manifest
    from pipeline.config import Config

    art = tmp_path / "art"
    (art / "detector").mkdir(parents=True)
    for f in (detector_onnx, detector_onnx.with_suffix(".onnx")):
        shutil.copy(f, art / "detector" / f.name)
    cfg = Config.model_validate({"paths": {"data_dir": str(shared_dir / "data"), "pose_model_dir": str(shared_dir / "models" / "pose"),
                                           "artifact_dir": str(art)}, "detector": {"precision": "int8"}})
    chosen = detector_manifest(cfg)
    assert chosen == art / "detector" / detector_onnx.name  # FP32: the gate failed
    (int8,) = (art / "detector" / "int8").glob("*/*.json")
    m = json.loads(int8.read_text())
    g = m["gate"]
    assert m["precision"] == "int8" and m["fp32_onnx_sha256"] == json.loads(detector_onnx.read_text())["onnx_sha256"]
    assert m["quantization"]["format"] == "QDQ" and m["quantization"]["calibration_frames"] >= 40
    assert not g["passed"] and "persons_lost" in g["failed"] and g["persons_lost"] > 0.1, g  # measured 0.28
    assert g["frames"] >= 60 and g["persons_fp32"] > 50
    assert g["median_joint_error_px"] < 3.0  # the persons it keeps are where FP32 has them
    ref = g["reference_jpeg90"]  # FP32 against itself on JPEG-q90 re-encoded frames, for reading the figures
    assert ref["frames"] == g["frames"] and ref["persons_fp32"] == g["persons_fp32"] and 0 <= ref["persons_lost"] <= 1
    assert "failed its gate" in caplog.text

    loose = cfg.model_copy(update={"detector": cfg.detector.model_copy(update={"int8_gate": cfg.detector.int8_gate.model_copy(
        update={"max_persons_lost": 0.5, "max_persons_added": 0.5, "max_median_joint_error_px": 3.0, "max_p95_joint_error_px": 12.0})})})
    assert detector_manifest(loose) == int8  # the same cached model, now within the limits
    assert len(list((art / "detector" / "int8").glob("*/*.json"))) == 1

    from engines.detector import PoseDetector

    fp32, q = PoseDetector(chosen, providers=("cpu",)), PoseDetector(int8, providers=("cpu",))
    _, frames, _ = gate_frames(shared_dir / "data", (432, 368), gate_max=4)
    out32, out8 = fp32.raw(np.stack(frames[:2])), q.raw(np.stack(frames[:2]))
    assert out8.shape == out32.shape and np.abs(out8 - out32).mean() < 0.02  # a quantised copy, not another network
