"""DeepActsNet back end (seed 003): Deep Action Stamps, crop invariance, ONNX parity, learning."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from engines.layouts import COCO18_CENTER, COCO18_EDGES, COCO18_NAMES, NUM_JOINTS  # noqa: E402
from engines.sarde.architectures import build_model  # noqa: E402
from engines.seeds.deepactsnet import COCO18_PARENTS, DeepActsNet, action_stamps  # noqa: E402

torch.set_num_threads(1)

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"
needs_data = pytest.mark.skipif(not (DATA / "skeletons").is_dir(), reason="shared data not available")
SMALL = {"recognizer": "deepactsnet", "depth_width": 0.125}
CHANNELS = ("x", "y", "depth")


def _windows(n=3, t=150, start=40, length=30, seed=0) -> torch.Tensor:
    """``(N, 3, T, V, M)`` synthetic windows (x, y, score) with skeletons in ``[start, start+length)``."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 3, t, NUM_JOINTS, 2)
    x[:, :2, start:start + length] = torch.randn(n, 2, length, NUM_JOINTS, 2, generator=g) * 0.3
    x[:, 2, start:start + length] = 1.0
    x[:, :, :, 14:18] = 0  # eyes / ears always missing in the default model
    if n > 1:
        x[1, :, :, :, 1] = 0  # one person only
    if n > 2:
        x[2, :, start:start + length, 5] = 0  # a missing joint
    return x


