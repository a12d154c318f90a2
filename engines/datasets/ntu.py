"""NTU RGB+D reader (Shahroudy et al., CVPR 2016): Kinect v2 ``.skeleton`` text files, 25 joints.

File format (one token list per line)::

    <frame count>
    per frame:  <body count>
      per body: <bodyID> <clippedEdges> <handLeftConfidence> <handLeftState> <handRightConfidence>
                <handRightState> <isRestricted> <leanX> <leanY> <trackingState>
                <joint count = 25>
                per joint: x y z depthX depthY colorX colorY orientationW orientationX orientationY
                           orientationZ trackingState

``x, y, z`` are camera-space metres; ``colorX, colorY`` pixels of the 1920x1080 RGB video;
``trackingState`` 0 not tracked, 1 inferred, 2 tracked. File names are
``SsssCcccPpppRrrrAaaa`` (setup, camera, performer, replication, action).

Conversion to :class:`~engines.datasets.SkeletonSequence`: keypoints are ``(colorX, colorY)`` with
score 1 for tracked or inferred joints (0 and ``(0, 0)`` for not-tracked ones), gathered into
COCO-18 by ``engines.layouts.NTU25_TO_COCO18`` (SARDE Table 2); depth is camera-space ``z`` in
metres; persons are the distinct ``bodyID`` values in order of first appearance.

Left/right: in the colour pixels Kinect's side labels are mirrored relative to an image-based
detector (the NTU sample's performer faces the camera and Kinect's "right" joints lie on the image
*right*); ``NTU25_TO_COCO18`` therefore maps Kinect's left joints to COCO-18 right joints, so these
sequences match what the OpenPose-style detector outputs on the same video (measured in
``tests/test_detector_real.py``). The raw arrays of :func:`parse_ntu_skeleton` keep Kinect's names.

``points3d`` are the camera-space ``x, y, z`` as ``(X, Y, Z) = (x, -y, z)`` metres: an OpenCV
frame (x right, y down, z forward) that matches the colour pixels, which show Kinect's
``+x`` on the image right (Kinect camera space has x towards the sensor's left, so the colour
video is mirrored, and so is this frame, consistently with the side-swapped joint table). On the
NTU sample a least-squares pinhole fit gives ``colorX = 1048 X/Z + 976``,
``colorY = 1056 Y/Z + 567`` (about 1 px RMS); it is not exact in general, because the colour
camera sits a few centimetres from the depth camera whose frame ``x, y, z`` are in, so use the
colour pixels, not a projection of ``points3d``, as the 2D truth. NTU cameras are not level: on the
sample the body axis (ankles to head) leans 18 degrees towards the camera.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engines.datasets import SkeletonSequence
from engines.layouts import NTU25_TO_COCO18, remap_to_coco18

log = logging.getLogger(__name__)

__all__ = ["NtuFormatError", "NtuSkeletonFile", "parse_ntu_skeleton", "read_ntu_skeleton", "parse_ntu_name",
           "NTU_ACTIONS", "NTU_FRAME_SIZE", "NTU_FPS", "NTU_FIELDS"]

#: Image size of the NTU RGB videos, ``(W, H)`` pixels.
NTU_FRAME_SIZE: tuple[int, int] = (1920, 1080)
#: Kinect v2 frame rate.
NTU_FPS: float = 30.0
#: Per-joint fields of the ``.skeleton`` format, in file order.
NTU_FIELDS: tuple[str, ...] = ("x", "y", "z", "depth_x", "depth_y", "color_x", "color_y",
                               "orient_w", "orient_x", "orient_y", "orient_z", "tracking_state")
NUM_NTU_JOINTS: int = 25

#: NTU RGB+D 60 action names, ``A001`` .. ``A060`` (the dataset's own list).
NTU_ACTIONS: tuple[str, ...] = (
    "drink water", "eat meal/snack", "brushing teeth", "brushing hair", "drop", "pickup", "throw",
    "sitting down", "standing up (from sitting position)", "clapping", "reading", "writing",
    "tear up paper", "wear jacket", "take off jacket", "wear a shoe", "take off a shoe",
    "wear on glasses", "take off glasses", "put on a hat/cap", "take off a hat/cap", "cheer up",
    "hand waving", "kicking something", "reach into pocket", "hopping (one foot jumping)", "jump up",
    "make a phone call/answer phone", "playing with phone/tablet", "typing on a keyboard",
    "pointing to something with finger", "taking a selfie", "check time (from watch)",
    "rub two hands together", "nod head/bow", "shake head", "wipe face", "salute",
    "put the palms together", "cross hands in front (say stop)", "sneeze/cough", "staggering",
    "falling", "touch head (headache)", "touch chest (stomachache/heart pain)",
    "touch back (backache)", "touch neck (neckache)", "nausea or vomiting condition",
    "use a fan (with hand or paper)/feeling warm", "punching/slapping other person",
    "kicking other person", "pushing other person", "pat on back of other person",
    "point finger at the other person", "hugging other person", "giving something to other person",
    "touch other person's pocket", "handshaking", "walking towards each other",
    "walking apart from each other",
)

_NAME_RE = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")


class NtuFormatError(ValueError):
    """A ``.skeleton`` file does not follow the NTU text format; the message names file and line."""


@dataclass
class NtuSkeletonFile:
    """The raw content of one ``.skeleton`` file, 25 Kinect joints, persons by ``bodyID``.

    Attributes:
        name: file stem, e.g. ``S001C001P001R001A001``.
        joints: ``(L, M, 25, 12)`` float32, fields :data:`NTU_FIELDS`; zeros where a body is absent.
        present: ``(L, M)`` bool, body ``m`` present in frame ``t``.
        body_ids: the ``M`` Kinect body ids, in order of first appearance.
    """

    name: str
    joints: np.ndarray
    present: np.ndarray
    body_ids: list[str]

    @property
    def tracking_state(self) -> np.ndarray:
        """``(L, M, 25)`` int8: 0 not tracked (or body absent), 1 inferred, 2 tracked."""
        return self.joints[..., 11].astype(np.int8)


def parse_ntu_name(name: str) -> dict[str, int]:
    """``SsssCcccPpppRrrrAaaa`` -> ``{"setup", "camera", "performer", "replication", "action"}`` (ints).

    Raises:
        ValueError: if the name holds no NTU code.
    """
    match = _NAME_RE.search(name)
    if match is None:
        raise ValueError(f"not an NTU RGB+D sample name: {name!r}")
    keys = ("setup", "camera", "performer", "replication", "action")
    return dict(zip(keys, (int(g) for g in match.groups())))


def parse_ntu_skeleton(path: str | Path) -> NtuSkeletonFile:
    """Parse a ``.skeleton`` file into raw 25-joint arrays (module docstring for the format).

    Raises:
        FileNotFoundError: if the file does not exist.
        NtuFormatError: on a truncated or malformed file.
    """
    path = Path(path)
    lines = path.read_text().split("\n")
    pos = 0

    def take(expected: int | None = None) -> list[str]:
        nonlocal pos
        while pos < len(lines) and not lines[pos].strip():
            pos += 1
        if pos >= len(lines):
            raise NtuFormatError(f"{path}: unexpected end of file")
        tokens = lines[pos].split()
        if expected is not None and len(tokens) != expected:
            raise NtuFormatError(f"{path}:{pos + 1}: expected {expected} values, got {len(tokens)}")
        pos += 1
        return tokens

    try:
        num_frames = int(take(1)[0])
        frames: list[list[tuple[str, np.ndarray]]] = []
        for _ in range(num_frames):
            bodies = []
            for _ in range(int(take(1)[0])):
                body_id = take(10)[0]
                num_joints = int(take(1)[0])
                if num_joints != NUM_NTU_JOINTS:
                    raise NtuFormatError(f"{path}:{pos}: expected {NUM_NTU_JOINTS} joints, got {num_joints}")
                values = np.array([take(len(NTU_FIELDS)) for _ in range(num_joints)], dtype=np.float32)
                bodies.append((body_id, values))  # (25, 12)
            frames.append(bodies)
    except ValueError as exc:  # int()/float() on a bad token; NtuFormatError passes through unchanged
        if isinstance(exc, NtuFormatError):
            raise
        raise NtuFormatError(f"{path}:{pos}: {exc}") from exc

    body_ids: list[str] = []
    for bodies in frames:
        for body_id, _ in bodies:
            if body_id not in body_ids:
                body_ids.append(body_id)
    joints = np.zeros((num_frames, len(body_ids), NUM_NTU_JOINTS, len(NTU_FIELDS)), np.float32)
    present = np.zeros((num_frames, len(body_ids)), bool)
    for t, bodies in enumerate(frames):
        for body_id, values in bodies:
            m = body_ids.index(body_id)
            joints[t, m] = values
            present[t, m] = True
    return NtuSkeletonFile(name=path.name.split(".")[0], joints=joints, present=present, body_ids=body_ids)


def read_ntu_skeleton(path: str | Path) -> SkeletonSequence:
    """Read one NTU ``.skeleton`` file as a COCO-18 :class:`SkeletonSequence`.

    Returns:
        ``keypoints (L, M, 18, 3)`` float32 (colorX, colorY in 1920x1080 pixels, score 1 for
        tracked/inferred joints, 0 otherwise), ``depth (L, M, 18)`` camera-space z in metres (0 where
        missing), ``points3d (L, M, 18, 3)`` metres ``(x, -y, z)`` (module docstring; 0 where
        missing), ``frame_size (1920, 1080)``, ``fps 30``, ``label`` the action name for A001-A060
        (else ``"A###"``), ``subject`` the performer id, ``meta`` the parsed name fields plus
        ``body_ids`` and the 0-based ``label_index``.

    Raises:
        FileNotFoundError, NtuFormatError: see :func:`parse_ntu_skeleton`.
    """
    raw = parse_ntu_skeleton(path)
    state = raw.joints[..., 11]  # (L, M, 25)
    valid = (state >= 1) & raw.present[..., None]
    kp25 = np.zeros(raw.joints.shape[:3] + (3,), np.float32)  # (L, M, 25, 3)
    kp25[..., 0:2] = raw.joints[..., 5:7]
    kp25[..., 2] = valid
    kp25[~valid] = 0.0
    depth25 = np.where(valid, raw.joints[..., 2], 0.0).astype(np.float32)  # (L, M, 25)
    # (x, -y, z): OpenCV frame (y down) matching the mirrored colour pixels (module docstring)
    points25 = np.where(valid[..., None], raw.joints[..., 0:3] * np.array([1.0, -1.0, 1.0], np.float32), 0.0)
    keypoints = remap_to_coco18(kp25, NTU25_TO_COCO18).astype(np.float32)  # (L, M, 18, 3)
    depth = remap_to_coco18(depth25[..., None], NTU25_TO_COCO18)[..., 0].astype(np.float32)  # (L, M, 18)
    points3d = remap_to_coco18(points25, NTU25_TO_COCO18).astype(np.float32)  # (L, M, 18, 3)
    try:
        meta: dict = parse_ntu_name(raw.name)
    except ValueError:
        log.warning("%s: file name holds no NTU code; no label", path)
        meta = {}
    action = meta.get("action")
    label = None
    if action is not None:
        label = NTU_ACTIONS[action - 1] if 1 <= action <= len(NTU_ACTIONS) else f"A{action:03d}"
        meta["label_index"] = action - 1
    meta["body_ids"] = raw.body_ids
    return SkeletonSequence(name=raw.name, keypoints=keypoints, frame_size=NTU_FRAME_SIZE, fps=NTU_FPS,
                            depth=depth, points3d=points3d, label=label, subject=meta.get("performer"),
                            meta=meta)
