"""Seed 001 (Pham et al.): the 2D -> 3D lifter front end and the Enhanced-SPMF + CNN back end."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from engines.layouts import COCO18_EDGES, NUM_JOINTS  # noqa: E402
from engines.sarde.architectures import build_model  # noqa: E402
from engines.seeds.pham import (  # noqa: E402
    SPMF_JOINT_ORDER, Lifter, SPMFNet, encode_spmf, enhance_contrast, spmf_image,
)

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"
needs_data = pytest.mark.skipif(not (DATA / "skeletons").is_dir(), reason="shared data not available")
MODEL = {"recognizer": "pham", "depth_net": "lifter", "depth_width": 0.25}
R = len(SPMF_JOINT_ORDER)


def _windows(n: int = 3, t: int = 150, start: int = 40, length: int = 40, seed: int = 0) -> torch.Tensor:
    """Synthetic ``(n, 3, t, 18, 2)`` windows: one skeleton span, a one-person window, a missing joint,
    the eyes and ears masked as in the default model."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, t, NUM_JOINTS, 2)
    x[:, :2, start:start + length] = torch.randn(n, 2, length, NUM_JOINTS, 2, generator=g) * 0.3
    x[:, 2, start:start + length] = 0.8
    x[:, :, :, 14:] = 0
    x[1, :, :, :, 1] = 0
    if n > 2:
        x[2, :, start:start + length, 5] = 0
    return x


# --- input conversion ----------------------------------------------------------------------------------

def test_joint_order_follows_bones():
    bones = {frozenset(e) for e in COCO18_EDGES}
    assert set(SPMF_JOINT_ORDER) == set(range(NUM_JOINTS)) and R == 2 * NUM_JOINTS - 1
    assert all(frozenset(p) in bones for p in zip(SPMF_JOINT_ORDER[:-1], SPMF_JOINT_ORDER[1:]))


def test_spmf_image_pixels_by_hand():
    """Span of exactly T' frames: sampled frame t is window frame 5 + t; min-max over valid joints only."""
    g = torch.Generator().manual_seed(1)
    tp, t0 = 32, 5
    x = torch.zeros(2, 3, 40, NUM_JOINTS)  # N=1, M=2; channels x, y, depth
    x[:, 0, t0:t0 + tp] = 0.2 + 0.6 * torch.rand(2, tp, NUM_JOINTS, generator=g)  # x in [0.2, 0.8]: 0 would be the min
    x[:, 1, t0:t0 + tp] = -0.5 + torch.rand(2, tp, NUM_JOINTS, generator=g)
    x[:, 2, t0:t0 + tp] = 2.0 + torch.rand(2, tp, NUM_JOINTS, generator=g)
    x[:, :, :, 14:] = 0  # masked joints
    x[1, :, t0 + 20:] = 0  # person 2 leaves early
    mask = (x.abs().amax(dim=(1, 3), keepdim=True) > 0).float()  # (2, 1, T, 1)
    image, valid = spmf_image(x, mask, ("x", "y", "depth"))
    assert image.shape == (1, 3, 2 * R, 2 * tp) and valid.shape == (1, 1, 2 * R, 2 * tp)

    xv = x[:, 0, t0:t0 + tp, :14].numpy()  # valid x values of both persons
    ok = xv != 0
    lo, hi = xv[ok].min(), xv[ok].max()
    row, frame = SPMF_JOINT_ORDER.index(4), 7  # right wrist of person 1, sampled frame 7 = window frame 12
    expect = (float(x[0, 0, t0 + frame, 4]) - lo) / (hi - lo)
    assert abs(float(image[0, 0, row, frame]) - expect) < 1e-6
    assert lo > 0.19  # the zeros of missing joints did not count
    # motion feature (G = y) of person 2's left elbow between sampled frames 3 and 4
    yv = x[:, 1, t0:t0 + tp, :14].numpy()
    dy = yv[:, 1:] - yv[:, :-1]
    dy_ok = (yv[:, 1:] != 0) & (yv[:, :-1] != 0)
    mlo, mhi = dy[dy_ok].min(), dy[dy_ok].max()
    row2 = R + SPMF_JOINT_ORDER.index(6)
    expect = (dy[1, 3, 6] - mlo) / (mhi - mlo)
    assert abs(float(image[0, 1, row2, tp + 3]) - expect) < 1e-5
    # missing joints, absent person-frames and the last motion column are black and invalid
    ear = SPMF_JOINT_ORDER.index(16)
    assert float(valid[0, 0, ear, 0]) == 0 and float(image[0, :, ear].abs().sum()) == 0
    assert torch.all(image[0, :, R:, 20:tp] == 0) and torch.all(valid[0, 0, :, 2 * tp - 1] == 0)
    assert float(image.min()) >= 0 and float(image.max()) <= 1
    # no depth channel: blue is zero, red and green unchanged
    image2, _ = spmf_image(x[:, :2], mask, ("x", "y"))
    assert torch.all(image2[:, 2] == 0)
    torch.testing.assert_close(image2[:, :2], image[:, :2])


