"""Kinetics-skeleton reader (ST-GCN's JSON format, Yan et al. 2018): OpenPose COCO-18, up to M persons.

One JSON file per clip::

    {"data": [{"frame_index": 1,                      # 1-based
               "skeleton": [{"pose": [x0, y0, x1, y1, ... x17, y17],   # normalised to [0, 1]
                             "score": [c0, ... c17]}, ...]},
              ...],
     "label": "flipping pancake", "label_index": 129}

``x, y`` are fractions of the frame width / height (ST-GCN resized the videos to 340x256 before
running OpenPose); missing joints are ``(0, 0)`` with score 0. The joint order already is COCO-18, so
no table is needed. Persons are not tracked: slot ``m`` of a frame is the ``m``-th skeleton OpenPose
listed. As in ST-GCN's feeder, slots are reordered by their total score over the clip (highest
first) and the first ``max_persons`` kept. Frames missing from ``data`` are empty (all zeros).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from engines.datasets import SkeletonSequence
from engines.layouts import NUM_JOINTS

log = logging.getLogger(__name__)

#: Frame size ST-GCN used when extracting Kinetics-skeleton, ``(W, H)`` pixels.
KINETICS_FRAME_SIZE: tuple[int, int] = (340, 256)
KINETICS_FPS: float = 30.0


def read_kinetics_json(path: str | Path, max_persons: int = 2, frame_size: tuple[int, int] = KINETICS_FRAME_SIZE,
                       fps: float = KINETICS_FPS) -> SkeletonSequence:
    """Read one Kinetics-skeleton JSON clip.

    Args:
        path: the ``.json`` file.
        max_persons: persons kept (by total score), the window's ``M``.
        frame_size: ``(W, H)`` the normalised coordinates are scaled to, pixels.
        fps: frame rate recorded in the record (Kinetics clips are ~30 fps).

    Returns:
        keypoints ``(L, M, 18, 3)`` float32 pixels + OpenPose score (``L`` = last ``frame_index``),
        ``depth None``, ``label`` the class name, ``meta["label_index"]``.

    Raises:
        ValueError: if a pose does not hold 18 joints.
    """
    path = Path(path)
    doc = json.loads(path.read_text(encoding="utf-8"))
    frames = doc.get("data", [])
    length = max((int(f["frame_index"]) for f in frames), default=0)
    slots = max((len(f["skeleton"]) for f in frames), default=0)
    kp = np.zeros((max(length, 1), max(slots, 1), NUM_JOINTS, 3), np.float32)  # (L, M', V, 3)
    for f in frames:
        t = int(f["frame_index"]) - 1
        for m, person in enumerate(f["skeleton"]):
            pose = np.asarray(person["pose"], np.float32).reshape(-1, 2)
            score = np.asarray(person["score"], np.float32)
            if pose.shape != (NUM_JOINTS, 2) or score.shape != (NUM_JOINTS,):
                raise ValueError(f"{path}: frame {t + 1} person {m}: expected 18 joints, got {pose.shape}")
            kp[t, m, :, 0] = pose[:, 0] * frame_size[0]
            kp[t, m, :, 1] = pose[:, 1] * frame_size[1]
            kp[t, m, :, 2] = score
    kp[kp[..., 2] <= 0] = 0.0
    order = np.argsort(-kp[..., 2].sum(axis=(0, 2)), kind="stable")[:max_persons]
    kp = kp[:, order]
    return SkeletonSequence(name=path.stem, keypoints=kp, frame_size=tuple(frame_size), fps=fps, depth=None,
                            label=doc.get("label"), subject=None,
                            meta={"dataset": "kinetics_skeleton", "label_index": doc.get("label_index")})


def load_kinetics_skeleton(folder: str | Path, max_persons: int = 2) -> list[SkeletonSequence]:
    """Every ``*.json`` clip of a folder (e.g. ``<root>/skeletons/kinetics_skeleton``), sorted by name.

    Raises:
        FileNotFoundError: if the folder holds no JSON file.
    """
    folder = Path(folder)
    if not any(folder.glob("*.json")) and (folder / "skeletons" / "kinetics_skeleton").is_dir():
        folder = folder / "skeletons" / "kinetics_skeleton"
    paths = sorted(folder.glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no Kinetics-skeleton JSON under {folder}")
    return [read_kinetics_json(p, max_persons) for p in paths]
