"""Readers of MSR Action3D and SBU Kinect Interaction on the real shared data."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engines.datasets.msr import ACTION_SETS, MSR_ACTIONS, load_msr_action3d, read_sequence, msr_dir, xsub_split
from engines.datasets.sbu import SBU_CLASSES, SBU_FOLDS, fold_split, load_sbu
from engines.layouts import COCO18_NAMES, MSR20_TO_COCO18

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"
J = {n: i for i, n in enumerate(COCO18_NAMES)}
LIMBS = [("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle")]

pytestmark = pytest.mark.skipif(not (DATA / "skeletons").is_dir(), reason="shared data not available")


@pytest.fixture(scope="module")
def msr():
    return load_msr_action3d(DATA)


@pytest.fixture(scope="module")
def sbu():
    return load_sbu(DATA)


def _limb_lengths(points: np.ndarray, side: str) -> np.ndarray:
    """``points`` (F, 18, D) -> (4,) mean limb lengths of one side."""
    return np.array([np.linalg.norm(points[:, J[f"{side}_{a}"]] - points[:, J[f"{side}_{b}"]], axis=-1).mean()
                     for a, b in LIMBS])


def test_msr_counts_and_shapes(msr):
    assert len(msr) == 566  # 567 files, a13_s09_e02 all zeros
    assert "a13_s09_e02" not in {s.name for s in msr}
    assert {s.label for s in msr} == set(MSR_ACTIONS)
    assert sum(len(s.keypoints) for s in msr) > 20000
    for s in msr:
        assert s.keypoints.shape[1:] == (1, 18, 3) and s.keypoints.dtype == np.float32
        assert s.depth.shape == s.keypoints.shape[:3]
        assert s.fps == 15 and s.frame_size == (320, 240)
        assert s.keypoints[0, 0, :, 2].min() == 1 and s.keypoints[-1, 0, :, 2].min() == 1  # zero frames trimmed


def test_msr_frame_count_mismatch_is_cut_to_common_tracked_frames():
    seq = read_sequence(msr_dir(DATA), "a13_s09_e03")  # 255 screen frames, 936 real3d frames
    assert len(seq.keypoints) == 196


def test_msr_pixels_and_depth_ranges(msr):
    kp = np.concatenate([s.keypoints[:, 0] for s in msr])
    depth = np.concatenate([s.depth[:, 0] for s in msr])
    ok = kp[..., 2] > 0
    assert np.all(np.abs(kp[..., :2][ok]) < 400)  # no 2**31 overflow values
    z = depth[ok]
    assert 1.3 < z.min() and z.max() < 4.0  # metres
    assert 2.3 < np.median(z) < 2.9
    assert np.all(depth[~ok] == 0)


def test_msr_left_right(msr):
    kp = np.concatenate([s.keypoints[:, 0] for s in msr])
    kp = kp[kp[:, 1, 2] > 0]
    # facing the camera, a real (un-mirrored) camera shows the right shoulder on the image left
    assert np.mean(kp[:, J["r_shoulder"], 0] < kp[:, J["l_shoulder"], 0]) > 0.95
    left, right = _limb_lengths(kp[..., :2], "l"), _limb_lengths(kp[..., :2], "r")
    np.testing.assert_allclose(left, right, rtol=0.12)
    # one-arm actions are done with the right arm (dataset protocol): the right wrist moves most
    for action in ("high_arm_wave", "hammer", "forward_punch"):
        seqs = [s for s in msr if s.label == action]
        right_moves = [s.keypoints[:, 0, J["r_wrist"], :2].std(0).sum() > s.keypoints[:, 0, J["l_wrist"], :2].std(0).sum()
                       for s in seqs]
        assert np.mean(right_moves) > 0.9, action
    assert MSR20_TO_COCO18[J["r_wrist"]] == 10  # MSR joint 11 (0-based 10) is the right wrist


def test_msr_protocol_lists(msr):
    from scipy.io import loadmat

    mat = loadmat(msr_dir(DATA) / "protocol" / "tr_te_splits.mat")
    sets = [tuple(int(a) for a in s.ravel()) for s in mat["action_sets"].ravel()]
    assert sets == [ACTION_SETS["AS1"], ACTION_SETS["AS2"], ACTION_SETS["AS3"]]
    train, test = xsub_split(msr)
    assert {s.subject for s in train} == {1, 3, 5, 7, 9} and {s.subject for s in test} == {2, 4, 6, 8, 10}
    as1 = load_msr_action3d(DATA, actions=ACTION_SETS["AS1"], subjects=(1,))
    assert as1 and {s.meta["action"] for s in as1} <= set(ACTION_SETS["AS1"])


def test_sbu_counts_and_shapes(sbu):
    assert len(sbu) == 282
    assert {s.subject for s in sbu} == {name for fold in SBU_FOLDS for name in fold}
    assert sorted(name for fold in SBU_FOLDS for name in fold) == sorted({s.subject for s in sbu})  # a partition
    assert {s.label for s in sbu} == set(SBU_CLASSES)
    for s in sbu:
        assert s.keypoints.shape[1:] == (2, 18, 3) and s.depth.shape == s.keypoints.shape[:3]
        assert 10 <= len(s.keypoints) <= 46 and s.fps == 15 and s.frame_size == (640, 480)
    train, test = fold_split(sbu, 1)
    assert len(train) + len(test) == 282 and {s.subject for s in test} == set(SBU_FOLDS[0])


def test_sbu_geometry(sbu):
    kp = np.concatenate([s.keypoints.reshape(-1, 18, 3) for s in sbu])
    depth = np.concatenate([s.depth.reshape(-1, 18) for s in sbu])
    z = depth[kp[..., 2] > 0]
    assert 0.9 < z.min() and z.max() < 3.5 and 1.9 < np.median(z) < 2.6  # metres
    centre = kp[:, J["neck"], :2]
    assert np.mean((centre[:, 0] > 0) & (centre[:, 0] < 640) & (centre[:, 1] > 0) & (centre[:, 1] < 480)) > 0.99
    # back-project to 3D with the reader's pinhole: limbs are left/right symmetric
    f = 571.4
    xyz = np.stack([(kp[..., 0] - 320) * depth / f, (kp[..., 1] - 240) * depth / f, depth], axis=-1)
    np.testing.assert_allclose(_limb_lengths(xyz, "l"), _limb_lengths(xyz, "r"), rtol=0.1)
    # an adult's neck-to-ankle is about 1.3 m
    assert 1.1 < np.linalg.norm(xyz[:, J["neck"]] - xyz[:, J["r_ankle"]], axis=-1).mean() < 1.6