def test_motion_half_constant_for_static_pose():
    x = torch.zeros(2, 3, 60, NUM_JOINTS)
    pose = torch.randn(2, 3, 1, NUM_JOINTS) * 0.3
    pose[:, 2] = 2.5 + pose[:, 2].abs()
    x[:, :, 10:50] = pose
    x[1] = 0  # one person
    mask = (x.abs().amax(dim=(1, 3), keepdim=True) > 0).float()
    img = encode_spmf(x, mask, ("x", "y", "depth"))
    assert img.shape == (1, 3, 2 * R, 64)
    motion = img[:, :, :, 32:]
    assert torch.all(motion == motion.flatten()[0])
    assert float(img[:, :, :R, :32].std()) > 0.1  # the pose half is not
    moving = x.clone()
    moving[0, :, 10:50] += torch.linspace(0, 0.5, 40).view(1, 40, 1) * torch.rand(3, 1, NUM_JOINTS)
    img_moving = encode_spmf(moving, mask, ("x", "y", "depth"))
    assert float(img_moving[:, :, :R, 32:63].std()) > 0.05


def test_contrast_enhancement_by_hand():
    """Values at bin centres: the soft histogram is the plain one; CLAHE's clip computed by hand."""
    img = torch.zeros(1, 3, 2, 5)
    img[0, :, 0, :] = 0.125  # 5 pixels in bin 0 of 4 ...
    img[0, :, 1, 0] = 0.125  # ... 6 in all
    img[0, :, 1, 1:3] = 0.625  # 2 in bin 2
    valid = torch.ones(1, 1, 2, 5)
    valid[0, 0, 1, 3:] = 0  # 2 invalid pixels (value 0): not counted
    out = enhance_contrast(img, valid, bins=4, clip_limit=2.0)
    # h = [.75, 0, .25, 0]; clip at .5 -> excess .25 spread: h' = [.5625, .0625, .3125, .0625]
    # T(.125) = .5 * .5625; T(.625) = .5625 + .0625 + .5 * .3125
    torch.testing.assert_close(out[0, :, 0, 0], torch.full((3,), 0.28125))
    torch.testing.assert_close(out[0, :, 1, 1], torch.full((3,), 0.78125))
    assert torch.all(out[0, :, 1, 3:] == 0)
    plain = enhance_contrast(img, valid, bins=4, clip_limit=float("inf"))  # plain equalisation
    torch.testing.assert_close(plain[0, :, 1, 2], torch.full((3,), 0.875))
    # monotone map onto [0, 1] that spreads a skewed distribution
    g = torch.Generator().manual_seed(0)
    skew = torch.rand(2, 3, 20, 30, generator=g) ** 4
    v = torch.ones(2, 1, 20, 30)
    eq = enhance_contrast(skew, v)
    assert float(eq.min()) >= 0 and float(eq.max()) <= 1 + 1e-6
    means = [float(enhance_contrast(skew, v, clip_limit=c).mean()) for c in (1.0, 2.0, 4.0, float("inf"))]
    assert float(skew.mean()) < 0.2 < means[0] < means[1] < means[2] < means[3] and means[3] > 0.4  # towards uniform
    order = torch.argsort(skew.flatten(2), dim=2)
    assert torch.all(torch.diff(torch.gather(eq.flatten(2), 2, order), dim=2) >= -1e-6)


# --- lifter --------------------------------------------------------------------------------------------

