"""`sarde eval data` on a user's own generic .npz, and `sarde train` on a recipe of generic data only:
labels from the data, grouped splits, held-out figures in the report, the checkpoint and the exported manifest."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.datasets.generic import save_npz  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _sarde(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900, cwd=ROOT)


@pytest.fixture(scope="module")
def own_npz(shared_dir, tmp_path_factory) -> Path:
    """Three UTD-MHAD actions (wave, jog, squat) of all 8 subjects as a user's generic .npz, labels renamed."""
    from engines.datasets.utd import load_utd_mhad

    seqs = load_utd_mhad(shared_dir / "data", actions=(3, 22, 27))
    names = {"wave": "greeting", "jog": "running", "squat": "exercise"}
    for s in seqs:
        s.label, s.subject = names[s.label], f"person{s.subject}"
    return save_npz(tmp_path_factory.mktemp("own") / "site.npz", seqs)


def test_eval_data_folds_grouped_with_report_and_deployable_checkpoint(own_npz, tmp_path, shared_dir, artifact_cache,
                                                                      detector_onnx):
    out = tmp_path / "ev"
    r = _sarde("eval", "data", "--data", own_npz, "--folds", "2", "--quick", "--no-progress", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    assert s["labels"] == ["exercise", "greeting", "running"]  # from the data, not SBU / MSR's
    tests = [set(run["split"]["test_groups"]) for run in s["runs"]]
    assert len(tests) == 2 and not tests[0] & tests[1] and tests[0] | tests[1] == {f"person{k}" for k in range(1, 9)}
    conf = np.asarray(s["confusion"])
    assert conf.shape == (3, 3) and conf.sum() == sum(run["n_test"] for run in s["runs"])
    assert s["pooled_top1"] == pytest.approx(np.trace(conf) / conf.sum())
    assert "Pooled top-1" in r.stdout and "| exercise |" in r.stdout
    fold = json.loads((out / "fold1" / "result.json").read_text())
    assert fold["split"]["test_groups"] == s["runs"][0]["split"]["test_groups"] and "per_class" in fold
    info = json.loads((out / "fold1" / "model.json").read_text())
    assert info["labels"] == s["labels"] and info["metrics"]["fold1"]["top1"] == fold["top1"]
    assert info["splits"]["fold1"]["test_groups"] == fold["split"]["test_groups"]
    # exported, the daemon model's manifest carries the held-out top-1 and the split
    r = _sarde("export", "recognizer", "--checkpoint", out / "fold1" / "model.pt", "--out", tmp_path / "model")
    assert r.returncode == 0, r.stderr[-2000:]
    manifest = json.loads((tmp_path / "model" / "sarde.json").read_text())
    assert manifest["heldout"] == {"fold1": fold["top1"]} and manifest["labels"] == s["labels"]
    assert manifest["splits"]["fold1"]["test_groups"] == fold["split"]["test_groups"]
    # and the daemon runs it on a real clip: every window's scores over the user's labels on stderr
    cfg = (ROOT / "configs" / "own-model.example.yaml").read_text().replace(
        "~/sarde-own/model/sarde.json", str(tmp_path / "model" / "sarde.json")).replace(
        "artifacts/own-events.db", str(tmp_path / "ev.db"))
    cfg += (f"paths: {{data_dir: '{shared_dir / 'data'}', pose_model_dir: '{shared_dir / 'models' / 'pose'}', "
            f"artifact_dir: '{artifact_cache}'}}\ntransport: {{frames_endpoint: 'ipc://{tmp_path}/f.sock'}}\n"
            "metrics: {enabled: false}\n")
    (tmp_path / "cfg.yaml").write_text(cfg)
    r = _sarde("run", "--config", tmp_path / "cfg.yaml", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    scores = [line for line in r.stderr.splitlines() if "pipeline.scores" in line]
    assert scores and all(name in scores[-1] for name in s["labels"]), r.stderr[-2000:]
    assert all(line.startswith("{") for line in r.stdout.splitlines())  # stdout: event JSON only


def test_train_recipe_of_generic_data_only_never_reads_sbu_or_msr(own_npz, tmp_path):
    """A recipe listing only the user's file trains with the data's labels; the data folder is empty, so
    any built-in reader would fail."""
    from engines.sarde.train import train

    recipe = {"name": "site", "window": {"num_frames": 150, "num_persons": 2, "fps": 15.0},
              "datasets": [{"name": "site", "reader": "npz", "files": [str(own_npz)], "repeat": 2,
                            "test": {"subjects": ["person2", "person4"]}}],
              "model": {"depth_width": 0.125, "blocks": [[8, 2], [8, 2]]}, "pretrain_depth": {"epochs": 1},
              "train": {"epochs": 1, "batch_size": 8}}
    empty = tmp_path / "no-data"
    empty.mkdir()
    ckpt = train(recipe, empty, tmp_path / "out", progress=False, max_steps=3)
    info = json.loads((ckpt.parent / "model.json").read_text())
    assert info["labels"] == ["exercise", "greeting", "running"]
    assert list(info["trained_on"]) == ["site"] and info["trained_on"]["site"]["repeat"] == 2
    assert info["metrics"]["site"]["n"] == 24 and info["metrics"]["site"]["top1"] is not None  # 2 subjects x 3 x 4


@pytest.mark.parametrize("extra, needle", [
    ([], "exactly one of"),
    (["--test-groups", "person9"], "person9"),
    (["--folds", "9"], "8 groups cannot make 9 folds"),
    (["--folds", "2", "--recipe", "{tmp}/bad.yaml"], "epoch"),
    (["--folds", "2", "--data", "{tmp}/missing.npz"], "no such file"),
])
def test_eval_data_errors_exit_2_with_one_line(own_npz, tmp_path, extra, needle):
    (tmp_path / "bad.yaml").write_text("train: {epoch: 3}\n")
    args = [a.format(tmp=tmp_path) for a in extra]
    r = _sarde("eval", "data", "--data", own_npz, *args, "--out", tmp_path / "ev")
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("sarde: error:") and needle in last and "Traceback" not in r.stderr
