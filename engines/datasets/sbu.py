"""SBU Kinect Interaction reader (Yun et al., CVPR-W 2012): two persons, 15 joints, 8 classes.

File ``sAAsBB/CC/NNN/skeleton_pos.txt``: CSV rows ``frame, PA(1..15), PB(1..15)``, each joint
``(x, y, z)``. The dataset README (quoted in public copies) says x, y are normalised to [0, 1], z to
[0, 7.8125], and that the original joint positions are
``X = 1280 - 2560 x``, ``Y = 960 - 1920 y``, ``Z = z * 10000 / 7.8125`` (millimetres), from which
pixel positions need the Kinect skeleton-to-depth-image transform. So x, y are **not** image
coordinates but normalised camera-space coordinates. Measured on the shared copy (282 sequences):

* 3D bone lengths are most rigid over time (mean coefficient of variation 2.8 %) and most
  left/right symmetric (5.3 % mean asymmetry) with the README's metric reading (X, Y, Z in mm,
  Z = 1280 z); reading x, y as image fractions of 640x480 with z in metres gives 5.4 % and 13.7 %
  and a head-to-foot height of 1.2 m. Depth is therefore ``Z = 1.28 z`` metres (2.0-3.2 m here).
* 2D pixels are made with the Kinect v1 depth-camera pinhole (focal 571.4 px at 640x480, which
  is the 285.7 px measured on MSR Action3D's 320x240 screen coordinates, and the Kinect SDK's
  skeleton-to-depth multiplier): ``u = 320 - f X / Z``, ``v = 240 - f Y / Z``. This keeps the
  data's left/right (person A at small x appears on the image left) and, unlike using x, y as
  image fractions, makes a person's image size shrink with distance as a real camera does.
* Left/right labels match the README's joint names: in ``kicking`` the more active person moves
  joint 15 (right foot) more than joint 12 in 37 of 40 sequences.
* ``points3d`` are the README's metric joints in the OpenCV frame of that camera,
  ``(X, Y, Z) = (-(1.28 - 2.56 x), -(0.96 - 1.92 y), 1.28 z)`` metres, so ``u = 320 + f X/Z``,
  ``v = 240 + f Y/Z`` is :func:`project`. They were checked before being offered: over the 282
  sequences (both persons) the shoulder-elbow length has median 0.294 m (right) / 0.280 m (left),
  5th-95th percentile 0.21-0.39 m, median within-sequence variation 3.8 %; thigh 0.43 m and shin
  (knee-foot) 0.41 m at about 1 %; head-to-foot 1.42 m; rescaling z by 0.7-1.5 only makes limbs
  less rigid (the README's scale is the minimum), so the reading is metric and isotropic.

The 5 folds are the dataset authors' own (README "Details"), kept as data below.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from engines.datasets import SkeletonSequence
from engines.datasets.convert import Pinhole, to_opencv_frame
from engines.layouts import SBU15_TO_COCO18, remap_to_coco18

log = logging.getLogger(__name__)

#: The 8 interaction classes, folder ``01``..``08`` in order.
SBU_CLASSES: tuple[str, ...] = (
    "approaching", "departing", "kicking", "punching", "pushing", "hugging", "shaking_hands", "exchanging",
)
#: 5-fold cross-validation over the 21 subject-pair sets, as listed by the dataset authors.
SBU_FOLDS: tuple[tuple[str, ...], ...] = (
    ("s01s02", "s03s04", "s05s02", "s06s04"),
    ("s02s03", "s02s07", "s03s05", "s05s03"),
    ("s01s03", "s01s07", "s07s01", "s07s03"),
    ("s02s01", "s02s06", "s03s02", "s03s06"),
    ("s04s02", "s04s03", "s04s06", "s06s02", "s06s03"),
)
FRAME_SIZE: tuple[int, int] = (640, 480)
FPS: float = 15.0
#: Kinect v1 depth-camera focal length in pixels at 640x480.
FOCAL_PX: float = 571.4
#: Metres per unit of the file's normalised z (README: Z[mm] = z * 10000 / 7.8125).
Z_SCALE_M: float = 1.28


def sbu_dir(data_dir: str | Path) -> Path:
    """The SBU folder under a data root (``<data_dir>/skeletons/sbu_kinect_interaction``) or itself."""
    data_dir = Path(data_dir)
    if (data_dir / SBU_FOLDS[0][0]).is_dir():
        return data_dir
    return data_dir / "skeletons" / "sbu_kinect_interaction"


def points_3d(raw: np.ndarray) -> np.ndarray:
    """Normalised SBU joints ``(..., 3)`` -> ``(..., 3)`` float32 metres, OpenCV frame (x right, y down)."""
    raw = np.asarray(raw, dtype=np.float64)
    return np.stack([2.56 * raw[..., 0] - 1.28, 1.92 * raw[..., 1] - 0.96, Z_SCALE_M * raw[..., 2]],
                    axis=-1).astype(np.float32)


def project(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised SBU joints -> (pixels, depth).

    Args:
        raw: ``(..., 3)`` file values ``(x, y, z)``.

    Returns:
        ``(..., 2)`` float32 pixels ``(u, v)`` of a 640x480 image and ``(...)`` float32 depth Z in
        metres (camera space, > 0).
    """
    raw = np.asarray(raw, dtype=np.float64)
    x_m = 1.28 - 2.56 * raw[..., 0]
    y_m = 0.96 - 1.92 * raw[..., 1]
    z_m = Z_SCALE_M * raw[..., 2]
    camera = Pinhole(FOCAL_PX, FOCAL_PX, 0.5 * FRAME_SIZE[0], 0.5 * FRAME_SIZE[1], *FRAME_SIZE)
    pixels = camera.project(to_opencv_frame(np.stack([x_m, y_m, z_m], -1), "-x,-y,z"))
    return pixels, z_m.astype(np.float32)


