"""Virtual surveillance cameras (engines.sarde.views) and the readers' metric ``points3d``, on real data."""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest

from engines.datasets.msr import FOCAL_PX as MSR_F, load_msr_action3d
from engines.datasets.ntu import read_ntu_skeleton
from engines.datasets.sbu import FOCAL_PX as SBU_F, load_sbu
from engines.datasets.utd import load_utd_mhad, project as utd_project
from engines.layouts import COCO18_EDGES, COCO18_NAMES
from engines.sarde.views import CameraRanges, estimate_up, project_virtual, sample_view, world_frame

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"
NTU_FILE = DATA / "skeletons" / "ntu_sample" / "S001C001P001R001A001.skeleton"
J = {n: i for i, n in enumerate(COCO18_NAMES)}
# bones between distinct joints (eyes and ears repeat the head in the Kinect layouts)
BONES = [(a, b) for a, b in COCO18_EDGES if a not in (14, 15, 16, 17) and b not in (14, 15, 16, 17)]

pytestmark = pytest.mark.skipif(not (DATA / "skeletons").is_dir(), reason="shared data not available")


@pytest.fixture(scope="module")
def msr():
    return load_msr_action3d(DATA)


@pytest.fixture(scope="module")
def utd():
    return load_utd_mhad(DATA)


@pytest.fixture(scope="module")
def sbu():
    return load_sbu(DATA)


def _pinhole(points: np.ndarray, f, c) -> np.ndarray:
    return f * points[..., :2] / points[..., 2:3] + np.asarray(c)


def _check_points3d(seq):
    p, kp = seq.points3d, seq.keypoints
    assert p is not None and p.dtype == np.float32 and p.shape == kp.shape
    ok = kp[..., 2] > 0
    assert np.all(p[~ok] == 0) and np.all(p[ok][:, 2] > 0)
    np.testing.assert_array_equal(p[..., 2], seq.depth)
    return ok


# --- readers -----------------------------------------------------------------------------------

def test_msr_points3d_project_onto_the_keypoints(msr):
    residuals = []
    for seq in msr:
        ok = _check_points3d(seq)
        residuals.append(np.abs(_pinhole(seq.points3d[ok], MSR_F, (160, 120)) - seq.keypoints[ok][:, :2]))
    residuals = np.concatenate(residuals)
    assert residuals.max() < 1.0  # pixels (0.29 px RMS: the fit of the two MSR sets)
    assert np.sqrt((residuals ** 2).mean()) < 0.5


def test_utd_points3d_project_onto_the_keypoints(utd):
    for seq in utd[::7]:
        ok = _check_points3d(seq)
        # the reader's own projection of the raw d_skel = the OpenCV pinhole of points3d
        np.testing.assert_allclose(_pinhole(seq.points3d[ok], MSR_F, (160, 120)), seq.keypoints[ok][:, :2], atol=1e-3)
        raw = seq.points3d[ok] * np.array([-1, -1, 1], np.float32)  # back to d_skel's axes
        np.testing.assert_allclose(utd_project(raw), seq.keypoints[ok][:, :2], atol=1e-3)


def test_sbu_points3d_are_metric_and_match_the_pixels(sbu):
    arms, cvs = [], []
    for seq in sbu:
        ok = _check_points3d(seq)
        np.testing.assert_allclose(_pinhole(seq.points3d[ok], SBU_F, (320, 240)), seq.keypoints[ok][:, :2], atol=1e-2)
        for m in range(2):
            good = ok[:, m, J["r_shoulder"]] & ok[:, m, J["r_elbow"]]
            arm = np.linalg.norm(seq.points3d[good, m, J["r_shoulder"]] - seq.points3d[good, m, J["r_elbow"]], axis=-1)
            if len(arm) >= 3:
                arms.append(arm.mean())
                cvs.append(arm.std() / arm.mean())
    assert 0.25 < np.median(arms) < 0.35  # metres: 0.294 measured
    assert np.median(cvs) < 0.06  # rigid over a sequence (3.8 % measured)


