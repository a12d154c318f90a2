"""Keypoint layouts and the joint mappings between them, kept as data in one place.

Every dataset and detector in the project is converted to the OpenPose COCO-18 layout
(``V = 18``) through the tables below; nothing else in the code base remaps joints.

COCO-18 order (OpenPose): 0 nose, 1 neck, 2 R-shoulder, 3 R-elbow, 4 R-wrist, 5 L-shoulder,
6 L-elbow, 7 L-wrist, 8 R-hip, 9 R-knee, 10 R-ankle, 11 L-hip, 12 L-knee, 13 L-ankle,
14 R-eye, 15 L-eye, 16 R-ear, 17 L-ear.
"""
from __future__ import annotations

COCO18_NAMES: tuple[str, ...] = (
    "nose", "neck",
    "r_shoulder", "r_elbow", "r_wrist",
    "l_shoulder", "l_elbow", "l_wrist",
    "r_hip", "r_knee", "r_ankle",
    "l_hip", "l_knee", "l_ankle",
    "r_eye", "l_eye", "r_ear", "l_ear",
)
NUM_JOINTS: int = len(COCO18_NAMES)  # V = 18

#: Bones of the COCO-18 skeleton graph as (child, parent) pairs, 0-based; the physical
#: connectivity used by ST-GCN's ``openpose`` layout (Yan et al. 2018, Sec. 3.2).
COCO18_EDGES: tuple[tuple[int, int], ...] = (
    (4, 3), (3, 2), (7, 6), (6, 5), (13, 12), (12, 11), (10, 9), (9, 8),
    (11, 5), (8, 2), (5, 1), (2, 1), (0, 1), (15, 0), (14, 0), (17, 15), (16, 14),
)
#: Centre joint for ST-GCN spatial partitioning (the neck).
COCO18_CENTER: int = 1


def _to_coco18(source_1based: dict[int, int | tuple[int, ...]]) -> tuple[int, ...]:
    """Build a COCO-18 gather table from ``{source joint (1-based): COCO index or indices}``.

    Returns a tuple of length 18: entry ``k`` is the 0-based source joint that feeds COCO joint
    ``k``, or ``-1`` when the source layout has no such joint (it stays missing, score 0).
    """
    table = [-1] * NUM_JOINTS
    for src, dst in source_1based.items():
        for k in (dst if isinstance(dst, tuple) else (dst,)):
            if table[k] != -1:
                raise ValueError(f"COCO joint {k} mapped twice")
            table[k] = src - 1
    return tuple(table)


_HEAD = (0, 14, 15, 16, 17)  # nose, eyes and ears all take the head joint (SARDE Table 2)

#: NTU RGB+D (Kinect v2, 25 joints, 1-based) -> COCO-18: SARDE Table 2 exactly.
NTU25_TO_COCO18 = _to_coco18({
    4: _HEAD, 21: 1, 9: 2, 10: 3, 11: 4, 5: 5, 6: 6, 7: 7,
    17: 8, 18: 9, 19: 10, 13: 11, 14: 12, 15: 13,
})

#: MSR Action3D (Kinect v1, 20 joints, file order of ``data/MANIFEST.md``, 1-based) -> COCO-18,
#: by the same rule as Table 2: 1 R-shoulder, 2 L-shoulder, 3 neck, 5 R-hip, 6 L-hip,
#: 8 R-elbow, 9 L-elbow, 10 R-wrist, 11 L-wrist, 14 R-knee, 15 L-knee, 16 R-ankle,
#: 17 L-ankle, 20 head.
MSR20_TO_COCO18 = _to_coco18({
    20: _HEAD, 3: 1, 1: 2, 8: 3, 10: 4, 2: 5, 9: 6, 11: 7,
    5: 8, 14: 9, 16: 10, 6: 11, 15: 12, 17: 13,
})

#: UTD-MHAD (Kinect v1, 20 joints, ``Skeleton_joint_order.txt``, 1-based) -> COCO-18.
UTD20_TO_COCO18 = _to_coco18({
    1: _HEAD, 2: 1, 9: 2, 10: 3, 11: 4, 5: 5, 6: 6, 7: 7,
    17: 8, 18: 9, 19: 10, 13: 11, 14: 12, 15: 13,
})

#: SBU Kinect Interaction (15 joints, 1-based: 1 head, 2 neck, 3 torso, 4 L-shoulder,
#: 5 L-elbow, 6 L-hand, 7 R-shoulder, 8 R-elbow, 9 R-hand, 10 L-hip, 11 L-knee, 12 L-foot,
#: 13 R-hip, 14 R-knee, 15 R-foot) -> COCO-18. Hands and feet stand in for wrists and ankles.
SBU15_TO_COCO18 = _to_coco18({
    1: _HEAD, 2: 1, 7: 2, 8: 3, 9: 4, 4: 5, 5: 6, 6: 7,
    13: 8, 14: 9, 15: 10, 10: 11, 11: 12, 12: 13,
})


def remap_to_coco18(joints, table: tuple[int, ...]):
    """Gather a source-layout array into COCO-18 order.

    Args:
        joints: ``(..., J, C)`` NumPy array in the source layout (J source joints).
        table: one of the ``*_TO_COCO18`` tables.

    Returns:
        ``(..., 18, C)`` array; joints the source lacks are all-zero (missing).
    """
    import numpy as np

    src = np.asarray(joints)
    idx = np.asarray(table)
    out = src[..., np.where(idx >= 0, idx, 0), :].copy()
    out[..., idx < 0, :] = 0
    return out
