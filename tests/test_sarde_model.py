"""SARDE graph, modules, losses, training windows and a training smoke test."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.datasets import SkeletonSequence  # noqa: E402
from engines.layouts import COCO18_CENTER  # noqa: E402
from engines.sarde.data import Augment, WindowDataset, collate, make_window  # noqa: E402
from engines.sarde.graph import spatial_adjacency  # noqa: E402
from engines.sarde.losses import multitask_loss, recognition_loss, scale_invariant_depth_loss  # noqa: E402
from engines.sarde.models import DepthGCN, SardeNet  # noqa: E402

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"
needs_data = pytest.mark.skipif(not (DATA / "skeletons").is_dir(), reason="shared data not available")
SMALL = dict(depth_width=0.125, blocks=((16, 2), (16, 1), (32, 2)))


def _seq(length=30, fps=15.0, persons=1, depth=True) -> SkeletonSequence:
    rng = np.random.default_rng(length)
    kp = np.zeros((length, persons, 18, 3), np.float32)
    kp[..., 0] = rng.uniform(200, 400, kp.shape[:3])
    kp[..., 1] = rng.uniform(100, 400, kp.shape[:3])
    kp[..., 2] = 1.0
    d = np.full(kp.shape[:3], 2.5, np.float32) if depth else None
    return SkeletonSequence("synthetic", kp, (640, 480), fps, d, "approaching", 1)


# --- graph -------------------------------------------------------------------------------------------

def test_spatial_adjacency():
    a = spatial_adjacency()
    assert a.shape == (3, 18, 18) and a.dtype == np.float32
    total = a.sum(0)
    np.testing.assert_allclose(total, total.T, atol=1e-6)  # Σ_k A_k = Λ^-1/2 A Λ^-1/2 is symmetric
    assert np.all(np.diag(a[0]) > 0)  # every joint is in its own root subset
    assert a[1][:, COCO18_CENTER].sum() == 0  # the neck has no neighbour closer to itself
    deg = (total > 0).sum(1)
    np.testing.assert_allclose(total[0, 1], 1 / np.sqrt(deg[0] * deg[1]), rtol=1e-6)  # nose-neck


# --- modules -----------------------------------------------------------------------------------------

def test_depth_gcn_shapes_and_width():
    net = DepthGCN(width=0.25).eval()
    out = net(torch.randn(4, 2, 10, 18))
    assert out.shape == (4, 10, 18) and bool((out > 0).all())
    assert sum(p.numel() for p in DepthGCN(width=1.0).parameters()) > 8 * sum(p.numel() for p in net.parameters())
    # per-frame network: frame t's depth depends on frame t only
    x = torch.randn(1, 2, 5, 18)
    y = x.clone()
    y[:, :, 3] += 1
    d = net(x) - net(y)
    assert torch.all(d[:, [0, 1, 2, 4]] == 0) and d[:, 3].abs().max() > 0


def test_sardenet_shapes_masking_and_crop_invariance():
    torch.manual_seed(0)
    net = SardeNet(9, **SMALL)
    x = torch.zeros(3, 3, 150, 18, 2)
    x[:, :2, 40:70] = torch.randn(3, 2, 30, 18, 2) * 0.3
    x[:, 2, 40:70] = 1.0
    x[1, :, :, :, 1] = 0  # one person only
    x[2, :, 40:70, 5] = 0  # a missing joint
    net.train()
    for _ in range(2):
        net.logits(x)  # non-trivial BatchNorm statistics
    net.eval()
    with torch.no_grad():
        scores, depth = net(x)
        assert scores.shape == (3, 9) and depth.shape == (3, 150, 18, 2)
        torch.testing.assert_close(scores.sum(1), torch.ones(3))
        assert torch.all(depth[:, :40] == 0) and torch.all(depth[1, :, :, 1] == 0) and torch.all(depth[2, :, 5] == 0)
        assert torch.all(depth[0, 40:70] > 0)
        # a cut starting at a multiple of the temporal stride holding all skeletons: same outputs
        cut_scores, cut_depth = net(x[:, :, 40:72])
        torch.testing.assert_close(cut_scores, scores, atol=1e-6, rtol=0)
        torch.testing.assert_close(cut_depth[:, :30], depth[:, 40:70])
        # garbage (x, y) of missing joints does not reach the recogniser
        y = x.clone()
        y[2, :2, 40:70, 5] = 5.0
        torch.testing.assert_close(net(y)[0], scores)
    logits, depth_train = net.train().logits(x)
    assert logits.shape == (3, 9) and depth_train.shape == (3, 150, 18, 2)


def test_use_score_flag_changes_input_channels():
    net = SardeNet(4, use_score=True, **SMALL).eval()
    assert net.recognizer.data_bn.num_features == 4 * 18
    with torch.no_grad():
        assert net(torch.rand(2, 3, 150, 18, 2))[0].shape == (2, 4)


# --- losses ------------------------------------------------------------------------------------------

def test_scale_invariant_loss():
    target = torch.rand(2, 20, 18, 2) + 2.0
    zero, has = scale_invariant_depth_loss(target, target)
    assert torch.all(has) and torch.allclose(zero, torch.zeros(2), atol=1e-7)
    pred = target * torch.exp(0.1 * torch.randn_like(target))
    base, _ = scale_invariant_depth_loss(pred, target, lam=1.0)
    scaled, _ = scale_invariant_depth_loss(1.7 * pred, target, lam=1.0)
    torch.testing.assert_close(scaled, base, atol=1e-6, rtol=1e-4)
    half, _ = scale_invariant_depth_loss(1.7 * pred, target, lam=0.5)
    assert torch.all(half > base)  # λ = 0.5 still penalises a wrong global scale
    # joints without ground truth (0) are ignored, whatever is predicted there
    masked_target = target.clone()
    masked_target[:, :, :5] = 0
    wild = pred.clone()
    wild[:, :, :5] = 100.0
    a, _ = scale_invariant_depth_loss(pred, masked_target)
    b, _ = scale_invariant_depth_loss(wild, masked_target)
    torch.testing.assert_close(a, b)
    none, has_none = scale_invariant_depth_loss(pred, torch.zeros_like(target))
    assert not has_none.any() and torch.all(none == 0)


def test_multitask_loss_routes_supervision():
    logits = torch.randn(4, 3, requires_grad=True)
    depth = (torch.rand(4, 5, 18, 2) + 2).requires_grad_()
    target = torch.zeros(4, 5, 18, 2)
    target[2:] = 2.5  # samples 2, 3 have depth ground truth
    labels = torch.tensor([0, 1, -1, -1])  # samples 0, 1 have labels
    total, parts = multitask_loss(logits, depth, labels, target, alpha=0.97)
    ce, _ = recognition_loss(logits[:2], labels[:2])
    li, _ = scale_invariant_depth_loss(depth[2:], target[2:])
    torch.testing.assert_close(total, 0.97 * li.mean() + 0.03 * ce.mean())
    total.backward()
    assert torch.all(logits.grad[2:] == 0) and torch.all(depth.grad[:2] == 0)
    assert logits.grad[:2].abs().sum() > 0 and depth.grad[2:].abs().sum() > 0


# --- training windows --------------------------------------------------------------------------------

def test_window_keeps_action_duration_and_varies_offset():
    seq = _seq(30, fps=15.0)
    spans = set()
    for seed in range(8):
        win, depth, (a, b) = make_window(seq, 150, 2, 15.0, np.random.default_rng(seed), Augment(speed=0.0))
        assert b - a == 30  # not stretched to 150
        assert win.shape == (3, 150, 18, 2) and depth.shape == (150, 18, 2)
        occupied = np.flatnonzero(win[2].max(axis=(1, 2)) > 0)
        assert occupied.min() >= a and occupied.max() < b
        assert np.all(win[:, :, :, 1] == 0)  # single person: person 2 is zero
        assert np.all(depth[:a] == 0) and np.all(depth[b:] == 0)
        assert np.all((depth[a:b, :, 0] > 0) == (win[2, a:b, :, 0] > 0))  # depth where a joint is kept
        spans.add(a)
    assert len(spans) > 4
    # a 30 fps recording is resampled to the model's 15 fps: 60 frames -> 30
    _, _, (a, b) = make_window(_seq(60, fps=30.0), 150, 2, 15.0)
    assert b - a == 30
    # deterministic windows are the daemon's normalisation exactly
    from engines.skeleton import normalize_keypoints, to_window
    win, _, (a, _) = make_window(seq, 150, 2, 15.0)
    np.testing.assert_array_equal(win, to_window(normalize_keypoints(seq.keypoints, (640, 480)), 150, 2, a))


def test_augmentation_is_detector_like():
    seq = _seq(40, persons=2)
    win, depth, (a, b) = make_window(seq, 150, 2, 15.0, np.random.default_rng(1), Augment(drop=0.2, speed=0.0))
    scores = win[2, a:b]
    assert 0.1 < np.mean(scores == 0) < 0.35  # dropped joints
    assert np.all(depth[a:b][scores == 0] == 0)
    assert np.any((scores > 0) & (scores < 0.5))  # low scores
    ref, _, _ = make_window(seq, 150, 2, 15.0)
    assert not np.allclose(win[:2, a:b], ref[:2, (150 - 40) // 2:(150 - 40) // 2 + 40])


def test_dataset_and_collate_crop():
    ds = WindowDataset([_seq(30), _seq(45, persons=2, depth=False)], ["approaching", "other"],
                       augment=Augment(), seed=3)
    items = [ds[0], ds[1]]
    assert items[0]["label"] == 0 and items[0]["window"].shape == (3, 150, 18, 2)
    full = collate(items)
    cut = collate(items, crop_stride=8)
    assert full["window"].shape[2] == 150
    length = cut["window"].shape[2]
    assert length % 8 == 0 and length < 150
    for i in range(2):
        a, b = items[i]["span"].tolist()
        ca, cb = cut["span"][i].tolist()
        assert cb - ca == b - a
        torch.testing.assert_close(cut["window"][i, :, ca:cb], full["window"][i, :, a:b])
        torch.testing.assert_close(cut["depth"][i, ca:cb], full["depth"][i, a:b])


# --- training ----------------------------------------------------------------------------------------

@needs_data
def test_training_steps_reduce_loss_on_real_windows(real_training_batch, fit_steps):
    labels, batch = real_training_batch(4)
    torch.manual_seed(0)
    net = SardeNet(len(labels), **SMALL)
    steps = fit_steps(net, batch)
    losses = [loss for loss, _ in steps]
    assert losses[-1] < 0.7 * losses[0]


@needs_data
def test_train_command_writes_checkpoint(tmp_path):
    from engines.sarde.train import train

    recipe = {
        "labels": ["approaching", "departing", "kicking", "punching", "pushing", "hugging", "shaking_hands",
                   "exchanging", "other"],
        "datasets": [{"name": "sbu", "reader": "sbu", "test": {"sbu_fold": 1}},
                     {"name": "msr", "reader": "msr", "label_map": {"*": "other"}, "depth": True,
                      "test": {"subjects": [2, 4, 6, 8, 10]}}],
        "model": {"depth_width": 0.125, "blocks": [[8, 2], [8, 2]]},
        "pretrain_depth": {"epochs": 1, "batch_frames": 2048},
        "train": {"epochs": 1, "batch_size": 32},
    }
    ckpt = train(recipe, DATA, tmp_path, progress=False, max_steps=3)
    info = json.loads((tmp_path / "model.json").read_text())
    assert info["steps"] == 3 and info["labels"][-1] == "other"
    assert {k: (v["train_sequences"], v["test_sequences"]) for k, v in info["splits"].items()} == {
        "sbu": (227, 55), "msr": (291, 275)}
    assert 0 <= info["metrics"]["sbu"]["top1"] <= 1 and info["metrics"]["msr"]["depth_abs_mm"] > 0
    state = torch.load(ckpt, weights_only=True)
    net = SardeNet(9, depth_width=0.125, blocks=((8, 2), (8, 2)))
    net.load_state_dict(state)
    assert np.load(tmp_path / "parity_windows.npy").shape[1:] == (3, 150, 18, 2)


def test_person_frame_input_is_scale_and_position_invariant():
    """recognizer_input 'person': the same motion at another size / place in the image scores the same."""
    net = SardeNet(4, depth_width=0.125, blocks=((8, 2), (8, 2)), recognizer_input="person",
                   depth_mode="none").eval()
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(2, 3, 150, 18, 2)
    x[:, :2, 90:] = torch.randn(2, 2, 60, 18, 2, generator=g) * 0.1
    x[:, 2, 90:] = 0.9
    x[1, :, :, :, 1] = 0  # second sample: one person
    y = x.clone()
    y[:, :2] = (y[:, :2] * 0.25 + torch.tensor([0.3, -0.2]).view(1, 2, 1, 1, 1)) * (y[:, 2:3] > 0)
    z = x.clone()
    z[:, :2, 90:] = torch.randn(2, 2, 60, 18, 2, generator=g) * 0.1 * (z[:, 2:3, 90:] > 0)
    with torch.no_grad():
        lx, ly, lz = net.logits(x)[0], net.logits(y)[0], net.logits(z)[0]
    invariance, motion = float((lx - ly).abs().max()), float((lx - lz).abs().max())
    assert invariance < 1e-5 and motion > 20 * invariance, (invariance, motion)  # other motion: other scores


def test_balanced_class_weights_count_repeats():
    from engines.datasets import SkeletonSequence
    from engines.sarde.data import WindowDataset
    from engines.sarde.train import balanced_class_weights

    def seq(label):
        return SkeletonSequence(name=label, keypoints=np.zeros((5, 1, 18, 3), np.float32), frame_size=(640, 480),
                                fps=15.0, label=label)

    a = WindowDataset([seq("normal")] * 16 + [seq("fighting")] * 4, ["fighting", "normal", "falling"])
    b = WindowDataset([seq("fighting")] * 4, ["fighting", "normal", "falling"])
    w = balanced_class_weights(torch.utils.data.ConcatDataset([a, b]), 3)
    np.testing.assert_allclose(w.numpy(), [np.sqrt(2.0), 1.0, 1.0], rtol=1e-6)  # 8 fighting vs 16 normal