def test_ntu_points3d_convention():
    seq = read_ntu_skeleton(NTU_FILE)
    ok = _check_points3d(seq)
    p, kp = seq.points3d[ok].astype(np.float64), seq.keypoints[ok][:, :2].astype(np.float64)
    # colour pixels grow with +X and +Y (x right, y down); a fitted pinhole is good to a few pixels
    for axis in (0, 1):
        a = np.stack([p[:, axis] / p[:, 2], np.ones(len(p))], axis=1)
        coef, *_ = np.linalg.lstsq(a, kp[:, axis], rcond=None)
        assert 950 < coef[0] < 1150  # the Kinect v2 colour focal length, pixels
        assert np.abs(a @ coef - kp[:, axis]).max() < 5
    # facing the camera, the COCO right shoulder (Kinect's left, swapped table) is on the image
    # left in the colour pixels and in points3d alike
    assert np.mean(seq.keypoints[:, 0, J["r_shoulder"], 0] < seq.keypoints[:, 0, J["l_shoulder"], 0]) > 0.9
    assert np.mean(seq.points3d[:, 0, J["r_shoulder"], 0] < seq.points3d[:, 0, J["l_shoulder"], 0]) > 0.9


# --- virtual cameras ---------------------------------------------------------------------------

def _sequence(msr, name):
    return next(s for s in msr if s.name == name)


def test_shapes_dtypes_and_ranges(msr):
    seq = _sequence(msr, "a01_s01_e01")
    ranges = CameraRanges()
    rng = np.random.default_rng(0)
    for _ in range(50):
        view = sample_view(seq.points3d, rng, ranges)
        assert view.frame_size in ranges.image_sizes
        assert 2.0 <= view.height_m <= 5.0 and 2.5 <= view.distance_m <= 15.0 and 45 <= view.hfov_deg <= 100
        assert 0 <= view.yaw_deg < 360 and 10 <= view.pitch_deg <= 50
        np.testing.assert_allclose(view.rotation @ view.rotation.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(view.rotation) == pytest.approx(1.0)
    kp, depth, size = project_virtual(seq.points3d, np.random.default_rng(1))
    assert kp.shape == seq.keypoints.shape and kp.dtype == np.float32
    assert depth.shape == seq.depth.shape and depth.dtype == np.float32
    assert isinstance(size, tuple) and size in ranges.image_sizes
    again = project_virtual(seq.points3d, np.random.default_rng(1))
    np.testing.assert_array_equal(kp, again[0])  # reproducible from the generator
    with pytest.raises(ValueError):
        project_virtual(seq.points3d[:, 0], rng)
    with pytest.raises(ValueError):
        project_virtual(np.zeros_like(seq.points3d), rng)
    with pytest.raises(ValueError):
        CameraRanges(height_m=(5.0, 2.0))


def test_world_frame_stands_the_person_on_the_ground(msr):
    for seq in msr[::40]:
        basis, origin, up = world_frame(seq.points3d)
        np.testing.assert_allclose(up, [0, -1, 0])
        np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-12)
        world = (seq.points3d.astype(np.float64) - origin) @ basis.T  # (L, 1, 18, 3)
        ankles = world[:, 0, [J["r_ankle"], J["l_ankle"]], 2]
        assert np.percentile(ankles, 5) == pytest.approx(0.08, abs=0.02)  # ankle joints 8 cm up
        start = 0.5 * (world[:5, 0, J["r_hip"]] + world[:5, 0, J["l_hip"]]).mean(0)
        np.testing.assert_allclose(start[:2], 0.0, atol=1e-9)  # origin below the start hip centre
        # physical heights in the world frame: hip joints about 1 m, head 1.6-1.9 m
        assert 0.85 < np.median(0.5 * (world[:, 0, J["r_hip"], 2] + world[:, 0, J["l_hip"], 2])) < 1.3
        assert 1.45 < np.median(world[:, 0, J["nose"], 2]) < 2.0


