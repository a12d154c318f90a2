"""PAF grouping (``engines.pose``) on synthetic network outputs with known persons.

The synthetic output mimics the CMU COCO-18 head at stride 8 on a 432x368 input: a Gaussian
(sigma 1 cell, peak 1) per joint in its heatmap channel and, per limb, the unit limb vector within
one cell of the segment in the limb's PAF channel pair (``COCO18_LIMBS``), as in OpenPose training.
"""
from __future__ import annotations

import numpy as np
import pytest

from engines.pose import COCO18_LIMBS, NUM_OUTPUT_CHANNELS, PAF_OFFSET, PoseDecoder, duplicate_persons

H, W, S = 46, 54, 8  # output grid and stride: 368x432 input

#: A standing person facing the camera, COCO-18, offsets in input pixels from the hip centre.
TEMPLATE = np.array([
    (0, -110), (0, -85), (-25, -85), (-35, -45), (-40, -10), (25, -85), (35, -45), (40, -10),
    (-15, 0), (-17, 55), (-18, 110), (15, 0), (17, 55), (18, 110),
    (-6, -117), (6, -117), (-14, -113), (14, -113),
], dtype=np.float32)  # (18, 2)


def person(cx: float, cy: float) -> np.ndarray:
    """(18, 3) keypoints (x, y, 1) of the template placed at hip centre (cx, cy)."""
    kp = np.ones((18, 3), np.float32)
    kp[:, :2] = TEMPLATE + (cx, cy)
    return kp


def render(persons: list[np.ndarray], peak: float = 1.0) -> np.ndarray:
    """Synthetic (46, 54, 57) output for persons given as (18, 3) arrays (score 0 = absent joint)."""
    out = np.zeros((H, W, NUM_OUTPUT_CHANNELS), np.float32)
    gy, gx = np.mgrid[0:H, 0:W].astype(np.float32)
    paf_count = np.zeros((H, W, len(COCO18_LIMBS)), np.float32)
    for kp in persons:
        g = (kp[:, :2] + 0.5) / S - 0.5  # (18, 2) grid coordinates
        for j in range(18):
            if kp[j, 2] > 0:
                blob = peak * np.exp(-((gx - g[j, 0]) ** 2 + (gy - g[j, 1]) ** 2) / 2.0)
                out[..., j] = np.maximum(out[..., j], blob)
        for k, (a, b, px, py) in enumerate(COCO18_LIMBS):
            if kp[a, 2] <= 0 or kp[b, 2] <= 0:
                continue
            v = g[b] - g[a]
            length = float(np.hypot(*v))
            u = v / length
            rel_x, rel_y = gx - g[a, 0], gy - g[a, 1]
            along = rel_x * u[0] + rel_y * u[1]
            across = np.abs(rel_x * u[1] - rel_y * u[0])
            mask = (along >= -1) & (along <= length + 1) & (across <= 1)
            out[..., PAF_OFFSET + px] += mask * u[0]
            out[..., PAF_OFFSET + py] += mask * u[1]
            paf_count[..., k] += mask
    for k, (_, _, px, py) in enumerate(COCO18_LIMBS):  # average where limbs of two persons overlap
        n = np.maximum(paf_count[..., k], 1)
        out[..., PAF_OFFSET + px] /= n
        out[..., PAF_OFFSET + py] /= n
    return out


def limb_channels(a: int, b: int) -> tuple[int, int]:
    for ja, jb, px, py in COCO18_LIMBS:
        if (ja, jb) == (a, b):
            return PAF_OFFSET + px, PAF_OFFSET + py
    raise KeyError((a, b))


def match(found: np.ndarray, truth: list[np.ndarray]) -> list[int]:
    """Index of the true person nearest (by neck) to each found person."""
    return [int(np.argmin([np.linalg.norm(f[1, :2] - t[1, :2]) for t in truth])) for f in found]


TWO = [person(120.3, 200.6), person(300.0, 190.0)]


def test_two_persons_all_joints_correct():
    out = render(TWO)
    kps, scores = PoseDecoder().decode_with_scores(out)
    assert kps.shape == (2, 18, 3) and kps.dtype == np.float32
    assert scores.shape == (2,) and scores[0] >= scores[1] > 0.4
    assert sorted(match(kps, TWO)) == [0, 1]
    for found, t in zip(kps, (TWO[i] for i in match(kps, TWO))):
        assert (found[:, 2] > 0.75).all()  # heatmap value at the grid peak, <= 0.5 cell off centre
        err = np.linalg.norm(found[:, :2] - t[:, :2], axis=1)
        assert err.max() < 1.0, err  # sub-pixel refinement of a sigma-1-cell Gaussian


@pytest.mark.parametrize("upsample,subpixel,tol", [(1, False, S / 2 + 0.01), (2, True, 1.0), (4, False, 1.01)])
def test_coordinate_convention_and_upsampling(upsample, subpixel, tol):
    # Joints on cell centres: grid peaks land exactly at x = (col + 0.5) * 8 - 0.5.
    centred = person(0, 0)
    centred[:, :2] = (np.round((centred[:, :2] + (200, 200) + 0.5) / S - 0.5) + 0.5) * S - 0.5
    kps = PoseDecoder(upsample=upsample, subpixel=subpixel).decode(render([centred]))
    assert kps.shape == (1, 18, 3)
    err = np.abs(kps[0, :, :2] - centred[:, :2]).max()
    assert err < (1e-3 if upsample == 1 else tol), err
    off = person(200.3, 195.2)  # off-grid joints
    kps = PoseDecoder(upsample=upsample, subpixel=subpixel).decode(render([off]))
    assert np.abs(kps[0, :, :2] - off[:, :2]).max() <= tol


