"""Each seed model (issue 11) runs in the daemon from its exported ONNX graph on a real clip.

Per model: a short `sarde eval` run (quick recipe on SBU fold 1, the protocol's own split), the
export with its manifest and ONNX-vs-torch parity (`export.sarde`), then the daemon's own path
(`pipeline.video_eval.run_clips`: reader process, detector, tracking, windows, the exported graph,
events, journal) over the real NTU hugging clip with two people in view. The daemon must classify
windows with that model and journal events of its labels.
"""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from engines.sarde.evaluate import run_one  # noqa: E402
from export.sarde import export_sarde  # noqa: E402
from pipeline.clips import load_clip_list  # noqa: E402
from pipeline.video_eval import run_clips  # noqa: E402

SEED_VARIANTS = ("posec3d", "pham", "tarm", "deepactsnet")


@pytest.fixture(scope="module")
def hug_clip(shared_dir):
    from pathlib import Path

    clips = load_clip_list(Path(__file__).resolve().parents[1] / "configs" / "clips" / "hug.yaml", shared_dir / "data")
    return clips[:1]


@pytest.mark.parametrize("variant", SEED_VARIANTS)
def test_seed_model_runs_in_the_daemon(variant, tmp_path, shared_dir, default_cfg, detector_onnx, hug_clip):
    torch.set_num_threads(1)
    result = run_one("sbu-f1", variant, shared_dir / "data", tmp_path / "eval", quick=True, progress=False)
    assert result["n_test"] > 0 and 0.0 <= result["top1"] <= 1.0
    ckpt = tmp_path / "eval" / "sbu-f1" / variant / "model.pt"
    manifest_path = export_sarde(ckpt, tmp_path / "model")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["architecture"]["recognizer"] == variant
    assert max(max(p.values()) for k, p in manifest["parity"].items() if k.startswith("batch")) <= 1e-4
    cfg = default_cfg.model_copy(deep=True)
    cfg.events.end_threshold, cfg.events.threshold, cfg.events.smoothing = 0.005, 0.01, 1.0
    cfg.events.ignore_labels, cfg.events.alert_labels, cfg.events.pair_labels = [], None, []
    out = run_clips(cfg, hug_clip, manifest_path)
    res = out[hug_clip[0].clip_id]
    assert res["frames"] >= 30 and res["windows"] >= 1
    starts = [e for e in res["events"] if e["phase"] == "start"]
    assert starts, f"{variant}: the daemon classified {res['windows']} windows but journaled no event"
    assert all(e["label"] in manifest["labels"] and 0.0 < e["score"] <= 1.0 and e["model_id"] == manifest["model_id"]
               for e in starts)