def test_hand_checked_geometry(msr):
    """Optical axis -> image centre; at height h and pitch p the axis meets the ground h / tan(p) away."""
    seq = _sequence(msr, "a01_s01_e01")
    h, p = 3.0, 30.0
    ranges = CameraRanges(height_m=(h, h), pitch_deg=(p, p), distance_m=(6.0, 6.0), hfov_deg=(60.0, 60.0),
                          image_sizes=((640, 480),), aim=False)
    view = sample_view(seq.points3d, np.random.default_rng(3), ranges)
    assert view.pitch_deg == pytest.approx(p) and view.height_m == h
    assert view.focal_px == pytest.approx(320 / math.tan(math.radians(30)))
    right, down, forward = view.camera_rotation
    centre = view.centre
    np.testing.assert_allclose(centre, [0, -6.0, h])
    # a point on the optical axis, anywhere in front of the camera
    on_axis = centre + 4.2 * forward
    kp, depth = view.project(view.world_to_recording(on_axis))
    np.testing.assert_allclose(kp, [320, 240, 1], atol=1e-6)
    assert depth == pytest.approx(4.2)
    # the ground point h / tan(p) in front of the camera, and points beside it, lie on the centre row
    ahead = np.array([forward[0], forward[1], 0.0]) / np.hypot(forward[0], forward[1])
    ground = np.array([centre[0], centre[1], 0.0]) + h / math.tan(math.radians(p)) * ahead
    side = np.stack([ground, ground + right, ground - right, ground + [0, 0, 1.0]])
    kp, depth = view.project(view.world_to_recording(side))
    np.testing.assert_allclose(kp[:3, 1], 240, atol=1e-6)  # centre row
    np.testing.assert_allclose(kp[0, :2], [320, 240], atol=1e-6)
    slant = h / math.sin(math.radians(p))
    np.testing.assert_allclose(depth[:3], slant, atol=1e-9)
    np.testing.assert_allclose(kp[1:3, 0], [320 + view.focal_px / slant, 320 - view.focal_px / slant], atol=1e-4)
    assert kp[3, 1] < 240  # a point 1 m above the ground point is higher in the image
    # the camera is level: the world's vertical projects onto image columns at the centre
    assert abs(right[2]) < 1e-12


def test_yaw_180_swaps_left_and_right(msr):
    seq = _sequence(msr, "a10_s01_e01")  # hand clap, subject facing the camera
    front = CameraRanges(yaw_deg=(0.0, 0.0))
    back = CameraRanges(yaw_deg=(180.0, 180.0))
    r, l = J["r_shoulder"], J["l_shoulder"]
    assert np.mean(seq.keypoints[:, 0, r, 0] < seq.keypoints[:, 0, l, 0]) > 0.95  # the recording view
    rng = np.random.default_rng(5)
    for _ in range(10):
        kp, _, _ = project_virtual(seq.points3d, rng, front)
        assert np.mean(kp[:, 0, r, 0] < kp[:, 0, l, 0]) > 0.95  # right shoulder on the image left
        kp, _, _ = project_virtual(seq.points3d, rng, back)
        assert np.mean(kp[:, 0, r, 0] > kp[:, 0, l, 0]) > 0.95  # seen from behind: swapped