def test_wrong_way_paf_is_not_connected():
    out = render(TWO)
    cx, cy = limb_channels(3, 4)  # R-elbow -> R-wrist
    region = np.s_[:, :28]  # columns of the left person only
    out[region + (cx,)] *= -1
    out[region + (cy,)] *= -1
    kps = PoseDecoder().decode(out)
    left = kps[int(np.argmin(kps[:, 1, 0]))]
    right = kps[int(np.argmax(kps[:, 1, 0]))]
    assert len(kps) == 2
    assert (left[4] == 0).all(), "a limb whose PAF points from wrist to elbow must not connect"
    assert (left[np.arange(18) != 4, 2] > 0).all()
    assert (right[:, 2] > 0).all() and np.linalg.norm(right[4, :2] - TWO[1][4, :2]) < 1.0


def test_paf_threshold_and_ratio():
    out = render(TWO)
    cx, cy = limb_channels(6, 7)  # L-elbow -> L-wrist of both persons
    out[..., cx] *= 0.04
    out[..., cy] *= 0.04
    weak = PoseDecoder(paf_threshold=0.05).decode(out)
    assert len(weak) == 2 and (weak[:, 7, 2] == 0).all()
    loose = PoseDecoder(paf_threshold=0.03).decode(out)
    assert (loose[:, 7, 2] > 0).all()


def test_peak_threshold():
    faint = [p.copy() for p in TWO]
    out = render(TWO)
    out[..., 13] *= 0.08  # L-ankle heatmaps below the default 0.1
    assert (PoseDecoder().decode(out)[:, 13, 2] == 0).all()
    found = PoseDecoder(peak_threshold=0.05).decode(out)
    assert (found[:, 13, 2] > 0.07).all()
    for f, i in zip(found, match(found, faint)):
        assert np.linalg.norm(f[13, :2] - faint[i][13, :2]) < 1.0


def test_min_parts_and_person_score():
    small = np.zeros((18, 3), np.float32)
    small[[1, 2, 3]] = person(320, 200)[[1, 2, 3]]  # neck, R-shoulder, R-elbow only
    out = render([TWO[0], small])
    assert len(PoseDecoder(min_parts=4).decode(out)) == 1
    kps = PoseDecoder(min_parts=3).decode(out)
    assert len(kps) == 2 and (kps[1, [1, 2, 3], 2] > 0).all() and (kps[1, 4:, 2] == 0).all()
    assert len(PoseDecoder(min_person_score=1.9).decode(out)) == 0  # scores are about 1.5-1.9 here


def test_duplicate_persons_hand_worked():
    host = person(200, 200)  # 18 joints
    h = float(np.ptp(host[:, 1]))
    mirror = np.zeros((18, 3), np.float32)  # R-hip, R-knee, R-ankle found again on the left leg
    mirror[[8, 9, 10]] = host[[11, 12, 13]] + (2.0, 1.0, 0.0)
    beside = mirror.copy()
    beside[:, 0] += np.where(beside[:, 2] > 0, h, 0.0)  # the same three joints one height to the right
    arm = np.zeros((18, 3), np.float32)  # six joints on the body: more than DUPLICATE_MAX_PARTS
    arm[[2, 3, 4, 5, 6, 7]] = host[[2, 3, 4, 5, 6, 7]]
    edge = mirror.copy()
    edge[9, 0] += 0.3 * h  # one joint 0.3 heights outside the knee, off the body: not all on it
    got = duplicate_persons(np.stack([host, mirror, beside, arm, edge]), 0.15)
    assert got.tolist() == [False, True, False, False, False]
    assert duplicate_persons(np.stack([host, mirror]), 0.0).tolist() == [False, False]
    assert duplicate_persons(np.stack([mirror, mirror, mirror]), 0.15).tolist() == [False, True, True]  # the first stays
    assert duplicate_persons(np.zeros((0, 18, 3), np.float32), 0.15).shape == (0,)
    with pytest.raises(ValueError):
        PoseDecoder(duplicate_distance=1.5)


def test_empty_and_bad_input():
    empty = PoseDecoder().decode(np.zeros((H, W, NUM_OUTPUT_CHANNELS), np.float32))
    assert empty.shape == (0, 18, 3) and empty.dtype == np.float32
    lonely = np.zeros((H, W, NUM_OUTPUT_CHANNELS), np.float32)
    lonely[10, 10, 0] = 1.0  # a nose without any limb
    assert PoseDecoder().decode(lonely).shape == (0, 18, 3)
    with pytest.raises(ValueError):
        PoseDecoder().decode(np.zeros((H, W, 19), np.float32))
    with pytest.raises(ValueError):
        PoseDecoder(upsample=0)


def test_limb_scores_match_per_pair_reference():
    rng = np.random.default_rng(1)
    dec = PoseDecoder()
    paf = rng.normal(size=(H, W, 2)).astype(np.float32)
    ca = np.c_[rng.uniform(0, 431, (5, 2)), np.ones(5)].astype(np.float32)
    cb = np.c_[rng.uniform(0, 367, (4, 2)), np.ones(4)].astype(np.float32)
    score, valid = dec.limb_scores(paf, ca, cb, image_height=368)
    for i in range(len(ca)):
        for j in range(len(cb)):
            v = cb[j, :2] - ca[i, :2]
            n = np.linalg.norm(v)
            projs = []
            for t in np.linspace(0, 1, dec.paf_samples):
                p = ca[i, :2] + t * v
                f = dec._sample_paf(paf, np.array(p[0]), np.array(p[1]))
                projs.append(float(f @ (v / n)))
            ref = np.mean(projs) + min(0.5 * 368 / n - 1, 0)
            assert score[i, j] == pytest.approx(ref, abs=1e-5)
            assert valid[i, j] == (sum(p > 0.05 for p in projs) > 8 and ref > 0)
