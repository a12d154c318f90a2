"""MSR Action3D reader (Li, Zhang, Liu, CVPR-W 2010): Kinect v1, 20 joints, one person, 15 fps.

Files (``data/MANIFEST.md``): ``screen_uvd/aAA_sSS_eEE_skeleton.txt`` holds ``u v d c`` per joint
(pixels of the 320x240 depth image, raw depth, tracking confidence) and
``real3d/aAA_sSS_eEE_skeleton3D.txt`` holds ``x y z c`` in metres, 20 lines a frame.

Facts measured on the shared copy (and used here):

* The two sets are one pinhole camera: ``u = 285.7 x/z + 160``, ``v = -285.7 y/z + 120``
  (residual 0.29 px) and ``d = 250 z``; so ``real3d`` z is the depth of the ``screen_uvd`` pixels.
* The depth images are **mirrored**, and the joint order is 1 L-shoulder, 2 R-shoulder, ...
  (odd = left, even = right), not the R-first order once written in the manifest: in the one-arm
  and one-leg actions (a01-a05, a14), which subjects were told to do with their right limb, the
  even joints 11 (wrist) and 15/17 (knee/ankle) move most in 96-100 % of sequences, and joint 2 lies
  on the image right of joint 1. The reader un-mirrors ``u`` (``u' = 320 - u``) and
  ``engines.layouts.MSR20_TO_COCO18`` maps the even joints to COCO right joints, so a subject facing
  the camera has the right shoulder on the image left, as a real camera and OpenPose see it.
* All-zero frames (tracking not started or lost) occur in 20 sequences; leading and trailing ones
  are trimmed, inner ones kept as missing (score 0). ``a13_s09_e02`` is all zeros and is skipped.
  ``a13_s09_e03`` has 255 screen frames but 936 real3d frames, of which only the first 196 are
  non-zero in both and agree to 0.25 px under the projection above: sequences are cut to the
  frames present in both sets.
* A few joints above the image top (raised hands in a06, a18) hold ``v = 2147480000``, an
  overflowed negative value; they are rebuilt from ``real3d`` through the pinhole above.
* The ``c`` column is not a detector score (it is 0 for the neck in most frames); every joint of a
  tracked frame gets score 1.
* ``points3d`` are the ``real3d`` joints in the OpenCV frame of the *un-mirrored* camera:
  ``(X, Y, Z) = (-x, -y, z)``, so ``u' = 285.7 X/Z + 160``, ``v = 285.7 Y/Z + 120`` gives the
  reader's keypoints to at most 0.54 px over all 566 sequences (the ``screen_uvd`` rounding and
  the 0.29 px fit above; exact for the rebuilt rows).
  Upper-arm length (shoulder-elbow) is 0.26-0.29 m (5th-95th percentile over sequences).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from engines.datasets import SkeletonSequence
from engines.layouts import MSR20_TO_COCO18, remap_to_coco18

log = logging.getLogger(__name__)

#: The 20 MSR Action3D actions, a01..a20, in order.
MSR_ACTIONS: tuple[str, ...] = (
    "high_arm_wave", "horizontal_arm_wave", "hammer", "hand_catch", "forward_punch",
    "high_throw", "draw_x", "draw_tick", "draw_circle", "hand_clap",
    "two_hand_wave", "side_boxing", "bend", "forward_kick", "side_kick",
    "jogging", "tennis_swing", "tennis_serve", "golf_swing", "pick_up_and_throw",
)
#: Action subsets of the standard protocol (1-based action indices), as in
#: ``protocol/tr_te_splits.mat`` (``action_sets``), checked against the file.
ACTION_SETS: dict[str, tuple[int, ...]] = {
    "AS1": (2, 3, 5, 6, 10, 13, 18, 20),
    "AS2": (1, 4, 7, 8, 9, 11, 12, 14),
    "AS3": (6, 14, 15, 16, 17, 18, 19, 20),
}
#: Cross-subject (X-Sub) protocol: these subjects train, the others (2, 4, 6, 8, 10) test.
XSUB_TRAIN_SUBJECTS: tuple[int, ...] = (1, 3, 5, 7, 9)
#: Known all-zero sequences.
SKIP: frozenset[str] = frozenset({"a13_s09_e02"})
FRAME_SIZE: tuple[int, int] = (320, 240)
FPS: float = 15.0
#: Focal length in pixels of the 320x240 depth image (fitted from the two sets, see module doc).
FOCAL_PX: float = 285.7

_NAME = re.compile(r"a(\d\d)_s(\d\d)_e(\d\d)$")


def msr_dir(data_dir: str | Path) -> Path:
    """The MSR Action3D folder under a data root (``<data_dir>/skeletons/msr_action3d``) or itself."""
    data_dir = Path(data_dir)
    if (data_dir / "screen_uvd").is_dir():
        return data_dir
    return data_dir / "skeletons" / "msr_action3d"


def _read(path: Path) -> np.ndarray:
    arr = np.loadtxt(path, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 4 or len(arr) % 20:
        raise ValueError(f"{path}: expected 20 rows of 4 numbers per frame, got {arr.shape}")
    return arr.reshape(-1, 20, 4)  # (L, 20, 4)


def read_sequence(root: Path, name: str) -> SkeletonSequence | None:
    """Read one sequence ``aAA_sSS_eEE``; returns None when it has no tracked frame.

    Returns:
        keypoints ``(L, 1, 18, 3)`` in pixels of the un-mirrored 320x240 image, depth
        ``(L, 1, 18)`` in metres, points3d ``(L, 1, 18, 3)`` metres in the OpenCV frame of the
        un-mirrored camera (module docstring), label = action name, subject = int.
    """
    match = _NAME.match(name)
    if match is None:
        raise ValueError(f"not an MSR Action3D sequence name: {name}")
    action, subject, rep = (int(g) for g in match.groups())
    uvd = _read(root / "screen_uvd" / f"{name}_skeleton.txt")
    xyz = _read(root / "real3d" / f"{name}_skeleton3D.txt")
    if len(uvd) != len(xyz):
        log.info("%s: %d screen frames vs %d real3d frames; keeping the common part", name, len(uvd), len(xyz))
    length = min(len(uvd), len(xyz))
    uvd, xyz = uvd[:length], xyz[:length]
    tracked = (np.abs(uvd).sum(axis=(1, 2)) > 0) & (xyz[..., 2] > 0).all(axis=1)  # (L,)
    if not tracked.any():
        return None
    first, last = np.flatnonzero(tracked)[[0, -1]]
    uvd, xyz, tracked = uvd[first:last + 1], xyz[first:last + 1], tracked[first:last + 1]
    # Joints above the image top were stored as 2**31 (unsigned overflow of a negative v):
    # rebuild those from real3d through the same pinhole.
    z_safe = np.where(xyz[..., 2] > 0, xyz[..., 2], 1.0)
    projected = np.stack([FOCAL_PX * xyz[..., 0] / z_safe + 0.5 * FRAME_SIZE[0],
                          -FOCAL_PX * xyz[..., 1] / z_safe + 0.5 * FRAME_SIZE[1]], axis=-1)  # (L, J, 2)
    uv = uvd[..., :2]
    overflow = (np.abs(uv) > 10 * FRAME_SIZE[0]).any(axis=-1, keepdims=True)  # (L, J, 1)
    uv = np.where(overflow, projected, uv)
    kp = np.zeros((len(uvd), 20, 3), dtype=np.float32)  # (L, J, 3)
    kp[..., 0] = FRAME_SIZE[0] - uv[..., 0]  # un-mirror
    kp[..., 1] = uv[..., 1]
    kp[..., 2] = tracked[:, None].astype(np.float32)
    depth = np.where(tracked[:, None], xyz[..., 2], 0.0).astype(np.float32)  # (L, J)
    # OpenCV frame of the un-mirrored camera: x right, y down (real3d has x mirrored, y up)
    points = np.where(tracked[:, None, None], xyz[..., :3] * np.array([-1.0, -1.0, 1.0]), 0.0)  # (L, J, 3)
    kp18 = remap_to_coco18(kp, MSR20_TO_COCO18)  # (L, 18, 3)
    depth18 = remap_to_coco18(depth[..., None], MSR20_TO_COCO18)[..., 0]  # (L, 18)
    points18 = remap_to_coco18(points.astype(np.float32), MSR20_TO_COCO18)  # (L, 18, 3)
    return SkeletonSequence(
        name=name, keypoints=kp18[:, None], frame_size=FRAME_SIZE, fps=FPS, depth=depth18[:, None],
        points3d=points18[:, None],
        label=MSR_ACTIONS[action - 1], subject=subject,
        meta={"dataset": "msr_action3d", "action": action, "repetition": rep, "focal_px": FOCAL_PX},
    )


def load_msr_action3d(data_dir: str | Path, actions: tuple[int, ...] | None = None,
                      subjects: tuple[int, ...] | None = None) -> list[SkeletonSequence]:
    """Read MSR Action3D as COCO-18 :class:`SkeletonSequence` records, sorted by name.

    Args:
        data_dir: the data root (``../shared/data``) or the ``msr_action3d`` folder itself.
        actions: 1-based action indices to keep (e.g. ``ACTION_SETS["AS1"]``); all when None.
        subjects: subject ids to keep (e.g. ``XSUB_TRAIN_SUBJECTS``); all when None.

    Returns:
        One record per usable sequence (566 of 567 on the full set): ``keypoints``
        ``(L, 1, 18, 3)`` pixels of a 320x240 image + score, ``depth`` ``(L, 1, 18)`` metres,
        ``points3d`` ``(L, 1, 18, 3)`` metres (x right, y down, z forward), ``fps`` 15, ``label``
        the action name, ``subject`` int, ``meta["action"]`` 1-based index.

    Raises:
        FileNotFoundError: if the folder has no ``screen_uvd`` files.
    """
    root = msr_dir(data_dir)
    files = sorted((root / "screen_uvd").glob("a??_s??_e??_skeleton.txt"))
    if not files:
        raise FileNotFoundError(f"no MSR Action3D files under {root / 'screen_uvd'}")
    out = []
    for path in files:
        name = path.name[: -len("_skeleton.txt")]
        action, subject = int(name[1:3]), int(name[5:7])
        if name in SKIP or (actions is not None and action not in actions) or (
                subjects is not None and subject not in subjects):
            continue
        seq = read_sequence(root, name)
        if seq is None:
            log.warning("%s has no tracked frame; skipped", name)
            continue
        out.append(seq)
    return out


def xsub_split(sequences: list[SkeletonSequence]) -> tuple[list[SkeletonSequence], list[SkeletonSequence]]:
    """Cross-subject (X-Sub) split: ``(train, test)`` with subjects 1, 3, 5, 7, 9 training."""
    train = [s for s in sequences if s.subject in XSUB_TRAIN_SUBJECTS]
    test = [s for s in sequences if s.subject not in XSUB_TRAIN_SUBJECTS]
    return train, test