def test_lifter_shapes_positive_per_frame_and_both_paths():
    torch.manual_seed(0)
    net = Lifter(width=64)
    xy = torch.randn(6, 2, 10, NUM_JOINTS) * 0.3
    net.train()
    out = net(xy)
    assert out.shape == (6, 10, NUM_JOINTS) and bool((out > 0).all())
    assert float((out - 2.5).abs().max()) < 0.2  # initialised near 2.5 m
    rows = xy.permute(0, 2, 1, 3).reshape(60, 2, 1, NUM_JOINTS)  # SardeNet's per-frame training path
    per_frame = net(rows)
    assert per_frame.shape == (60, 1, NUM_JOINTS) and bool((per_frame > 0).all())
    assert net(rows[:1]).shape == (1, 1, NUM_JOINTS)  # one frame in training: running statistics
    net.eval()
    with torch.no_grad():
        full, single = net(xy), net(rows)
        torch.testing.assert_close(single[:, 0].reshape(6, 10, NUM_JOINTS), full, atol=1e-6, rtol=0)
        y = xy.clone()
        y[:, :, 3] += 1
        d = net(xy) - net(y)
        assert torch.all(d[:, [0, 1, 2, 4]] == 0) and d[:, 3].abs().max() > 0
    two = Lifter(width=32, streams=2).eval()
    assert len(two.streams) == 2 and two(xy).shape == (6, 10, NUM_JOINTS)
    assert sum(p.numel() for p in Lifter(width=1024).parameters()) > 4_000_000  # the paper's width


# --- fused model ---------------------------------------------------------------------------------------

def test_build_crop_invariance_and_settings():
    torch.manual_seed(0)
    net = build_model({**MODEL, "head": {"widths": [8, 16, 16, 32]}, "lifter": {"width": 64}}, 5)
    assert isinstance(net.recognizer, SPMFNet) and isinstance(net.depth_net, Lifter)
    assert net.recognizer.time_stride == 1
    x = _windows()
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net.logits(x)
    net.eval()
    with torch.no_grad():
        scores, depth = net(x)
        assert scores.shape == (3, 5) and depth.shape == (3, 150, NUM_JOINTS, 2)
        assert torch.all(depth[:, :40] == 0) and torch.all(depth[0, 40:80, :14] > 0)
        for a, b in ((40, 80), (37, 83), (0, 81)):
            cut_scores, cut_depth = net(x[:, :, a:b])
            torch.testing.assert_close(cut_scores, scores, atol=1e-5, rtol=0)
            torch.testing.assert_close(cut_depth[:, 40 - a:80 - a], depth[:, 40:80])
        garbage = x.clone()
        garbage[2, :2, 40:80, 5] = 5.0  # missing joint's (x, y) do not reach the image
        torch.testing.assert_close(net(garbage)[0], scores)
    flat = build_model({**MODEL, "depth_mode": "none"}, 5).eval()
    assert flat.recognizer.encoder.channels == ("x", "y")
    with torch.no_grad():
        assert flat(x)[0].shape == (3, 5)
    with pytest.raises(ValueError):
        build_model({**MODEL, "head": {"nope": 1}}, 5)


@pytest.fixture(scope="module")
def parity_windows() -> np.ndarray:
    """Five windows ``(5, 3, 150, 18, 2)``: real SBU windows when the shared data is there."""
    if (DATA / "skeletons").is_dir():
        from engines.datasets.sbu import load_sbu
        from engines.sarde.data import make_window

        seqs = load_sbu(DATA, sets=("s01s02",))[::3][:5]
        return np.stack([make_window(s, 150, 2, 15.0, np.random.default_rng(i))[0] for i, s in enumerate(seqs)])
    return _windows(5).numpy()


def test_onnx_parity_scores_and_depth(tmp_path, parity_windows, onnx_parity):
    torch.manual_seed(0)
    net = build_model(MODEL, 8)
    batch = torch.from_numpy(parity_windows)
    net.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for _ in range(3):
            net.logits(batch)
    net.eval()
    scores, depth = net(batch[1:5])
    assert scores.shape == (4, 8) and depth.shape == (4, 150, NUM_JOINTS, 2)
    onnx_parity(net, (batch[:1], batch[1:5]), tmp_path / "pham.onnx")


@needs_data
def test_training_steps_reduce_loss_on_real_windows(real_training_batch, fit_steps):
    labels, batch = real_training_batch()
    torch.manual_seed(0)
    net = build_model(MODEL, len(labels))
    steps = fit_steps(net, batch, depth_loss="huber")
    losses = [loss for loss, _ in steps]
    assert losses[-1] < 0.7 * losses[0], losses