def _folded(n=2, t=60, start=10, length=32, seed=0):
    """Back-end input ``(N*M, 3, T, V)`` (x, y, depth) and frame mask, span exactly ``length`` frames."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n * 2, 3, t, NUM_JOINTS)
    x[:, :2, start:start + length] = torch.randn(n * 2, 2, length, NUM_JOINTS, generator=g) * 0.3
    x[:, 2, start:start + length] = torch.rand(n * 2, length, NUM_JOINTS, generator=g) * 5 + 1
    mask = (x.abs().amax(dim=(1, 3), keepdim=True) > 0).float()
    return x, mask


# --- stamps --------------------------------------------------------------------------------------------

def test_parent_table_is_the_tree_toward_the_neck():
    assert len(COCO18_PARENTS) == NUM_JOINTS and COCO18_PARENTS[COCO18_CENTER] == COCO18_CENTER
    edges = {frozenset(e) for e in COCO18_EDGES}
    for j, p in enumerate(COCO18_PARENTS):
        if j != COCO18_CENTER:
            assert frozenset((j, p)) in edges, (COCO18_NAMES[j], COCO18_NAMES[p])
    # every joint reaches the neck without a cycle: the table is the BFS tree of the edges
    for j in range(NUM_JOINTS):
        seen, k = set(), j
        while k != COCO18_CENTER:
            assert k not in seen
            seen.add(k)
            k = COCO18_PARENTS[k]
    assert COCO18_PARENTS[COCO18_NAMES.index("r_elbow")] == COCO18_NAMES.index("r_shoulder")


def test_action_stamps_shapes_and_hand_checked_values():
    x, mask = _folded()
    x[1, :, 20, 7] = 0  # person 1 of window 0: l_wrist missing at window frame 20 (sampled frame 10)
    st = action_stamps(x, mask, CHANNELS, 2, 32)
    assert list(st.maps) == ["joints", "bones", "motion"]
    for name in st.maps:
        assert st.maps[name].shape == (4, 3, 32, NUM_JOINTS) and st.maps[name].dtype == torch.float32
        assert st.valid[name].shape == (4, 1, 32, NUM_JOINTS)
    assert st.mask.shape == (4, 1, 32, 1)
    # the span is exactly 32 frames, so sampled frame k is window frame 10 + k
    torch.testing.assert_close(st.maps["joints"], x[:, :, 10:42])
    r_sh, r_el = COCO18_NAMES.index("r_shoulder"), COCO18_NAMES.index("r_elbow")
    by_hand = [float(x[0, c, 10 + 5, r_el] - x[0, c, 10 + 5, r_sh]) for c in range(3)]
    np.testing.assert_allclose(st.maps["bones"][0, :, 5, r_el].numpy(), by_hand, rtol=1e-6)
    assert torch.all(st.maps["bones"][:, :, :, COCO18_CENTER] == 0)  # the root has no bone
    np.testing.assert_allclose(st.maps["motion"][0, :, 5, r_el].numpy(),
                               (x[0, :, 16, r_el] - x[0, :, 15, r_el]).numpy(), rtol=1e-6)
    # missing l_wrist at sampled frame 10: its bone is 0, motion into and out of that frame is 0,
    # and the bone of nothing else changes (the wrist is a leaf)
    l_wr = COCO18_NAMES.index("l_wrist")
    assert torch.all(st.maps["bones"][1, :, 10, l_wr] == 0) and st.valid["bones"][1, 0, 10, l_wr] == 0
    assert torch.all(st.maps["motion"][1, :, 9:11, l_wr] == 0) and torch.all(st.valid["motion"][1, 0, 9:11, l_wr] == 0)
    assert torch.all(st.maps["motion"][1, :, 11, l_wr] != 0)
    assert torch.all(st.maps["motion"][:, :, -1] == 0)  # no frame after the last
    # property: joints are recovered from the neck plus the bones along the path to it
    rebuilt = st.maps["joints"][:, :, :, [COCO18_CENTER] * NUM_JOINTS].clone()
    for j in range(NUM_JOINTS):
        k = j
        while k != COCO18_CENTER:
            rebuilt[:, :, :, j] += st.maps["bones"][:, :, :, k]
            k = COCO18_PARENTS[k]
    torch.testing.assert_close(rebuilt[0], st.maps["joints"][0], atol=1e-5, rtol=0)


def test_motion_is_zero_for_a_static_pose_and_the_step_of_a_linear_one():
    x, mask = _folded(length=40)
    x[:, :, 10:50] = x[:, :, 10:11]  # the first pose held for 40 frames
    st = action_stamps(x, mask, CHANNELS, 2, 32)
    assert torch.all(st.maps["motion"] == 0)
    assert st.maps["joints"].abs().sum() > 0 and st.maps["bones"].abs().sum() > 0
    # a pose translating by v per frame over 32 frames: the motion stamp is v everywhere but the last frame
    x, mask = _folded(length=32)
    v = torch.tensor([0.01, -0.02, 0.05]).reshape(1, 3, 1, 1)
    x[:, :, 10:42] = x[:, :, 10:11] + v * torch.arange(32.0).reshape(1, 1, 32, 1)
    motion = action_stamps(x, mask, CHANNELS, 2, 32).maps["motion"]
    torch.testing.assert_close(motion[:, :, :-1], v.expand(4, 3, 31, NUM_JOINTS), atol=1e-5, rtol=0)


def test_score_channel_is_not_a_stamp_channel_and_unknown_modality_is_rejected():
    x, mask = _folded()
    score = (x[:, :1] != 0).float()
    st = action_stamps(torch.cat([x, score], 1), mask, CHANNELS + ("score",), 2, 32)
    assert st.maps["joints"].shape[1] == 3
    torch.testing.assert_close(st.maps["bones"], action_stamps(x, mask, CHANNELS, 2, 32).maps["bones"])
    with pytest.raises(ValueError, match="unknown modalities"):
        action_stamps(x, mask, CHANNELS, 2, 32, ("joints", "face"))


# --- back end ------------------------------------------------------------------------------------------

def test_modalities_and_branches_settings_set_the_subnetworks():
    full = DeepActsNet(3, 5, 2, CHANNELS)
    assert full.num_subnetworks == 6 and set(full.cnns) == set(full.graphs) == {"joints", "bones", "motion"}
    two = DeepActsNet(3, 5, 2, CHANNELS, modalities=["joints", "motion"])
    assert two.num_subnetworks == 4 and "bones" not in two.cnns and "bones" not in two.graphs
    assert sum(p.numel() for p in two.parameters()) < sum(p.numel() for p in full.parameters())
    graph_only = DeepActsNet(2, 5, 2, ("x", "y"), branches=("graph",))
    assert graph_only.num_subnetworks == 3 and len(graph_only.cnns) == 0
    assert graph_only.graphs["joints"].data_bn.num_features == 2 * NUM_JOINTS
    x, mask = _folded()
    with torch.no_grad():
        assert two.eval()(x, mask).shape == (2, 5)
        assert graph_only.eval()(x[:, :2], mask).shape == (2, 5)
    with pytest.raises(ValueError, match="multiple"):
        DeepActsNet(3, 5, 2, CHANNELS, num_frames=30)  # default graph blocks stride 4
    with pytest.raises(ValueError, match="unknown"):
        build_model({"recognizer": "deepactsnet", "head": {"modalities": ["hands"]}}, 5)


@pytest.mark.parametrize("cnn_persons", ["stack", "mean"])
def test_crop_invariance_and_masking(cnn_persons):
    torch.manual_seed(0)
    net = build_model(dict(SMALL, head={"cnn_persons": cnn_persons}), 7)
    assert net.recognizer.time_stride == 1
    x = _windows()
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net.logits(x)  # non-trivial BatchNorm statistics
    net.eval()
    with torch.no_grad():
        logits, _ = net.logits(x)
        assert logits.shape == (3, 7) and torch.isfinite(logits).all()
        for a, b in ((40, 70), (37, 75), (0, 71)):  # any cut keeping all skeleton frames
            torch.testing.assert_close(net.logits(x[:, :, a:b])[0], logits, atol=1e-5, rtol=0)
        y = x.clone()
        y[2, :2, 40:70, 5] = 5.0  # garbage (x, y) of a missing joint does not reach the recogniser
        torch.testing.assert_close(net.logits(y)[0], logits)
        y = x.clone()
        y[0, :2, 50, 3] += 0.2  # a moved joint does
        assert (net.logits(y)[0][0] - logits[0]).abs().max() > 1e-4


def test_onnx_parity_batch_1_and_4(tmp_path, onnx_parity):
    torch.manual_seed(0)
    net = build_model(dict(SMALL, use_score=True), 6)
    x = _windows(n=5, seed=1)
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net.logits(x)
    net.eval()
    assert net(x[1:5])[0].shape == (4, 6)
    onnx_parity(net, (x[:1], x[1:5]), tmp_path / "deepactsnet.onnx", depth=False)


@needs_data
def test_training_steps_reduce_loss_on_real_windows(real_training_batch, fit_steps):
    labels, batch = real_training_batch()
    torch.manual_seed(0)
    net = build_model(SMALL, len(labels))
    steps = fit_steps(net, batch)
    losses = [loss for loss, _ in steps]
    assert losses[-1] < 0.7 * losses[0]
