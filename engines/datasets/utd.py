"""UTD-MHAD reader (Chen, Jafari, Kehtarnavaz, ICIP 2015): Kinect v1, 20 joints, one person, 27 actions.

Files: ``skeleton/aA_sS_tT_skeleton.mat`` (MATLAB v5), variable ``d_skel`` ``(20, 3, L)``: camera-space
``(x, y, z)`` in metres per joint and frame, joint order ``Skeleton_joint_order.txt`` (1 head,
2 shoulder centre, 3 spine, 4 hip centre, 5-8 left shoulder/elbow/wrist/hand, 9-12 right ...,
13-16 left hip/knee/ankle/foot, 17-20 right ...). There are no pixel coordinates.

Facts measured on the shared copy (861 sequences) and used here:

* The side labels are anatomical and correct: in the right-arm actions (a1-a3, a5, a8-a12, a15, a17,
  a19-a21, done with the right hand by protocol) joint 11 (right wrist) moves more than joint 7 in
  97-100 % of sequences, and in a26 "lunge (left foot forward)" the right ankle moves less than the
  left in 100 %. ``engines.layouts.UTD20_TO_COCO18`` (by name) is therefore kept unchanged.
* Right joints have ``x > 0`` (Kinect skeleton space: x towards the sensor's left, y up, z away from
  the sensor). 2D pixels are made with the Kinect v1 depth-camera pinhole at 320x240, the same one
  measured on MSR Action3D (focal 285.7 px, principal point at the image centre), un-mirrored as a
  real camera sees the scene: ``u = 160 - f x / z``, ``v = 120 - f y / z``. A subject facing the
  camera then has the right shoulder on the image left, as OpenPose sees it.
* Depth is ``z`` (metres, about 2.5-3.5 m). Recording rate 30 fps; every joint of every frame is
  tracked (score 1).
* ``points3d`` are ``d_skel`` in the OpenCV frame of that un-mirrored camera,
  ``(X, Y, Z) = (-x, -y, z)``: ``u = 160 + f X/Z``, ``v = 120 + f Y/Z`` is :func:`project`.
  Upper-arm length 0.24-0.30 m (5th-95th percentile over sequences).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from engines.datasets import SkeletonSequence
from engines.datasets.convert import Pinhole, to_opencv_frame
from engines.datasets.msr import FOCAL_PX as MSR_FOCAL_PX, FRAME_SIZE as MSR_FRAME_SIZE
from engines.layouts import UTD20_TO_COCO18, remap_to_coco18

log = logging.getLogger(__name__)

#: The 27 UTD-MHAD actions, a1..a27, in order (dataset web page).
UTD_ACTIONS: tuple[str, ...] = (
    "swipe_left", "swipe_right", "wave", "clap", "throw", "arm_cross", "basketball_shoot", "draw_x",
    "draw_circle_cw", "draw_circle_ccw", "draw_triangle", "bowling", "boxing", "baseball_swing",
    "tennis_swing", "arm_curl", "tennis_serve", "push", "knock", "catch", "pickup_and_throw", "jog", "walk",
    "sit_to_stand", "stand_to_sit", "lunge", "squat",
)
#: Cross-subject (X-Sub) protocol: these subjects train, 2, 4, 6, 8 test.
XSUB_TRAIN_SUBJECTS: tuple[int, ...] = (1, 3, 5, 7)
FPS: float = 30.0
#: The same Kinect v1 depth camera as MSR Action3D: 320x240 pixels, focal length measured there.
FRAME_SIZE, FOCAL_PX = MSR_FRAME_SIZE, MSR_FOCAL_PX
PINHOLE = Pinhole(FOCAL_PX, FOCAL_PX, 0.5 * FRAME_SIZE[0], 0.5 * FRAME_SIZE[1], *FRAME_SIZE)

_NAME = re.compile(r"a(\d+)_s(\d+)_t(\d+)_skeleton$")


def utd_dir(data_dir: str | Path) -> Path:
    """The folder holding the ``.mat`` files under a data root (``<root>/skeletons/utd_mhad/skeleton``) or itself."""
    data_dir = Path(data_dir)
    for cand in (data_dir, data_dir / "skeleton", data_dir / "skeletons" / "utd_mhad" / "skeleton"):
        if any(cand.glob("a*_s*_t*_skeleton.mat")):
            return cand
    return data_dir / "skeletons" / "utd_mhad" / "skeleton"


def project(xyz: np.ndarray) -> np.ndarray:
    """Camera-space metres ``(..., 3)`` -> un-mirrored pixels ``(..., 2)`` of the 320x240 image (float32):
    Kinect skeleton space to the OpenCV frame (``-x, -y, z``), then the Kinect v1 pinhole
    (:class:`engines.datasets.convert.Pinhole`, the one projection rule of the public converter)."""
    return PINHOLE.project(to_opencv_frame(xyz, "-x,-y,z"))


def read_sequence(path: str | Path) -> SkeletonSequence:
    """Read one ``aA_sS_tT_skeleton.mat``.

    Returns:
        keypoints ``(L, 1, 18, 3)`` pixels of the 320x240 image + score 1, depth ``(L, 1, 18)``
        metres, points3d ``(L, 1, 18, 3)`` metres (x right, y down, z forward), fps 30, label = action name, subject = int, ``meta["action"]`` 1-based.

    Raises:
        ValueError: if the name or the ``d_skel`` shape is not UTD-MHAD's.
    """
    from scipy.io import loadmat

    path = Path(path)
    match = _NAME.match(path.stem)
    if match is None:
        raise ValueError(f"not a UTD-MHAD skeleton file: {path.name}")
    action, subject, trial = (int(g) for g in match.groups())
    skel = loadmat(path)["d_skel"]
    if skel.ndim != 3 or skel.shape[:2] != (20, 3):
        raise ValueError(f"{path}: d_skel must be (20, 3, L), got {skel.shape}")
    xyz = np.transpose(skel, (2, 0, 1)).astype(np.float64)  # (L, 20, 3)
    tracked = (xyz[..., 2] > 0).astype(np.float32)  # (L, 20)
    kp = np.concatenate([project(xyz), tracked[..., None]], axis=-1)  # (L, 20, 3)
    kp[tracked == 0] = 0.0
    depth = (xyz[..., 2] * tracked).astype(np.float32)
    points = (xyz * np.array([-1.0, -1.0, 1.0]) * tracked[..., None]).astype(np.float32)  # (L, 20, 3) OpenCV frame
    return SkeletonSequence(
        name=path.stem[: -len("_skeleton")],
        keypoints=remap_to_coco18(kp, UTD20_TO_COCO18)[:, None].astype(np.float32),  # (L, 1, 18, 3)
        frame_size=FRAME_SIZE, fps=FPS,
        depth=remap_to_coco18(depth[..., None], UTD20_TO_COCO18)[:, None, :, 0],  # (L, 1, 18)
        points3d=remap_to_coco18(points, UTD20_TO_COCO18)[:, None],  # (L, 1, 18, 3)
        label=UTD_ACTIONS[action - 1], subject=subject,
        meta={"dataset": "utd_mhad", "action": action, "trial": trial, "focal_px": FOCAL_PX},
    )


def load_utd_mhad(data_dir: str | Path, actions: tuple[int, ...] | None = None,
                  subjects: tuple[int, ...] | None = None) -> list[SkeletonSequence]:
    """Read UTD-MHAD skeletons as COCO-18 :class:`SkeletonSequence` records, sorted by (action, subject, trial).

    Args:
        data_dir: the data root (``../shared/data``) or the folder of ``.mat`` files.
        actions, subjects: 1-based ids to keep; all when None.

    Returns:
        861 records on the full set (see :func:`read_sequence`).

    Raises:
        FileNotFoundError: if no ``.mat`` file is found.
    """
    root = utd_dir(data_dir)
    paths = list(root.glob("a*_s*_t*_skeleton.mat"))
    if not paths:
        raise FileNotFoundError(f"no UTD-MHAD skeleton files under {root}")
    keyed = sorted((tuple(int(g) for g in _NAME.match(p.stem).groups()), p) for p in paths)
    return [read_sequence(p) for (a, s, _), p in keyed
            if (actions is None or a in actions) and (subjects is None or s in subjects)]


def xsub_split(sequences: list[SkeletonSequence]) -> tuple[list[SkeletonSequence], list[SkeletonSequence]]:
    """Cross-subject split ``(train, test)``: subjects 1, 3, 5, 7 train."""
    return ([s for s in sequences if s.subject in XSUB_TRAIN_SUBJECTS],
            [s for s in sequences if s.subject not in XSUB_TRAIN_SUBJECTS])
