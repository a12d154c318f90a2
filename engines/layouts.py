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

#: NTU RGB+D (Kinect v2, 25 joints, 1-based) -> COCO-18: SARDE Table 2 with the sides swapped
#: (Kinect "left" joints -> COCO right joints). In NTU's colour pixels Kinect's side labels are
#: mirrored relative to an image-based detector: on the NTU sample (26 frames) the OpenPose-style
#: detector's R-shoulder/elbow/hip lie 14-20 px from Kinect's *left* joints 5/6/13 and 54-79 px from
#: the right ones (every lateral joint agrees better swapped; ``tests/test_detector_real.py``).
#: Swapping makes NTU skeletons match what the deployed detector outputs on the same pixels.
NTU25_TO_COCO18 = _to_coco18({
    4: _HEAD, 21: 1, 5: 2, 6: 3, 7: 4, 9: 5, 10: 6, 11: 7,
    13: 8, 14: 9, 15: 10, 17: 11, 18: 12, 19: 13,
})

#: MSR Action3D (Kinect v1, 20 joints, 1-based) -> COCO-18, by the same rule as Table 2.
#: File order: 1 L-shoulder, 2 R-shoulder, 3 neck, 4 spine, 5 L-hip, 6 R-hip, 7 hip-centre,
#: 8 L-elbow, 9 R-elbow, 10 L-wrist, 11 R-wrist, 12 L-hand, 13 R-hand, 14 L-knee, 15 R-knee,
#: 16 L-ankle, 17 R-ankle, 18 L-foot, 19 R-foot, 20 head. (``data/MANIFEST.md`` lists odd joints
#: as right; the data say otherwise: in the right-handed/right-footed actions a01-a05 and a14 the
#: even joints 11, 15, 17 move most. See ``engines.datasets.msr`` for the evidence and the
#: mirrored depth image.)
MSR20_TO_COCO18 = _to_coco18({
    20: _HEAD, 3: 1, 2: 2, 9: 3, 11: 4, 1: 5, 8: 6, 10: 7,
    6: 8, 15: 9, 17: 10, 5: 11, 14: 12, 16: 13,
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


#: UR Fall Detection keypoints (``skeletons/urfd_falls/pose_urfd_3classes.csv``; AlphaPose, the 13 body
#: joints of COCO-17 without eyes/ears, 1-based in column order: 1 nose, 2 L-shoulder, 3 R-shoulder,
#: 4 L-elbow, 5 R-elbow, 6 L-wrist, 7 R-wrist, 8 L-hip, 9 R-hip, 10 L-knee, 11 R-knee, 12 L-ankle,
#: 13 R-ankle) -> COCO-18. Left/right follow COCO's convention (the person's own side) as OpenPose's
#: do, so no swap (the L-shoulder lies right of the R-shoulder in the image in 76 % of the rows,
#: the people mostly face the camera). Eyes and ears (14-17) have no source and stay missing; the
#: neck (1) has none either and is synthesised by ``engines.datasets.urfd`` as the shoulder midpoint.
URFD13_TO_COCO18 = _to_coco18({
    1: 0, 2: 5, 3: 2, 4: 6, 5: 3, 6: 7, 7: 4,
    8: 11, 9: 8, 10: 12, 11: 9, 12: 13, 13: 10,
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


class JointMap:
    """A source skeleton layout -> COCO-18, given as data (the public form of the tables above).

    Built from a mapping (YAML / JSON, :func:`load_joint_map`)::

        source: [head, shoulder_center, spine, ...]   # the J source joints, in file order
        coco18:                                       # COCO-18 joint name -> source joint(s)
          nose: head                                  # a source name, or a 0-based index
          neck: [l_shoulder, r_shoulder]              # a list: the mean of these (all must be present)
          r_eye: head                                 # one source joint may feed several COCO joints

    COCO-18 joints the map leaves out stay missing (all zero, score 0); the recipe can mask them
    (``window.mask_joints``) in training and in the daemon alike.

    Raises:
        ValueError: an unknown COCO-18 name, an unknown source name, an index out of range, or an
        empty map (the message names the entry).
    """

    def __init__(self, mapping: dict):
        if not isinstance(mapping, dict) or not isinstance(mapping.get("coco18"), dict) or not mapping["coco18"]:
            raise ValueError("joint map: needs a non-empty `coco18:` mapping of COCO-18 joint name -> source joint(s)")
        unknown = set(mapping) - {"source", "coco18"}
        if unknown:
            raise ValueError(f"joint map: unknown key(s) {sorted(unknown)}; allowed: coco18, source")
        self.source: tuple[str, ...] = tuple(str(s) for s in mapping.get("source") or ())
        if len(set(self.source)) != len(self.source):
            raise ValueError("joint map: duplicate names in `source`")
        sources: list[tuple[int, ...]] = [()] * NUM_JOINTS
        for name, src in mapping["coco18"].items():
            if name not in COCO18_NAMES:
                raise ValueError(f"joint map: {name!r} is not a COCO-18 joint; one of {list(COCO18_NAMES)}")
            items = src if isinstance(src, list) else [src]
            if not items:
                raise ValueError(f"joint map: {name}: empty source list")
            sources[COCO18_NAMES.index(name)] = tuple(self._index(name, s) for s in items)
        #: per COCO-18 joint, the 0-based source joints averaged into it (``()`` = missing).
        self.sources: tuple[tuple[int, ...], ...] = tuple(sources)

    def _index(self, name: str, src) -> int:
        if isinstance(src, bool):
            raise ValueError(f"joint map: {name}: {src!r} is not a source joint")
        if isinstance(src, int):
            if src < 0 or (self.source and src >= len(self.source)):
                raise ValueError(f"joint map: {name}: source index {src} out of range")
            return src
        if str(src) not in self.source:
            raise ValueError(f"joint map: {name}: source joint {src!r} is not in `source` {list(self.source)}")
        return self.source.index(str(src))

    @property
    def num_source_joints(self) -> int:
        """``J``: the source layout's joint count (from ``source``, else the largest index + 1)."""
        return len(self.source) or 1 + max(i for s in self.sources for i in s)

    def apply(self, joints, valid=None):
        """Gather (and average) source joints into COCO-18.

        Args:
            joints: ``(..., J, C)`` array in the source layout.
            valid: ``(..., J)`` bool, the joints that were observed (default: all).

        Returns:
            ``(out (..., 18, C) float32, valid (..., 18) bool)``: a COCO joint fed by several source
            joints is their mean and is valid only where all of them are; unmapped joints are zero
            and invalid.

        Raises:
            ValueError: ``J`` does not match the map.
        """
        import numpy as np

        src = np.asarray(joints, np.float32)
        if src.shape[-2] != self.num_source_joints:
            raise ValueError(f"joint map expects {self.num_source_joints} source joints, got {src.shape[-2]}")
        ok = np.ones(src.shape[:-1], bool) if valid is None else np.asarray(valid, bool)
        out = np.zeros(src.shape[:-2] + (NUM_JOINTS, src.shape[-1]), np.float32)
        out_ok = np.zeros(src.shape[:-2] + (NUM_JOINTS,), bool)
        for k, idx in enumerate(self.sources):
            if idx:
                out[..., k, :] = src[..., list(idx), :].mean(axis=-2)
                out_ok[..., k] = ok[..., list(idx)].all(axis=-1)
        out[~out_ok] = 0.0
        return out, out_ok


def load_joint_map(path) -> JointMap:
    """Read a :class:`JointMap` from a YAML (or JSON) file.

    Raises:
        FileNotFoundError: no such file. ValueError: not a valid joint map (one line).
    """
    from pathlib import Path

    import yaml

    with open(Path(path), encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    try:
        return JointMap(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