def read_sequence(path: Path) -> SkeletonSequence:
    """Read one ``skeleton_pos.txt``; keypoints ``(L, 2, 18, 3)`` pixels, depth ``(L, 2, 18)`` m,
    points3d ``(L, 2, 18, 3)`` m (module docstring).

    Raises:
        ValueError: if a row does not have 1 + 2 x 15 x 3 = 91 columns.
    """
    rows = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    if rows.shape[1] != 91:
        raise ValueError(f"{path}: expected 91 columns, got {rows.shape[1]}")
    raw = rows[:, 1:].reshape(-1, 2, 15, 3)  # (L, M, J, 3)
    pixels, depth = project(raw)
    valid = (raw[..., 2] > 0).astype(np.float32)  # (L, M, J)
    kp = np.concatenate([pixels, valid[..., None]], axis=-1)  # (L, M, J, 3)
    depth = depth * valid
    points = points_3d(raw) * valid[..., None]  # (L, M, J, 3)
    set_name, cls, rep = path.parts[-4], path.parts[-3], path.parts[-2]
    return SkeletonSequence(
        name=f"{set_name}_{cls}_{rep}",
        keypoints=remap_to_coco18(kp, SBU15_TO_COCO18),  # (L, 2, 18, 3)
        frame_size=FRAME_SIZE, fps=FPS,
        depth=remap_to_coco18(depth[..., None], SBU15_TO_COCO18)[..., 0],  # (L, 2, 18)
        points3d=remap_to_coco18(points, SBU15_TO_COCO18),  # (L, 2, 18, 3)
        label=SBU_CLASSES[int(cls) - 1], subject=set_name,
        meta={"dataset": "sbu", "class_index": int(cls), "repetition": int(rep), "fold": fold_of(set_name),
              "focal_px": FOCAL_PX},
    )


def fold_of(set_name: str) -> int:
    """1-based fold number of a subject-pair set name such as ``s01s02``.

    Raises:
        KeyError: for a set name outside the 21 SBU sets.
    """
    for i, fold in enumerate(SBU_FOLDS, start=1):
        if set_name in fold:
            return i
    raise KeyError(f"unknown SBU set {set_name}")


def load_sbu(data_dir: str | Path, sets: tuple[str, ...] | None = None) -> list[SkeletonSequence]:
    """Read SBU Kinect Interaction as COCO-18 :class:`SkeletonSequence` records, sorted by path.

    Args:
        data_dir: the data root (``../shared/data``) or the SBU folder itself.
        sets: subject-pair set names to keep; all 21 when None.

    Returns:
        282 records on the full set: ``keypoints`` ``(L, 2, 18, 3)`` pixels of a 640x480 image and
        score (1 = tracked), ``depth`` ``(L, 2, 18)`` metres, ``fps`` 15, ``label`` one of
        :data:`SBU_CLASSES`, ``subject`` the set name, ``meta["fold"]`` 1..5.

    Raises:
        FileNotFoundError: when no ``skeleton_pos.txt`` is found.
    """
    root = sbu_dir(data_dir)
    paths = sorted(root.glob("s??s??/0?/???/skeleton_pos.txt"))
    if not paths:
        raise FileNotFoundError(f"no SBU skeleton_pos.txt under {root}")
    return [read_sequence(p) for p in paths if sets is None or p.parts[-4] in sets]


def fold_split(sequences: list[SkeletonSequence], test_fold: int) -> tuple[list[SkeletonSequence], list[SkeletonSequence]]:
    """``(train, test)`` with the sets of ``test_fold`` (1..5) held out."""
    if not 1 <= test_fold <= len(SBU_FOLDS):
        raise ValueError(f"test_fold must be 1..{len(SBU_FOLDS)}, got {test_fold}")
    test_sets = SBU_FOLDS[test_fold - 1]
    return [s for s in sequences if s.subject not in test_sets], [s for s in sequences if s.subject in test_sets]
