"""PoseC3D back end (seed 002): heatmap volumes, crop invariance, ONNX parity, learning on real windows."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torch.set_num_threads(1)

from engines.sarde.architectures import build_model  # noqa: E402
from engines.seeds.posec3d import BODY_EDGES, BODY_JOINTS, PoseC3D, window_to_volume  # noqa: E402

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"
needs_data = pytest.mark.skipif(not (DATA / "skeletons").is_dir(), reason="shared data not available")
CH = ("x", "y", "score")
SIZE = 32


def _window(joints: dict[int, tuple[float, float, float]], frames=range(10, 20), t=40, persons=2):
    """``(M, C, T, V)`` and mask ``(M, 1, T, 1)`` for one window, person 0 holding ``joints``
    ``{k: (x, y, score)}`` in ``frames``, the other persons empty."""
    x = torch.zeros(persons, 3, t, 18)
    for k, (px, py, c) in joints.items():
        x[0, 0, list(frames), k] = px
        x[0, 1, list(frames), k] = py
        x[0, 2, list(frames), k] = c
    mask = (x[:, 2:3] > 0).to(torch.float32).amax(dim=3, keepdim=True)
    return x, mask


def _px(u: float) -> float:
    """Grid pixel -> window coordinate for the unit box centred at 0 (``padding = 0``)."""
    return (u - (SIZE - 1) / 2) / SIZE


# the box corners: joints 0 and 1 at (-0.5, -0.5) and (0.5, 0.5) make the box [-0.5, 0.5]^2 (padding 0)
CORNERS = {0: (-0.5, -0.5, 1.0), 1: (0.5, 0.5, 1.0)}


# --- 1. input conversion -------------------------------------------------------------------------------

def test_joint_volume_shapes_and_value_by_hand():
    x, mask = _window({**CORNERS, 2: (0.1, -0.2, 0.8), 3: (0.3, 0.3, 0.0), 15: (0.2, 0.1, 0.9)})
    joint, limb = window_to_volume(x, mask, 2, CH, num_frames=8, size=SIZE, sigma=1.0, padding=0.0)
    assert joint.shape == (1, len(BODY_JOINTS), 8, SIZE, SIZE) == (1, 14, 8, 32, 32)
    assert limb.shape == (1, len(BODY_EDGES), 8, SIZE, SIZE) == (1, 13, 8, 32, 32)
    assert joint.dtype == torch.float32 and float(joint.min()) >= 0 and float(joint.max()) <= 1
    # joint 2 at x = 0.1, y = -0.2 in the unit box: u = 0.1 * 32 + 15.5 = 18.7, v = -0.2 * 32 + 15.5 = 9.1
    u, v, c = 18.7, 9.1, 0.8
    for h, w in ((9, 19), (10, 17), (12, 22)):
        expected = math.exp(-((w - u) ** 2 + (h - v) ** 2) / (2 * 1.0 ** 2)) * c
        for t in range(8):  # the joint is still in every sampled frame
            assert float(joint[0, 2, t, h, w]) == pytest.approx(expected, abs=1e-6)
    assert int(joint[0, 2, 3].argmax()) == 9 * SIZE + 19  # the peak is the pixel nearest the joint
    # the box corner joint sits half a pixel outside pixel (0, 0): exp(-(0.5^2 + 0.5^2) / 2)
    assert float(joint[0, 0, 0, 0, 0]) == pytest.approx(math.exp(-0.25), abs=1e-6)
    assert torch.all(joint[0, 3] == 0)  # zero confidence: nothing, wherever its coordinates are
    assert torch.all(joint[0, 4:] == 0)  # missing joints
    # no score channel: confidence 1 where the joint is present (mask and not (0, 0))
    joint1, _ = window_to_volume(x[:, :2], mask, 2, ("x", "y"), num_frames=8, size=SIZE, sigma=1.0, padding=0.0,
                                 streams=("joint",))
    assert float(joint1[0, 2, 0, 9, 19]) == pytest.approx(math.exp(-((19 - u) ** 2 + (9 - v) ** 2) / 2), abs=1e-6)
    # eyes / ears rendered only when asked for: joint 15 (at 0.2, 0.1) is the last of 15 joints
    joint_all, _ = window_to_volume(x, mask, 2, CH, num_frames=8, padding=0.0, joints=tuple(range(16)))
    assert joint_all.shape[1] == 16 and float(joint_all[0, 15, 0].max()) > 0.5


def test_persons_merge_by_max_and_window_only_sees_skeleton_frames():
    x, mask = _window({**CORNERS, 2: (0.1, -0.2, 0.8), 4: (0.0, 0.1, 0.6)})
    one, one_limb = window_to_volume(x, mask, 2, CH, num_frames=8)
    twin = x.clone()
    twin[1] = twin[0]  # the second person is the same skeleton again: max, not sum, so no change
    two, two_limb = window_to_volume(twin, (twin[:, 2:3] > 0).float().amax(3, keepdim=True), 2, CH, num_frames=8)
    torch.testing.assert_close(two, one, atol=0, rtol=0)
    torch.testing.assert_close(two_limb, one_limb, atol=0, rtol=0)
    # a second, different person adds its own joints and the first one's stay (max merge)
    other = x.clone()
    other[1, :2] = x[0, :2] * 0.5
    other[1, 2] = x[0, 2]
    both, _ = window_to_volume(other, (other[:, 2:3] > 0).float().amax(3, keepdim=True), 2, CH, num_frames=8)
    assert float(both[0, 2].sum()) > float(one[0, 2].sum())
    # a batch of two windows: each its own box and volume
    batch = torch.cat([x, other]), torch.cat([mask, (other[:, 2:3] > 0).float().amax(3, keepdim=True)])
    vols, _ = window_to_volume(*batch, 2, CH, num_frames=8)
    torch.testing.assert_close(vols[0], one[0])
    torch.testing.assert_close(vols[1], both[0])


def test_limb_heatmap_is_maximal_on_the_segment():
    # R-shoulder (2) -> R-elbow (3), a horizontal limb on grid row 12 from column 10 to 20
    a, b = (_px(10), _px(12), 0.9), (_px(20), _px(12), 0.7)
    x, mask = _window({**CORNERS, 2: a, 3: b})
    _, limb = window_to_volume(x, mask, 2, CH, num_frames=4, size=SIZE, sigma=1.0, padding=0.0)
    k = BODY_EDGES.index((3, 2))
    m = limb[0, k, 0]
    conf = min(a[2], b[2])
    torch.testing.assert_close(m[12, 10:21], torch.full((11,), conf), atol=1e-5, rtol=0)  # D = 0 on the segment
    assert float(m.max()) == pytest.approx(conf, abs=1e-5)
    rows, cols = torch.nonzero(m > conf - 1e-4, as_tuple=True)
    assert set(rows.tolist()) == {12} and set(cols.tolist()) == set(range(10, 21))
    # off the segment: distance to the segment, not to its line (beyond the end point b = (20, 12))
    assert float(m[12, 24]) == pytest.approx(math.exp(-16 / 2) * conf, abs=1e-6)
    assert float(m[15, 15]) == pytest.approx(math.exp(-9 / 2) * conf, abs=1e-6)
    assert float(m[14, 23]) == pytest.approx(math.exp(-(9 + 4) / 2) * conf, abs=1e-6)
    # limbs with a missing end have confidence min(c_a, 0) = 0
    assert torch.all(limb[0, BODY_EDGES.index((4, 3))] == 0)


def test_crop_box_makes_size_and_place_irrelevant():
    rng = np.random.default_rng(0)
    pose = torch.from_numpy(rng.normal(0, 0.2, (2, 12, 14)).astype(np.float32))  # (x/y, T, joints)
    x = torch.zeros(2, 3, 30, 18)
    x[0, :2, 5:17, :14] = pose + torch.linspace(0, 0.1, 12).reshape(1, 12, 1)  # a moving person
    x[0, 2, 5:17, :14] = torch.from_numpy(rng.uniform(0.3, 1.0, (12, 14)).astype(np.float32))
    x[0, 2, 7, 5] = 0  # a missing joint
    x[0, :2, 7, 5] = 0
    mask = (x[:, 2:3] > 0).float().amax(3, keepdim=True)
    small, large = x.clone(), x.clone()
    present = x[:, 2:3] > 0
    small[:, :2] = torch.where(present, 0.3 * x[:, :2] + torch.tensor([0.6, -0.3]).reshape(1, 2, 1, 1), 0.0)
    large[:, :2] = torch.where(present, 2.0 * x[:, :2] - torch.tensor([0.2, 0.1]).reshape(1, 2, 1, 1), 0.0)
    js, ls = window_to_volume(small, mask, 2, CH)
    jl, ll = window_to_volume(large, mask, 2, CH)
    assert float(js.amax()) > 0.5 and float(ls.amax()) > 0.5
    torch.testing.assert_close(js, jl, atol=1e-4, rtol=0)
    torch.testing.assert_close(ls, ll, atol=1e-4, rtol=0)
    # the people fill the grid: the padded box leaves ~1/8 of it free on the longer side
    occupied = torch.nonzero(js[0].amax(dim=(0, 1)) > 0.5)
    extent = int(occupied.max(0).values.max() - occupied.min(0).values.min())
    assert 20 <= extent <= 30


# --- model ---------------------------------------------------------------------------------------------

def _windows(n=3, t=150, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, t, 18, 2)
    a = min(40, t - 35)  # skeletons in frames a .. a+29
    x[:, :2, a:a + 30] = torch.randn(n, 2, 30, 18, 2, generator=g) * 0.3
    x[:, 2, a:a + 30] = torch.rand(n, 30, 18, 2, generator=g) * 0.7 + 0.3
    x[:, :, :, 14:] = 0  # eyes / ears masked, as in the default model
    if n > 1:
        x[1, :, :, :, 1] = 0  # one person only
    if n > 2:
        x[2, :, a:a + 30, 5] = 0  # a missing joint
    return x


def _trained_bn(net, x):
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net.logits(x)  # non-trivial BatchNorm statistics
    return net.eval()


def test_crop_invariance_and_scale_invariance_of_logits():
    torch.manual_seed(0)
    net = build_model({"recognizer": "posec3d", "depth_width": 0.125, "use_score": True}, 5)
    assert isinstance(net.recognizer, PoseC3D) and net.recognizer.time_stride == 1
    x = _windows()
    net = _trained_bn(net, x)
    with torch.no_grad():
        scores, _ = net(x)
        assert scores.shape == (3, 5)
        for a, b in ((40, 72), (37, 70), (0, 101)):  # any cut holding all skeleton frames
            torch.testing.assert_close(net(x[:, :, a:b])[0], scores, atol=1e-5, rtol=0)
        # the same people smaller and elsewhere in the image (subject-centred crop)
        moved = x.clone()
        moved[:, :2] = torch.where(x[:, 2:3] > 0, 0.5 * x[:, :2] + 0.2, 0.0)
        torch.testing.assert_close(net(moved)[0], scores, atol=1e-4, rtol=0)
        # garbage (x, y) of a missing joint does not reach the recogniser
        y = x.clone()
        y[2, :2, 40:70, 5] = 5.0
        torch.testing.assert_close(net(y)[0], scores, atol=1e-6, rtol=0)


def test_streams_fusion_and_settings():
    x = _windows(2, t=60)
    torch.manual_seed(0)
    both = build_model({"recognizer": "posec3d", "depth_mode": "none", "head": {"fusion": "scores"}}, 4).eval()
    rec = both.recognizer
    assert set(rec.nets) == {"joint", "limb"} and rec.channels == ("x", "y")
    n, c, t, v, m = x.shape
    flat = x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)
    mask = (flat[:, 2:3] > 0).float().amax(3, keepdim=True)
    inp = flat[:, :2] * (flat[:, 2:3] > 0)
    with torch.no_grad():
        fused = rec(inp, mask)
        j, limb = rec.volumes(inp, mask)
        pj, pl = torch.softmax(rec.nets["joint"](j), 1), torch.softmax(rec.nets["limb"](limb), 1)
        # "scores": softmax of the fused logits = the mean of the streams' probabilities (the paper's)
        torch.testing.assert_close(torch.softmax(fused, 1), (pj + pl) / 2, atol=1e-6, rtol=0)
        rec.fusion = "mean"
        torch.testing.assert_close(rec(inp, mask), (rec.nets["joint"](j) + rec.nets["limb"](limb)) / 2)
    one = build_model({"recognizer": "posec3d", "head": {"streams": ["limb"], "widths": [16, 32, 64]}}, 4)
    assert set(one.recognizer.nets) == {"limb"} and one.recognizer.nets["limb"].fc.in_features == 64
    with torch.no_grad():
        assert one.eval()(x)[0].shape == (2, 4)
    for bad in ({"streams": ["rgb"]}, {"fusion": "sum"}, {"joints": [14, 15]}, {"width": 3}):
        with pytest.raises(ValueError):
            build_model({"recognizer": "posec3d", "head": bad}, 4)


def test_size_and_speed_budget():
    import time

    torch.manual_seed(0)
    net = build_model({"recognizer": "posec3d", "depth_width": 0.25}, 8)
    params = sum(p.numel() for p in net.parameters())
    assert 1e5 <= params <= 1.5e6
    x = _windows(16, t=60, seed=1)
    x[:, :, :40] = x[:, :, 20:60].flip(2)  # more skeleton frames
    net.train()
    logits, depth = net.logits(x)  # warm-up
    start = time.perf_counter()
    logits, depth = net.logits(x)
    (logits.logsumexp(1).mean() + depth.mean()).backward()
    assert time.perf_counter() - start < 5.0  # ~0.6-0.9 s on one core; only a gross regression fails


# --- 3. ONNX parity ------------------------------------------------------------------------------------

def test_onnx_parity_dynamic_batch(tmp_path, onnx_parity):
    torch.manual_seed(0)
    net = build_model({"recognizer": "posec3d", "depth_width": 0.125, "use_score": True}, 6)
    x = _windows(4, seed=2)
    net = _trained_bn(net, x)
    empty = torch.zeros(1, 3, 150, 18, 2)  # no skeleton at all
    onnx_parity(net, (x[1:2], torch.cat([x[[0, 2, 3]], empty])), tmp_path / "posec3d.onnx", depth=False)


# --- 4. learns on real windows ---------------------------------------------------------------------------

@needs_data
def test_training_steps_reduce_loss_on_real_windows(real_training_batch, fit_steps):
    labels, batch = real_training_batch()
    torch.manual_seed(0)
    net = build_model({"recognizer": "posec3d", "depth_width": 0.125, "use_score": True}, len(labels))
    steps = fit_steps(net, batch)
    losses, ce = [loss for loss, _ in steps], [parts["L_II"] for _, parts in steps]
    assert losses[-1] < 0.7 * losses[0]
    assert min(ce[-3:]) < 0.7 * ce[0]  # the recogniser itself learns, not only the depth net
