"""`sarde bench` on CPU with tiny settings: it runs the real models and daemon and writes every key."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from export.backends import bench_backends
from pipeline.bench import END_TO_END_DEFINITION, _percentile, format_table, run_bench
from pipeline.config import load_config
from pipeline.default_model import resolve_models

ROOT = Path(__file__).resolve().parents[1]


def _cfg(shared_dir, artifact_cache, tmp_path):
    overrides = {
        "paths": {"data_dir": str(shared_dir / "data"), "pose_model_dir": str(shared_dir / "models" / "pose"),
                  "artifact_dir": str(artifact_cache)},
        "transport": {"frames_endpoint": f"ipc://{tmp_path}/frames.sock"},
        "recognizer": {"stride": 4, "min_frames": 4},  # windows (and so events) within a few frames
    }
    return resolve_models(load_config(ROOT / "configs" / "default.yaml", overrides), progress=False)


@pytest.mark.usefixtures("default_model")
def test_bench_tiny_cpu_run_has_every_key(shared_dir, artifact_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("SARDE_FORCE_CPU", "1")
    cfg = _cfg(shared_dir, artifact_cache, tmp_path)
    result = run_bench(cfg, repeats=1, cameras=(1,), frames_per_camera=12, batches=(1, 2),
                       backends=("torch_eager_cpu", "onnxruntime_cpu"))
    json.dumps(result, allow_nan=False)  # JSON-able
    for key in ("onnxruntime", "numpy", "platform", "cpu_count", "torch", "tensorrt", "load_average_1m"):
        assert key in result["machine"]
    det = result["detector"]
    assert det["input_size"] == [432, 368]
    assert det["engine_batch1"]["per_s"] > 0 and det["engine_plus_grouping_batch1"]["repeats"] == 1
    assert set(result["recognizer"]) >= {"batch1", "batch2", "providers", "model_id"}
    bk = result["backends"]
    assert set(bk["results"]) == {"torch_eager_cpu", "onnxruntime_cpu"}
    assert bk["ratios_vs_torch_eager_cpu"]["torch_eager_cpu"]["batch1"] == 1.0
    assert bk["ratios_vs_torch_eager_cpu"]["onnxruntime_cpu"]["batch2"] > 0
    assert "tensorrt_native" in bk["skipped"]  # CPU here: every GPU backend is named as skipped
    (row,) = result["end_to_end"]
    assert row["cameras"] == 1 and row["frames"] >= 12 and row["frames_per_s"] > 0
    assert row["frames_per_s"] == pytest.approx(row["frames"] / row["seconds"])
    assert row["definition"] == END_TO_END_DEFINITION and "Stage.run" in row["definition"]
    assert row["heavy_modules_loaded"] == []  # measured in a fresh process: the daemon's own memory, no torch
    assert "reached the detector" in row["definition"]
    assert row["mean_detector_batch"] >= 1
    assert 0 < row["ratio_to_detector_only"] and row["daemon_overhead"] == pytest.approx(1 - row["ratio_to_detector_only"])
    assert set(row["event_latency_ms"]) == {"p50", "p99", "samples"}
    parts = row["breakdown"]
    assert set(parts) == {"detector_engine", "paf_grouping", "tracking_windows", "recognizer", "events_out"}
    # the detector runs on one thread: its time per frame is a real part of, and at most about, the frame period
    assert 0.2 / row["frames_per_s"] * 1000 < parts["detector_engine"]["ms_per_frame"] < 1.5 / row["frames_per_s"] * 1000
    assert all(0 <= v["share_of_wall"] <= 2 for v in parts.values())
    assert "arena_" in "".join(det)  # the detector with onnxruntime's CPU arena the other way, side by side
    mem = row["memory_mb"]
    assert mem["stage_end"] > 0 and mem["reader_per_camera"] > 0
    assert mem["ring_buffer_per_track_kib"] == pytest.approx((150 * 18 * 3 * 4 + 150 * 16) / 1024, rel=0.01)
    text = format_table(result)
    assert "end to end, 1 camera(s)" in text and "onnxruntime_cpu" in text and "where the time goes" in text


def test_bench_backends_without_checkpoint_skips_torch(tmp_path, default_model):
    """A manifest whose checkpoint cannot be found still benchmarks onnxruntime and says why torch is absent."""
    m = json.loads(Path(default_model).read_text())
    (tmp_path / "sarde.onnx").write_bytes((Path(default_model).parent / m["onnx"]).read_bytes())
    m["source"] = {"checkpoint": str(tmp_path / "missing.pt")}
    (tmp_path / "sarde.json").write_text(json.dumps(m))
    out = bench_backends(tmp_path / "sarde.json", repeats=1, batches=(1,))
    assert "onnxruntime_cpu" in out["results"] and "torch_eager_cpu" not in out["results"]
    assert "checkpoint" in out["skipped"]["torch_eager_cpu"]


def test_percentile():
    assert _percentile([], 50) is None
    assert _percentile([1.0, 2.0, 3.0], 50) == 2.0
