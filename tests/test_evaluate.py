"""`sarde eval` (engines.sarde.evaluate and its parts: recipes, protocols, metrics), the ablation model
variants, the inception depth network and its ONNX export, resumable training."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.datasets import SkeletonSequence  # noqa: E402
from engines.sarde.data import WindowDataset  # noqa: E402
from engines.sarde.datasets import RecipeError  # noqa: E402
from engines.sarde.evaluate import main, suite_runs  # noqa: E402
from engines.sarde.metrics import classification_metrics, heldout_metrics  # noqa: E402
from engines.sarde.protocols import daemon_window  # noqa: E402
from engines.sarde.recipes import EXPERIMENTS, build_recipe  # noqa: E402
from engines.sarde.losses import mse_depth_loss, multitask_loss  # noqa: E402
from engines.sarde.architectures import build_model  # noqa: E402
from engines.sarde.models import InceptionDepthGCN, SardeNet  # noqa: E402
from engines.skeleton import normalize_keypoints, to_window  # noqa: E402

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"
needs_data = pytest.mark.skipif(not (DATA / "skeletons").is_dir(), reason="shared data not available")
TINY = {"depth_width": 0.125, "blocks": [[8, 2], [8, 2]]}


def _seq(length=30, fps=15.0, label="a", seed=0) -> SkeletonSequence:
    rng = np.random.default_rng(seed)
    kp = np.zeros((length, 1, 18, 3), np.float32)
    kp[..., 0] = rng.uniform(100, 200, kp.shape[:3])
    kp[..., 1] = rng.uniform(50, 200, kp.shape[:3])
    kp[..., 2] = 1.0
    depth = rng.uniform(2.0, 3.0, kp.shape[:3]).astype(np.float32)
    return SkeletonSequence(f"s{seed}", kp, (320, 240), fps, depth, label, 1)


def test_recipes_and_suites_resolve():
    r = build_recipe("msr-as1", "oracle")
    assert r["model"]["depth_mode"] == "oracle" and r["train"]["alpha"] == 0.97 and r["dataset"] == "msr"
    q = build_recipe("sbu-f3", "inception", quick=True, epochs=2)
    assert q["model"]["depth_net"] == "inception" and q["train"]["epochs"] == 2 and q["quick"]["max_steps"] == 3
    runs = suite_runs("all")
    assert ("msr-as1", "2d", 0) in runs and ("utd-xsub", "oracle", 2) in runs and len(runs) == len(set(runs))
    assert ("sbu-f1", "2d", None) in runs and ("utd-xsub", "series-e60", None) in runs
    assert suite_runs("best-utd") == [("utd-xsub", "series-e60", None)]
    assert ("sbu-f1", "inception", None) in runs  # no seeds listed: the recipe's seed
    for protocol, variant, _ in runs:  # every run of the full suite builds a model
        build_model(build_recipe(protocol, variant, quick=True)["model"], 8)
    with pytest.raises(KeyError):
        build_recipe("msr-as9", "series")


@pytest.mark.parametrize("override, key", [
    ({"epoch": 60}, "epoch"),                          # top level
    ({"train": {"epoch": 60}}, "epoch"),               # the example: would train the default 30 epochs
    ({"window": {"mask_joints": [14]}}, "mask_joints"),  # a daemon-model key protocol runs would ignore
    ({"data": {"repeats": 2}}, "repeats"),
    ({"quick": {"max_step": 3}}, "max_step"),
    ({"pretrain_depth": {"epoch": 2}}, "epoch"),
    ({"model": {"depth_widht": 0.5}}, "depth_widht"),
    ({"augment": {"mirrror": 0.5}}, "mirrror"),
])
def test_experiment_recipe_typos_rejected(tmp_path, override, key):
    """A typo in any section of a variant is a one-line RecipeError naming the key, not the default."""
    import shutil

    import yaml

    for f in EXPERIMENTS.glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    variants = yaml.safe_load((tmp_path / "variants.yaml").read_text())
    variants["typo"] = override
    (tmp_path / "variants.yaml").write_text(yaml.safe_dump(variants))
    build_recipe("sbu-f1", "series", tmp_path)  # the copied recipes themselves are valid
    with pytest.raises(RecipeError, match=key) as err:
        build_recipe("sbu-f1", "typo", tmp_path)
    assert "\n" not in str(err.value)


def test_daemon_window_is_right_aligned_daemon_layout():
    seq = _seq(40, fps=30.0)  # 30 fps -> 20 frames at 15 fps
    win, depth, (a, b) = daemon_window(seq, 150, 2, 15.0)
    assert (a, b) == (130, 150) and win.shape == (3, 150, 18, 2) and depth.shape == (150, 18, 2)
    idx = np.arange(20) * 2
    np.testing.assert_array_equal(win, to_window(normalize_keypoints(seq.keypoints[idx], (320, 240)), 150, 2))
    np.testing.assert_array_equal(depth[130:, :, 0], seq.depth[idx, 0])
    long_win, _, span = daemon_window(_seq(200), 150, 2, 15.0)  # the last 150 frames
    assert span == (0, 150)
    np.testing.assert_array_equal(long_win[:, -1, :, 0], normalize_keypoints(_seq(200).keypoints[-1, 0], (320, 240)).T)


def test_classification_metrics():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.1, 0.4], [0.1, 0.1, 0.8], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 2, 2, -1])
    m = classification_metrics(scores, labels, ["a", "b", "c"])
    assert m["n"] == 4 and m["top1"] == 0.75 and m["top5"] == 1.0
    assert m["per_class"] == {"a": 1.0, "b": 1.0, "c": 0.5}
    assert m["confusion"] == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]


def test_heldout_metrics():
    """model.json's per-dataset metrics: unlabelled windows count in n, predicted_other and would-be events."""
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.45, 0.1, 0.45], [0.1, 0.3, 0.6], [0.3, 0.3, 0.4]])
    labels = np.array([0, 1, 2, 0, -1])  # background "other" = class 2
    m = heldout_metrics(scores, labels, ["a", "b", "other"], "other")
    assert m["n"] == 5 and m["top1"] == 0.5  # rows 0, 1 right of 4 labelled
    assert m["top1_known"] == 0.5  # argmax over a, b: a, b, a, b -> rows 0, 1 right
    assert m["predicted_other"] == 2 / 5  # rows 3, 4 (row 2: a tie, the first class wins)
    assert m["confident_interaction"] == 2 / 5  # rows 0, 1 (row 2's 0.45 < 0.5)
    assert m["per_class"] == {"a": {"n": 2, "recall": 0.5}, "b": {"n": 1, "recall": 1.0},
                              "other": {"n": 1, "recall": 0.0}}
    assert heldout_metrics(scores, labels, ["a", "b", "c"], "other")["predicted_other"] is None


