"""Readers for the skeleton datasets; each returns :class:`SkeletonSequence` records in COCO-18."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SkeletonSequence:
    """One recorded sequence, already remapped to COCO-18 (``engines.layouts``).

    Attributes:
        name: dataset-unique id, e.g. ``a01_s01_e01``.
        keypoints: ``(L, M, 18, 3)`` float32: x, y in pixels of a ``frame_size`` image
            (origin top-left, y down) and a score in [0, 1] (0 = joint missing).
        frame_size: ``(W, H)`` in pixels of the image the pixels refer to.
        fps: recording frame rate in frames per second.
        depth: ``(L, M, 18)`` float32 camera-space depth z in metres (> 0; 0 where unknown),
            or ``None`` when the dataset has no 3D ground truth.
        points3d: ``(L, M, 18, 3)`` float32 metric 3D joints in metres, in the frame of the camera
            that recorded the sequence, OpenCV convention: x right, y down, z forward (so
            ``points3d[..., 2] == depth`` where present), all-zero rows where a joint is missing.
            Joints are gathered into COCO-18 by the same ``engines.layouts`` table as the keypoints
            (head-derived joints repeat the head). Each reader makes them consistent with its own
            pixels: a pinhole with the reader's focal length and principal point projects them
            onto ``keypoints`` (see the reader's docstring). ``None`` when the dataset has no
            metric 3D. Keyword-only, so the positional order of the other fields is unchanged.
        label: class name, or ``None``.
        subject: subject id(s) used by the dataset's cross-subject protocol.
        meta: anything else the reader knows (action index, repetition, set name ...).
    """

    name: str
    keypoints: np.ndarray
    frame_size: tuple[int, int]
    fps: float
    depth: np.ndarray | None = None
    points3d: np.ndarray | None = field(default=None, kw_only=True)
    label: str | None = None
    subject: str | int | None = None
    meta: dict = field(default_factory=dict)
