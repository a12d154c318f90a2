"""UTD-MHAD and Kinetics-skeleton readers, the generic .npz format and the daemon JSON-lines converter."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from engines.datasets import SkeletonSequence
from engines.datasets.generic import jsonl_to_npz, jsonl_to_sequences, load_npz, save_npz
from engines.datasets.kinetics import KINETICS_FRAME_SIZE, read_kinetics_json
from engines.layouts import COCO18_NAMES, UTD20_TO_COCO18

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"
J = {n: i for i, n in enumerate(COCO18_NAMES)}
LIMBS = [("shoulder", "elbow"), ("elbow", "wrist"), ("hip", "knee"), ("knee", "ankle")]
needs_data = pytest.mark.skipif(not (DATA / "skeletons").is_dir(), reason="shared data not available")


def _limbs(points: np.ndarray, side: str) -> np.ndarray:
    """``points`` (F, 18, D) -> (4,) mean limb lengths of one side."""
    return np.array([np.linalg.norm(points[:, J[f"{side}_{a}"]] - points[:, J[f"{side}_{b}"]], axis=-1).mean()
                     for a, b in LIMBS])


@pytest.fixture(scope="module")
def utd():
    from engines.datasets.utd import load_utd_mhad

    return load_utd_mhad(DATA, subjects=(1, 2))


@needs_data
def test_utd_shapes_and_protocol(utd):
    from engines.datasets.utd import UTD_ACTIONS, utd_dir, xsub_split

    assert len(list(utd_dir(DATA).glob("a*_s*_t*_skeleton.mat"))) == 861
    assert len(utd) == 215 and {s.subject for s in utd} == {1, 2} and {s.label for s in utd} == set(UTD_ACTIONS)
    for s in utd:
        assert s.keypoints.shape[1:] == (1, 18, 3) and s.keypoints.dtype == np.float32
        assert s.depth.shape == s.keypoints.shape[:3] and 41 <= len(s.keypoints) <= 125
        assert s.fps == 30 and s.frame_size == (320, 240)
    train, test = xsub_split(utd)
    assert {s.subject for s in train} == {1} and {s.subject for s in test} == {2}


@needs_data
def test_utd_geometry_bones_and_sides(utd):
    from engines.datasets.utd import FOCAL_PX

    kp = np.concatenate([s.keypoints[:, 0] for s in utd])
    z = np.concatenate([s.depth[:, 0] for s in utd])
    assert 2.0 < np.median(z) < 3.8  # metres
    inside = (kp[..., 0] > 0) & (kp[..., 0] < 320) & (kp[..., 1] > 0) & (kp[..., 1] < 240)
    assert inside[:, J["neck"]].mean() > 0.99
    # facing the camera, an un-mirrored image shows the right shoulder on the image left
    assert np.mean(kp[:, J["r_shoulder"], 0] < kp[:, J["l_shoulder"], 0]) > 0.95
    # back-projection through the reader's pinhole gives symmetric, adult-sized limbs
    xyz = np.stack([(160 - kp[..., 0]) * z / FOCAL_PX, (120 - kp[..., 1]) * z / FOCAL_PX, z], axis=-1)
    left, right = _limbs(xyz, "l"), _limbs(xyz, "r")
    np.testing.assert_allclose(left, right, rtol=0.12)
    assert np.all((0.15 < right) & (right < 0.6))
    # right-arm actions (protocol): the right wrist moves most; a26 lunge steps with the left foot
    for action in ("swipe_left", "wave", "throw", "draw_x", "draw_circle_cw"):
        moves = [s.keypoints[:, 0, J["r_wrist"], :2].std(0).sum() > s.keypoints[:, 0, J["l_wrist"], :2].std(0).sum()
                 for s in utd if s.label == action]
        assert np.mean(moves) > 0.9, action
    lunge = [s.depth[:, 0, J["l_ankle"]].std() + s.keypoints[:, 0, J["l_ankle"], :2].std(0).sum() / 100
             > s.depth[:, 0, J["r_ankle"]].std() + s.keypoints[:, 0, J["r_ankle"], :2].std(0).sum() / 100
             for s in utd if s.label == "lunge"]
    assert np.mean(lunge) > 0.8
    assert UTD20_TO_COCO18[J["r_wrist"]] == 10  # UTD joint 11 (0-based 10) is the right wrist


@needs_data
def test_kinetics_json_reader():
    path = DATA / "skeletons" / "kinetics_skeleton" / "--33Lscn6sk.json"
    seq = read_kinetics_json(path, max_persons=2)
    assert seq.keypoints.shape == (189, 2, 18, 3) and seq.keypoints.dtype == np.float32
    assert seq.label == "flipping pancake" and seq.meta["label_index"] == 129 and seq.depth is None
    kp = seq.keypoints
    ok = kp[..., 2] > 0
    assert np.all(kp[..., 0][ok] <= 1.02 * KINETICS_FRAME_SIZE[0]) and np.all(kp[..., 1][ok] <= 1.02 * KINETICS_FRAME_SIZE[1])
    assert np.all(kp[~ok] == 0)
    # slots are ordered by total score: person 0 is the best-detected one
    assert kp[:, 0, :, 2].sum() >= kp[:, 1, :, 2].sum() > 0
    # raw file check: frame 1, first listed skeleton, nose = pose[0:2] * frame size
    raw = json.loads(path.read_text())["data"][0]["skeleton"]
    best = max(range(len(raw)), key=lambda m: sum(raw[m]["score"]))
    assert best in (0, 1)
    # left/right limbs of the main person have similar 2D lengths where both are seen
    both = ok[:, 0, [J["r_shoulder"], J["r_elbow"], J["l_shoulder"], J["l_elbow"]]].all(1)
    pts = kp[both, 0, :, :2]
    r = np.linalg.norm(pts[:, J["r_shoulder"]] - pts[:, J["r_elbow"]], axis=-1).mean()
    l_ = np.linalg.norm(pts[:, J["l_shoulder"]] - pts[:, J["l_elbow"]], axis=-1).mean()
    assert 0.6 < r / l_ < 1.6
    three = read_kinetics_json(path, max_persons=3)
    assert three.keypoints.shape[1] == 3


def _synthetic(n=3, persons=2, depth=True) -> list[SkeletonSequence]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        length = 10 + 5 * i
        kp = rng.uniform(0, 300, (length, persons, 18, 3)).astype(np.float32)
        kp[..., 2] = rng.uniform(0, 1, kp.shape[:3]) * (rng.random(kp.shape[:3]) > 0.1)
        d = rng.uniform(1, 4, kp.shape[:3]).astype(np.float32) if depth else None
        out.append(SkeletonSequence(f"s{i}", kp, (320, 240), 15.0, d, ["a", "b"][i % 2], i))
    return out


def test_generic_npz_round_trip(tmp_path):
    seqs = _synthetic()
    path = save_npz(tmp_path / "x.npz", seqs, label_names=["a", "b", "c"])
    with np.load(path, allow_pickle=False) as z:
        assert z["keypoints"].shape == (3, 2, 20, 18, 3) and z["depth"].shape == (3, 2, 20, 18)
        assert list(z["labels"]) == [0, 1, 0] and list(z["lengths"]) == [10, 15, 20]
    back = load_npz(path)
    for a, b in zip(seqs, back):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.depth, b.depth)
        assert (a.name, a.label, str(a.subject), a.frame_size, a.fps) == (b.name, b.label, b.subject, b.frame_size, b.fps)
    nodepth = load_npz(save_npz(tmp_path / "y.npz", _synthetic(depth=False)))
    assert all(s.depth is None for s in nodepth)
    with pytest.raises(ValueError):
        save_npz(tmp_path / "z.npz", [])


def test_daemon_jsonl_converter(tmp_path):
    rng = np.random.default_rng(1)
    lines = []
    for frame in list(range(100, 130)) + list(range(200, 210)):  # two runs (gap > 15 frames)
        persons = [np.c_[rng.uniform(0, 640, (18, 2)), rng.uniform(0.1, 1, 18)].tolist() for _ in range(1 + frame % 2)]
        lines.append({"camera": "cam0", "frame": frame, "ts": 1000 + frame / 10.0, "persons": persons})
    lines.append({"camera": "cam1", "frame": 5, "ts": 7.0, "persons": [], "width": 320, "height": 240})
    path = tmp_path / "det.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    seqs = jsonl_to_sequences(path, frame_size=(640, 480), max_persons=2)
    assert [s.name for s in seqs] == ["cam0_100", "cam0_200", "cam1_5"]
    assert seqs[0].keypoints.shape == (30, 2, 18, 3) and abs(seqs[0].fps - 10.0) < 1e-6
    first = lines[0]["persons"][0]
    np.testing.assert_allclose(seqs[0].keypoints[0, 0], np.asarray(first, np.float32))
    assert np.all(seqs[0].keypoints[0, 1] == 0)  # frame 100 has one person
    with pytest.raises(ValueError):
        jsonl_to_sequences(path, frame_size=None)  # cam0 records carry no size
    out = jsonl_to_npz(path.with_name("one.jsonl") if False else path, tmp_path / "d.npz", frame_size=(640, 480), fps=10.0)
    back = load_npz(out)
    assert len(back) == 3 and back[1].keypoints.shape == (10, 2, 18, 3) and back[0].label is None
