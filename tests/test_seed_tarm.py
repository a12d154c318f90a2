"""TARM back end (seed 004): input map, recalibration formula, crop invariance, ONNX parity, learning."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.sarde.architectures import build_model  # noqa: E402
from engines.seeds.tarm import (  # noqa: E402
    CPU_WIDTHS, RESNET18_WIDTHS, TARM, BasicBlock, TemporalAttentionRecalibration, skeleton_map)

torch.set_num_threads(1)

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"
needs_data = pytest.mark.skipif(not (DATA / "skeletons").is_dir(), reason="shared data not available")
MODEL = {"recognizer": "tarm", "depth_width": 0.125}


def _windows(n: int = 3, t: int = 150, start: int = 40, length: int = 30) -> torch.Tensor:
    """``(n, 3, t, 18, 2)`` windows: skeletons in frames ``[start, start+length)``, padding around."""
    g = torch.Generator().manual_seed(n)
    x = torch.zeros(n, 3, t, 18, 2)
    x[:, :2, start:start + length] = torch.randn(n, 2, length, 18, 2, generator=g) * 0.3
    x[:, 2, start:start + length] = 1.0
    x[:, :, :, 14:] = 0  # eyes / ears off (mask_joints)
    if n > 1:
        x[1, :, :, :, 1] = 0  # one person only
    if n > 2:
        x[2, :, start + 5:start + 9, :, 0] = 0  # a gap in person 0's track
    return x


# --- input conversion --------------------------------------------------------------------------------

def test_skeleton_map_layout_values_and_masks():
    n, m, c, t, v = 2, 2, 3, 60, 18
    # every entry encodes where it came from, so a wrong permutation / person offset shows
    code = (torch.arange(n * m).reshape(-1, 1, 1, 1) * 1e4 + torch.arange(c).reshape(1, -1, 1, 1) * 1e3
            + torch.arange(t).reshape(1, 1, -1, 1) * 10 + torch.arange(v).reshape(1, 1, 1, -1) + 1.0)
    mask = torch.zeros(n * m, 1, t, 1)
    mask[:, :, 10:42] = 1  # skeleton span: frames 10..41
    mask[3] = 0  # window 1 has one person
    x = code * mask
    x[0, :, 20, 7] = 0  # a missing joint (person 0 of window 0, sampled frame 20)
    maps, joint_mask, row_mask = skeleton_map(x, mask, m, 4)
    assert maps.shape == (n, c, 4, m * v) and joint_mask.shape == row_mask.shape == (n, 1, 4, m * v)
    # by hand: 4 frames spread over 10..41: 10 + 31 * k / 3 rounded -> 10, 20, 31, 41
    frames = [10, 20, 31, 41]
    for i in range(n):
        for ch in range(c):
            for k, f in enumerate(frames):
                for p in range(m):
                    for j in range(v):
                        assert maps[i, ch, k, p * v + j] == x[i * m + p, ch, f, j]
    assert maps[0, 1, 2, v + 5] == 1e4 + 1e3 + 310 + 5 + 1  # window 0, y, frame 31, person 1, joint 5
    assert joint_mask[0, 0, 1, 7] == 0 and joint_mask[0, 0, 1, 6] == 1 and joint_mask[0, 0, 1, v + 7] == 1
    assert torch.all(row_mask[1, :, :, v:] == 0) and torch.all(row_mask[1, :, :, :v] == 1)
    assert torch.all(row_mask[0] == 1)
    # the same window cut to any span holding its skeletons gives the same map
    cut = skeleton_map(x[:, :, 5:50], mask[:, :, 5:50], m, 4)
    for a, b in zip(cut, (maps, joint_mask, row_mask)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


# --- the recalibration (Eqs. 1-2) ---------------------------------------------------------------------

def test_recalibration_formula_attention_range_and_identity():
    torch.manual_seed(0)
    mod = TemporalAttentionRecalibration(num_rows=36, num_frames=32, hidden=8, reduction=16).eval()
    x = torch.randn(4, 32, 36)
    with torch.no_grad():
        e = mod.embedding(x)
        f_m, f_a = mod.modulation(e), mod.attention(e)
        assert f_m.shape == (4, 32, 36) and f_a.shape == (4, 32, 1)
        assert bool(((f_a > 0) & (f_a < 1)).all())
        torch.testing.assert_close(mod(x), x + f_m * f_a)  # X' = X + F_M(X) * F_A(X)
        # hand check of F_A: sigmoid(W2 relu(W1 mean_h E)), W1: 32 -> 2 frames
        s = e.mean(dim=2)
        hidden = torch.relu(s @ mod.att1.weight.T + mod.att1.bias)
        a = 1 / (1 + torch.exp(-(hidden @ mod.att2.weight.T + mod.att2.bias)))
        torch.testing.assert_close(f_a[:, :, 0], a)
        # BiGRU: frame 16 changes F_M of frame 15 (a forward-only or per-frame net would not)
        y = x.clone()
        y[:, 16] += 1.0
        assert (mod.modulation(mod.embedding(y))[:, 15] - f_m[:, 15]).abs().max() > 1e-3
        # masked rows: the recalibration term is zeroed there
        rm = torch.ones(4, 32, 36)
        rm[:, :, 18:] = 0
        out = mod(x, rm)
        assert torch.equal(out[:, :, 18:], x[:, :, 18:]) and not torch.equal(out[:, :, :18], x[:, :, :18])
        # modulation branch zeroed -> X' = X exactly
        mod.out.weight.zero_()
        assert torch.equal(mod(x), x)


def test_tarm_structure_and_widths():
    rec = TARM(3, 5, 2, ("x", "y", "depth"))
    assert len(rec.tarms) == 3 and rec.time_stride == 1
    blocks = [b for b in rec.cnn.body if isinstance(b, BasicBlock)]
    assert len(blocks) == 8 and [b.conv2.out_channels for b in blocks[1::2]] == list(CPU_WIDTHS)
    big = TARM(3, 5, 2, ("x", "y", "depth"), widths=RESNET18_WIDTHS)
    assert [b.conv2.out_channels for b in big.cnn.body[1::2]] == list(RESNET18_WIDTHS)
    assert sum(p.numel() for p in big.cnn.parameters()) > 10_000_000  # ResNet-18 body ~11 M
    with pytest.raises(ValueError):
        TARM(3, 5, 2, ("x", "y"))
    with pytest.raises(ValueError):
        build_model({"recognizer": "tarm", "head": {"no_such_setting": 1}}, 5)


# --- the fused graph ---------------------------------------------------------------------------------

def _trained_net(x: torch.Tensor, k: int = 7, **extra):
    torch.manual_seed(0)
    net = build_model({**MODEL, **extra}, k)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net.logits(x)  # non-trivial BatchNorm statistics
    return net.eval()


def test_crop_invariance_and_shapes():
    x = _windows()
    net = _trained_net(x, head={"num_frames": 24})
    assert sum(p.numel() for p in net.parameters()) < 1_500_000
    with torch.no_grad():
        scores, depth = net(x)
        assert scores.shape == (3, 7) and depth.shape == (3, 150, 18, 2)
        torch.testing.assert_close(scores.sum(1), torch.ones(3))
        for a, b in ((40, 70), (33, 71), (0, 100)):  # any cut holding all skeletons, any start
            cut_scores, _ = net(x[:, :, a:b])
            torch.testing.assert_close(cut_scores, scores, atol=1e-5, rtol=0)
        # garbage (x, y) of missing joints does not reach the recogniser
        y = x.clone()
        y[1, :2, 40:70, :, 1] = 5.0
        torch.testing.assert_close(net(y)[0], scores, atol=1e-6, rtol=0)
        # the score channel variant builds and runs
        net4 = build_model({**MODEL, "use_score": True}, 4).eval()
        assert len(net4.recognizer.tarms) == 4 and net4(x)[0].shape == (3, 4)


def test_onnx_export_parity(tmp_path, onnx_parity):
    onnx = pytest.importorskip("onnx")
    x = torch.cat([_windows(3), _windows(3, start=90, length=50)])
    net = _trained_net(x)
    path = onnx_parity(net, (x[:1], x[2:6]), tmp_path / "tarm.onnx")
    assert "GRU" in {node.op_type for node in onnx.load(str(path)).graph.node}


@needs_data
def test_training_steps_reduce_loss_on_real_windows(real_training_batch, fit_steps):
    labels, batch = real_training_batch()
    torch.manual_seed(0)
    net = build_model(MODEL, len(labels))
    steps = fit_steps(net, batch)
    losses, ce = [loss for loss, _ in steps], [parts["L_II"] for _, parts in steps]
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]
    assert ce[-1] < 0.7 * ce[0]  # the back end itself learns, not only the depth net