def test_variant_models():
    x = torch.zeros(2, 3, 16, 18, 2)
    x[:, :2] = torch.randn(2, 2, 16, 18, 2) * 0.3
    x[:, 2, :, :, 0] = 1.0
    gt = torch.full((2, 16, 18, 2), 2.5)
    flat = SardeNet(5, depth_mode="none", **{k: tuple(map(tuple, v)) if k == "blocks" else v for k, v in TINY.items()})
    assert flat.depth_net is None and flat.recognizer.data_bn.num_features == 2 * 18 and not flat.estimates_depth
    scores, depth = flat.eval()(x)
    assert scores.shape == (2, 5) and torch.all(depth == 0)
    oracle = build_model({**TINY, "depth_mode": "oracle"}, 5).eval()
    with pytest.raises(ValueError):
        oracle(x)
    _, d = oracle(x, gt)
    assert torch.all(d[..., 0] == 2.5) and torch.all(d[..., 1] == 0)  # masked where no joint
    with pytest.raises(ValueError):
        build_model({"depth_mode": "lidar"}, 5)
    # root-relative depth channel: a per-frame shift of every joint's depth changes nothing
    rel = build_model({**TINY, "depth_mode": "oracle", "depth_input": "root_relative"}, 5).eval()
    shifted = gt + torch.linspace(0, 1, 16)[None, :, None, None]
    torch.testing.assert_close(rel(x, shifted)[0], rel(x, gt)[0])
    assert not torch.allclose(oracle(x, shifted)[0], oracle(x, gt)[0])
    # plain-MSE depth loss (ablation)
    pred = torch.full((1, 4), 3.0)
    loss, has = mse_depth_loss(pred, torch.tensor([[2.0, 2.0, 0.0, 0.0]]))
    assert torch.allclose(loss, torch.tensor([1.0])) and bool(has[0])
    total, parts = multitask_loss(torch.zeros(1, 3), pred, torch.tensor([0]), torch.tensor([[2.0, 2.0, 0.0, 0.0]]),
                                  depth_loss="mse")
    assert abs(parts["L_I"] - 1.0) < 1e-6


def test_inception_depth_net_shapes_and_skips():
    net = InceptionDepthGCN().eval()
    out = net(torch.randn(3, 2, 7, 18))
    assert out.shape == (3, 7, 18) and bool((out > 0).all())
    assert len(net.blocks) == 3 and net.head[0].in_channels == 96  # 4 branches x 24 (Table 1)
    noskip = InceptionDepthGCN(skip=0).eval()
    noskip.load_state_dict(net.state_dict())  # skips add no parameters
    assert not torch.allclose(noskip(torch.ones(1, 2, 1, 18)), net(torch.ones(1, 2, 1, 18)))
    # per-frame: frame t's depth depends on frame t only
    x = torch.randn(1, 2, 4, 18)
    y = x.clone()
    y[:, :, 2] += 1
    d = net(x) - net(y)
    assert torch.all(d[:, [0, 1, 3]] == 0) and d[:, 2].abs().max() > 0


