"""UR Fall Detection keypoints reader, on the real shared CSV (no mocks)."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from engines.layouts import COCO18_NAMES, URFD13_TO_COCO18

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"
URFD = DATA / "skeletons" / "urfd_falls"
J = {n: i for i, n in enumerate(COCO18_NAMES)}
pytestmark = pytest.mark.skipif(not (URFD / "pose_urfd_3classes.csv").is_file(), reason="URFD data not available")

# Copied by hand from pose_urfd_3classes.csv, line 902:
# "fall-07,100,<Nose x,y,s>,<LShoulder x,y,s>,<RShoulder x,y,s>,...,1"
ROW_VIDEO, ROW_FRAME, ROW_LABEL = "fall-07", 100, 1
NOSE = (0.3980034589767456, 0.4692835211753845, 0.8518778085708618)
L_SHOULDER = (0.4913230836391449, 0.47316476702690125, 0.6141459941864014)
R_SHOULDER = (0.4326375424861908, 0.4732465147972107, 0.5974360108375549)


@pytest.fixture(scope="module")
def seqs():
    from engines.datasets.urfd import load_urfd_falls

    return load_urfd_falls(DATA)


def _by(seqs, video, label):
    found = [s for s in seqs if s.subject == video and s.label == label]
    return found[0] if found else None


def test_table():
    assert URFD13_TO_COCO18[J["nose"]] == 0
    assert URFD13_TO_COCO18[J["l_shoulder"]] == 1 and URFD13_TO_COCO18[J["r_shoulder"]] == 2
    assert URFD13_TO_COCO18[J["l_ankle"]] == 11 and URFD13_TO_COCO18[J["r_ankle"]] == 12
    assert sorted(i for i in URFD13_TO_COCO18 if i >= 0) == list(range(13))
    assert [k for k, i in enumerate(URFD13_TO_COCO18) if i < 0] == [J["neck"], 14, 15, 16, 17]


def test_row_label_counts_match_stat_txt():
    from engines.datasets.urfd import read_rows

    stat = {}
    for line in (URFD / "stat.txt").read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0].isdigit():
            stat[int(parts[0])] = int(parts[1])
    assert stat == {0: 1107, 1: 937, 2: 895}
    videos, frames, joints, labels = read_rows(DATA)
    assert joints.shape == (2939, 13, 3)
    assert dict(Counter(labels.tolist())) == stat
    assert sorted(set(videos.tolist())) == [f"fall-{i:02d}" for i in range(1, 31)]


def test_counts_shapes_and_split_keys(seqs):
    falling = [s for s in seqs if s.label == "falling"]
    normal = [s for s in seqs if s.label == "normal"]
    assert len(falling) == 30 and len(seqs) == len(falling) + len(normal)
    assert sorted(s.subject for s in falling) == [f"fall-{i:02d}" for i in range(1, 31)]
    assert sorted(s.subject for s in normal) == ["fall-01", "fall-03", "fall-05", "fall-07", "fall-09",
                                                  "fall-17", "fall-27"]
    for s in seqs:
        L = len(s.keypoints)
        assert s.keypoints.shape == (L, 1, 18, 3) and s.keypoints.dtype == np.float32
        assert s.frame_size == (640, 480) and s.fps == 30.0 and s.depth is None
        assert s.meta["dataset"] == "urfd" and s.meta["video"] == s.subject
        assert s.meta["frame_labels"].shape == (L,) and s.meta["frames"].shape == (L,)
        assert (np.diff(s.meta["frames"]) == 1).all()  # laid out by frame number
        gaps = s.meta["frame_labels"] == -1
        assert (s.keypoints[gaps] == 0).all()  # gap frames are all missing
        assert (s.keypoints[~gaps][..., 0, 2] > 0).all()  # a person was found in every other frame
        sc = s.keypoints[..., 2]
        assert (sc >= 0).all() and (sc <= 1).all()
        assert (s.keypoints[:, :, 14:] == 0).all()  # eyes and ears have no source
        if s.label == "normal":
            assert L >= 30 and (s.meta["frame_labels"] == 0).all()
    assert sum(int((s.meta["frame_labels"] == -1).sum()) for s in seqs) == 12


def test_hand_picked_row(seqs):
    seq = _by(seqs, ROW_VIDEO, "falling")
    t = int(np.flatnonzero(seq.meta["frames"] == ROW_FRAME)[0])
    assert seq.meta["frame_labels"][t] == ROW_LABEL
    kp = seq.keypoints[t, 0]
    np.testing.assert_allclose(kp[J["nose"]], [NOSE[0] * 640, NOSE[1] * 480, NOSE[2]], rtol=1e-6)
    np.testing.assert_allclose(kp[J["r_shoulder"]], [R_SHOULDER[0] * 640, R_SHOULDER[1] * 480, R_SHOULDER[2]],
                               rtol=1e-6)
    np.testing.assert_allclose(kp[J["l_shoulder"]], [L_SHOULDER[0] * 640, L_SHOULDER[1] * 480, L_SHOULDER[2]],
                               rtol=1e-6)
    neck = [(L_SHOULDER[0] + R_SHOULDER[0]) * 320, (L_SHOULDER[1] + R_SHOULDER[1]) * 240,
            min(L_SHOULDER[2], R_SHOULDER[2])]
    np.testing.assert_allclose(kp[J["neck"]], neck, rtol=1e-6)
    np.testing.assert_allclose(kp[J["neck"], :2], 0.5 * (kp[J["l_shoulder"], :2] + kp[J["r_shoulder"], :2]), rtol=1e-6)
    assert (kp[14:] == 0).all()


def test_neck_everywhere_is_shoulder_midpoint(seqs):
    kp = np.concatenate([s.keypoints[:, 0] for s in seqs])
    both = (kp[:, J["l_shoulder"], 2] > 0) & (kp[:, J["r_shoulder"], 2] > 0)
    mid = 0.5 * (kp[:, J["l_shoulder"], :2] + kp[:, J["r_shoulder"], :2])
    np.testing.assert_allclose(kp[both, J["neck"], :2], mid[both], rtol=1e-6)
    assert (kp[~both, J["neck"]] == 0).all()


def test_falling_starts_half_a_second_before_the_fall(seqs):
    from engines.datasets.urfd import read_rows

    videos, frames, _, labels = read_rows(DATA)
    for v in sorted(set(videos.tolist())):
        rows = videos == v
        first_frame = int(frames[rows].min())
        first_fall = int(frames[rows & (labels == 1)].min())
        seq = _by(seqs, v, "falling")
        assert int(seq.meta["frames"][0]) == max(first_fall - 15, first_frame), v
        assert int(seq.meta["frames"][-1]) == int(frames[rows].max()), v
        assert (seq.meta["frame_labels"][: first_fall - int(seq.meta["frames"][0])] == 0).all()
        assert seq.meta["frame_labels"][first_fall - int(seq.meta["frames"][0])] == 1
    assert _by(seqs, "fall-22", "normal") is None  # falling from its first frame


def test_normal_and_falling_share_no_frame(seqs):
    for v in sorted({s.subject for s in seqs}):
        n, f = _by(seqs, v, "normal"), _by(seqs, v, "falling")
        if n is None:
            continue
        assert not set(n.meta["frames"].tolist()) & set(f.meta["frames"].tolist())
        assert int(n.meta["frames"][-1]) + 1 == int(f.meta["frames"][0])
        assert int(n.meta["frames"][0]) == 5


def test_repeated_frames_take_the_highest_label(seqs):
    f13 = _by(seqs, "fall-13", "falling")
    lab = dict(zip(f13.meta["frames"].tolist(), f13.meta["frame_labels"].tolist()))
    assert lab[29] == 0 and lab[30] == 1 and lab[43] == 1 and lab[44] == 2 and lab[73] == 1 and lab[85] == 2


def test_context_and_missing_csv(tmp_path):
    from engines.datasets.urfd import load_urfd_falls

    with pytest.raises(FileNotFoundError, match="pose_urfd_3classes.csv"):
        load_urfd_falls(tmp_path)
    one = load_urfd_falls(URFD, context_s=0.0, videos=("fall-07",))
    assert [s.name for s in one] == ["fall-07_normal", "fall-07_falling"]
    assert int(one[1].meta["frames"][0]) == 85 and one[1].meta["frame_labels"][0] == 1