def _bone_lengths(points: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """(L, M, 18, 3), (L, M, 18) -> lengths of the bones whose both ends are ok (flat)."""
    out = [np.linalg.norm(points[..., a, :] - points[..., b, :], axis=-1)[ok[..., a] & ok[..., b]] for a, b in BONES]
    return np.concatenate(out)


def test_back_projected_bones_keep_their_lengths(msr, utd, sbu):
    rng = np.random.default_rng(7)
    for seq in [msr[0], msr[300], utd[0], utd[500], sbu[0], sbu[200]]:
        for _ in range(5):
            view = sample_view(seq.points3d, rng)
            kp, depth = view.project(seq.points3d)
            ok = kp[..., 2] > 0
            assert ok.any()
            w, h = view.frame_size
            back = np.stack([(kp[..., 0] - w / 2) * depth / view.focal_px,
                             (kp[..., 1] - h / 2) * depth / view.focal_px, depth], axis=-1)
            original = _bone_lengths(seq.points3d.astype(np.float64), ok)
            np.testing.assert_allclose(_bone_lengths(back, ok), original, atol=1e-3)  # < 1 mm


def test_two_persons_move_together(sbu):
    seq = sbu[100]
    ok0 = (seq.keypoints[..., 2] > 0).all(axis=(1, 2))
    rng = np.random.default_rng(11)
    for _ in range(5):
        view = sample_view(seq.points3d, rng)
        kp, depth = view.project(seq.points3d)
        w, h = view.frame_size
        back = np.stack([(kp[..., 0] - w / 2) * depth / view.focal_px,
                         (kp[..., 1] - h / 2) * depth / view.focal_px, depth], axis=-1)
        both = ok0 & (kp[:, :, J["neck"], 2] > 0).all(axis=1)
        gap = np.linalg.norm(back[both, 0, J["neck"]] - back[both, 1, J["neck"]], axis=-1)
        gap0 = np.linalg.norm(seq.points3d[both, 0, J["neck"]] - seq.points3d[both, 1, J["neck"]], axis=-1)
        np.testing.assert_allclose(gap, gap0, atol=1e-3)


def test_feet_below_head_for_every_camera(msr, utd):
    rng = np.random.default_rng(13)
    fractions = []
    for seq in msr[::5] + utd[::8]:
        for _ in range(3):
            view = sample_view(seq.points3d, rng)
            kp, _ = view.project(seq.points3d)
            world = (seq.points3d.astype(np.float64) - view.origin) @ view.world_rotation.T
            ankles_v = 0.5 * (kp[:, 0, J["r_ankle"], 1] + kp[:, 0, J["l_ankle"], 1])
            seen = (kp[:, 0, [J["nose"], J["r_ankle"], J["l_ankle"]], 2] > 0).all(axis=1)
            upright = world[:, 0, J["nose"], 2] > 1.2  # standing frames (bending towards a steep
            # camera can put the head below the feet in the image, as on real CCTV)
            below = ankles_v > kp[:, 0, J["nose"], 1]
            assert below[seen & upright].all(), (seq.name, view)
            fractions.append(below[seen].mean())
    assert np.mean(fractions) > 0.99


def test_persons_stay_in_frame(msr, utd):
    rng = np.random.default_rng(17)
    for sequences in (msr, utd):
        kept = []
        for seq in sequences[::3]:
            kp, _, _ = project_virtual(seq.points3d, rng)
            present = seq.keypoints[..., 2] > 0
            kept.append(kp[..., 2][present].mean())
        kept = np.array(kept)
        assert kept.mean() >= 0.9 and np.mean(kept >= 0.9) > 0.9


def test_missing_and_out_of_frame_joints_are_zero_rows(msr):
    seq = _sequence(msr, "a01_s01_e01")
    points = seq.points3d.copy()
    points[3:7, 0, J["l_wrist"]] = 0.0
    rng = np.random.default_rng(19)
    kp, depth, _ = project_virtual(points, rng)
    assert np.all(kp[3:7, 0, J["l_wrist"]] == 0) and np.all(depth[3:7, 0, J["l_wrist"]] == 0)
    # free pitch (no aiming), steep and narrow: the person is partly or wholly out of the image
    ranges = CameraRanges(aim=False, pitch_deg=(50.0, 50.0), distance_m=(15.0, 15.0), hfov_deg=(45.0, 45.0))
    kp, depth, (w, h) = project_virtual(points, rng, ranges)
    lost = kp[..., 2] == 0
    assert lost.mean() > 0.5
    assert np.all(kp[lost] == 0) and np.all(depth[lost] == 0)
    inside = ~lost
    assert np.all((kp[inside][:, 0] >= 0) & (kp[inside][:, 0] < w) & (kp[inside][:, 1] >= 0) & (kp[inside][:, 1] < h))


def test_auto_up_levels_a_pitched_ntu_camera():
    seq = read_ntu_skeleton(NTU_FILE)

    def lean(up):
        basis, origin, _ = world_frame(seq.points3d, up)
        world = (seq.points3d[:, 0].astype(np.float64) - origin) @ basis.T
        axis = world[:, J["neck"]] - 0.5 * (world[:, J["r_ankle"]] + world[:, J["l_ankle"]])
        return np.degrees(np.arctan2(np.hypot(axis[:, 0], axis[:, 1]), axis[:, 2])).mean()

    assert lean("camera") > 10  # the NTU camera is pitched: the body leans about 18 degrees
    assert lean("auto") < 5
    up = estimate_up(seq.points3d)
    assert 10 < np.degrees(np.arccos(-up[1])) < 30
    kp, _, _ = project_virtual(seq.points3d, np.random.default_rng(23), up="auto")
    assert kp[..., 2].mean() > 0.9