def test_inception_model_exports_to_onnx_with_parity(tmp_path):
    from export.sarde import export_sarde

    torch.manual_seed(0)
    recipe = {"model": {"depth_net": "inception", "inception_blocks": 2, "depth_width": 0.5,
                        "blocks": [[8, 2], [16, 2]]}, "window": {"num_frames": 32, "num_persons": 2, "fps": 15.0}}
    model = build_model(recipe["model"], 4)
    x = torch.rand(4, 3, 32, 18, 2)
    model.train()
    model.logits(x)  # non-trivial BatchNorm statistics
    ckpt = tmp_path / "model.pt"
    torch.save(model.state_dict(), ckpt)
    (tmp_path / "model.json").write_text(json.dumps({"recipe": recipe, "labels": ["a", "b", "c", "d"], "metrics": {}}))
    windows = np.zeros((3, 3, 32, 18, 2), np.float32)
    windows[:, :2, 4:28] = np.random.default_rng(0).normal(0, 0.3, (3, 2, 24, 18, 2))
    windows[:, 2, 4:28] = 1.0
    windows[1, :, :, :, 1] = 0
    manifest = json.loads(export_sarde(ckpt, tmp_path / "out", parity_windows=windows).read_text())
    assert manifest["T"] == 32
    for p in manifest["parity"].values() if isinstance(manifest["parity"], dict) else []:
        if isinstance(p, dict) and "scores_max_abs_diff" in p:
            assert p["scores_max_abs_diff"] <= 1e-4 and p["depth_max_abs_diff"] <= 1e-4
    import onnx

    ops = {n.op_type for n in onnx.load(str(tmp_path / "out" / "sarde.onnx")).graph.node}
    assert "MatMul" in ops and "Einsum" not in ops


def test_fit_resumes_from_checkpoint(tmp_path):
    from engines.sarde.train import fit

    seqs = [_seq(20, label="ab"[i % 2], seed=i) for i in range(8)]
    recipe = {"train": {"epochs": 3, "batch_size": 4}}

    class Interrupted(WindowDataset):
        def set_epoch(self, epoch):
            if epoch == 2:
                raise KeyboardInterrupt  # the process dies during epoch 3
            super().set_epoch(epoch)

    def run(ckpt_dir, cls=WindowDataset):
        torch.manual_seed(0)
        model = build_model(TINY, 2)
        ds = cls(seqs, ["a", "b"], augment=None, num_frames=32)
        return model, fit(model, ds, recipe, progress=False, checkpoint_dir=ckpt_dir)

    model_full, full = run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", Interrupted)
    assert torch.load(tmp_path / "cut" / "resume.pt", weights_only=True)["epoch"] == 2
    model_resumed, resumed = run(tmp_path / "cut")
    assert resumed["resumed_epoch"] == 2 and len(resumed["history"]) == 3 and resumed["steps"] == full["steps"]
    np.testing.assert_allclose([h["loss"] for h in resumed["history"]], [h["loss"] for h in full["history"]],
                               rtol=1e-5)
    for a, b in zip(model_full.state_dict().values(), model_resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


@needs_data
def test_sarde_eval_quick_end_to_end(tmp_path):
    rc = main(["--protocols", "sbu-f1", "--variants", "2d,series", "--quick", "--out", str(tmp_path),
               "--no-progress", "--threads", "1", "--device", "cpu"])
    assert rc == 0
    for variant in ("2d", "series"):
        run = tmp_path / "sbu-f1" / variant
        r = json.loads((run / "result.json").read_text())
        assert r["n_train"] == 32 and r["n_test"] == 16 and r["steps"] == 3
        assert 0 <= r["top1"] <= r["top5"] <= 1 and 0 <= r["daemon_top1"] <= 1
        assert len(r["per_class"]) == 8 and np.asarray(r["confusion"]).sum() == 16
        assert (run / "result.md").is_file() and (run / "model.pt").is_file() and (run / "resume.pt").is_file()
        if variant == "series":
            assert r["depth_rootrel_mm"] > 0 and 0 < r["depth_absrel"] < 1
        else:
            assert "depth_rootrel_mm" not in r
    summary = (tmp_path / "summary.md").read_text()
    assert "| sbu-f1 | 2d (quick) | 0 |" in summary and "| sbu-f1 | series (quick) | 0 |" in summary
    # an eval checkpoint exports to a daemon model (ONNX + manifest, parity-checked)
    from engines.manifest import read_manifest
    from export.sarde import export_sarde

    manifest = read_manifest(export_sarde(tmp_path / "sbu-f1" / "series" / "model.pt", tmp_path / "export"))
    assert manifest["labels"] == r["labels"] and manifest["T"] == 150 and manifest["M"] == 2
    assert manifest["heldout_metrics"]["sbu-f1"]["top1"] == r["top1"]
    # extra seeds run into their own folders
    main(["--protocols", "sbu-f1", "--variants", "2d", "--seeds", "0,1", "--quick", "--out", str(tmp_path),
          "--no-progress"])
    assert json.loads((tmp_path / "sbu-f1" / "2d-seed1" / "result.json").read_text())["seed"] == 1
    # finished runs are skipped, not retrained
    mtime = (tmp_path / "sbu-f1" / "2d" / "result.json").stat().st_mtime
    main(["--protocols", "sbu-f1", "--variants", "2d", "--quick", "--out", str(tmp_path), "--no-progress"])
    assert (tmp_path / "sbu-f1" / "2d" / "result.json").stat().st_mtime == mtime


def _fake_run(root: Path, protocol: str, variant: str, top1: float, seed: int = 0, **extra) -> None:
    run = root / protocol / (variant if seed == 0 else f"{variant}-seed{seed}")
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"protocol": protocol, "variant": variant, "seed": seed,
                                                 "top1": top1, "quick": False, **extra}))


