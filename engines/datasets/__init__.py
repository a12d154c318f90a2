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
        label: class name, or ``None``.
        subject: subject id(s) used by the dataset's cross-subject protocol.
        meta: anything else the reader knows (action index, repetition, set name ...).
    """

    name: str
    keypoints: np.ndarray
    frame_size: tuple[int, int]
    fps: float
    depth: np.ndarray | None = None
    label: str | None = None
    subject: str | int | None = None
    meta: dict = field(default_factory=dict)