def test_report_tables_gap_and_partial_means(tmp_path):
    from engines.sarde.report import load_results, render

    for k in range(1, 6):  # SBU: oracle 0.80, 2d 0.70, series 0.75 on every fold -> half the gap closed
        _fake_run(tmp_path, f"sbu-f{k}", "2d", 0.70)
        _fake_run(tmp_path, f"sbu-f{k}", "oracle", 0.80)
        _fake_run(tmp_path, f"sbu-f{k}", "series", 0.74, depth_rootrel_mm=60.0, depth_absrel=0.05)
        _fake_run(tmp_path, f"sbu-f{k}", "series", 0.76, seed=1, depth_rootrel_mm=70.0, depth_absrel=0.05)
    _fake_run(tmp_path, "sbu-f1", "mse", 0.90)  # one fold only: shown as partial, not closing the gap
    _fake_run(tmp_path, "msr-as1", "2d", 0.9)
    md, tables = render(load_results(tmp_path), EXPERIMENTS / "published.yaml")
    sbu = tables["sbu"]
    assert sbu["variants"]["series"]["mean"] == pytest.approx(0.75)
    assert sbu["gap"]["30 epochs"]["oracle_minus_2d"] == pytest.approx(0.10)
    assert sbu["gap"]["30 epochs"]["closed"] == {"series": pytest.approx(0.5)}
    assert "60 epochs" not in sbu["gap"]  # no -e60 runs: no line for them
    assert "| series | 75.0 ± 1.4 (2) |" in md and "(90.0, 1/5)" in md and "series 50 %" in md
    assert "| *published: HCN* |" in md and "98.60" in md
    assert tables["msr"]["gap"]["30 epochs"] is None and "needs 2d and oracle" in md
    assert not tables["utd"]["variants"] and "UTD-MHAD" not in md


@needs_data
def test_sarde_eval_under_torchrun_ddp_on_cpu(tmp_path):
    """Two processes, gloo backend: DDP wraps the model, each rank trains on its shard, rank 0 writes."""
    import subprocess
    import sys

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.is_file():
        pytest.skip("torchrun not installed beside this python")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "engines.sarde.evaluate",
                           "--protocols", "sbu-f1", "--variants", "series", "--quick", "--out", str(tmp_path),
                           "--no-progress", "--threads", "1", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stderr.count("engines.sarde.train INFO epoch 1:") == 2  # both ranks trained
    r = json.loads((tmp_path / "sbu-f1" / "series" / "result.json").read_text())
    assert r["steps"] >= 1 and (tmp_path / "sbu-f1" / "series" / "model.pt").is_file()


@needs_data
def test_a_run_another_process_trains_is_skipped(tmp_path):
    import fcntl

    from engines.sarde.evaluate import run_one

    run = tmp_path / "sbu-f1" / "2d"
    run.mkdir(parents=True)
    with open(run / ".lock", "w") as held:  # stands for a second `sarde eval` training this run
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert run_one("sbu-f1", "2d", DATA, tmp_path, quick=True, progress=False) == {}
    assert not (run / "result.json").exists()
    r = run_one("sbu-f1", "2d", DATA, tmp_path, quick=True, progress=False)  # lock released: it runs
    assert r["variant"] == "2d" and (run / "result.json").is_file()
