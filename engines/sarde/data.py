"""Training windows for SARDE, built exactly as the daemon builds its windows.

Per sample: the recorded sequence (pixels, ``SkeletonSequence``) is resampled from the dataset's
frame rate to the model's ``fps`` (with optional speed jitter), augmented like the pose detector's
output (pixel jitter, joint dropout, low scores, small rotation/scale/shear, mirror, person order),
normalised with :func:`engines.skeleton.normalize_keypoints` and placed with
:func:`engines.skeleton.to_window` into a ``(3, T, V, M)`` window at a random offset: a short
action keeps its duration (it is not stretched to fill ``T``), as the daemon sees it mid-window.
Depth targets ``(T, V, M)`` (metres, 0 = unknown) follow the same placement.

:func:`collate` can cut each window to a short span holding its skeletons, starting at a multiple
of the recogniser's temporal stride: :class:`engines.sarde.models.STGCN` gives identical logits on
such a cut (see its docstring), and training runs several times faster.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from engines.datasets import SkeletonSequence
from engines.layouts import COCO18_NAMES
from engines.skeleton import normalize_keypoints, to_window

#: COCO-18 index of each joint's mirror image (left <-> right).
MIRROR: tuple[int, ...] = tuple(
    COCO18_NAMES.index(n.replace("r_", "#").replace("l_", "r_").replace("#", "l_")) for n in COCO18_NAMES
)


@dataclass
class Augment:
    """Detector-like augmentation settings (evaluation windows take none: ``augment=None``).

    Attributes:
        jitter: Gaussian pixel noise, standard deviation as a fraction of the frame height.
        drop: probability that a joint is missed (score 0).
        low_score: probability that a detected joint's score is drawn from ``U(0.05, 0.5)``
            instead of ``U(0.5, 1)``; ``score_range`` is used for all others.
        rotate_deg, scale, shear: half-ranges of a uniform random 2D affine map about the frame
            centre (``scale`` 0.1 = x0.9 .. x1.1); depth targets are divided by the scale, as a
            person that looks larger is nearer.
        shift: half-range of a random translation, fraction of the frame height.
        speed: half-range of the temporal speed factor (0.2 = 0.8x .. 1.2x).
        mirror: probability of a horizontal flip with left/right joints swapped.
        swap_persons: probability of swapping person slots (two-person sequences).
    """

    jitter: float = 0.006
    drop: float = 0.05
    low_score: float = 0.15
    score_range: tuple[float, float] = (0.5, 1.0)
    rotate_deg: float = 8.0
    scale: float = 0.15
    shear: float = 0.1
    shift: float = 0.1
    speed: float = 0.2
    mirror: float = 0.5
    swap_persons: float = 0.5


def resample(length: int, src_fps: float, dst_fps: float, speed: float = 1.0) -> np.ndarray:
    """Frame indices (nearest) that play ``length`` frames recorded at ``src_fps`` at ``dst_fps``,
    ``speed`` times faster. Returns ``(L',)`` int64, ``L' = max(1, round(length * dst/src / speed))``."""
    new_len = max(1, int(round(length * dst_fps / src_fps / speed)))
    return np.minimum((np.arange(new_len) * (length / new_len)).astype(np.int64), length - 1)


def make_window(seq: SkeletonSequence, num_frames: int = 150, num_persons: int = 2, fps: float = 15.0,
                rng: np.random.Generator | None = None, augment: Augment | None = None,
                ) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """One training window from one sequence.

    Args:
        seq: pixels + scores ``(L, M', 18, 3)``, optional depth ``(L, M', 18)`` metres.
        num_frames, num_persons: the daemon's ``T`` and ``M``.
        fps: the model's (and daemon's) frame rate.
        rng: random source; ``None`` = deterministic (centred, no augmentation).
        augment: augmentation settings (ignored without ``rng``).

    Returns:
        ``window`` ``(3, T, V, M)`` float32 from :func:`to_window`, ``depth`` ``(T, V, M)``
        float32 metres (0 where unknown or the joint is missing in the window) and the
        ``(start, end)`` frames the sequence occupies.
    """
    kp = np.array(seq.keypoints, dtype=np.float32)  # (L, M', V, 3)
    depth = np.zeros(kp.shape[:3], np.float32) if seq.depth is None else np.array(seq.depth, np.float32)
    width, height = seq.frame_size
    aug = augment if (rng is not None and augment is not None) else None
    speed = 1.0 + (rng.uniform(-aug.speed, aug.speed) if aug else 0.0)
    idx = resample(len(kp), seq.fps, fps, speed)
    kp, depth = kp[idx], depth[idx]  # (L', M', V, 3), (L', M', V)
    if len(kp) > num_frames:  # long recording: a random (or the central) T-frame part
        start = int(rng.integers(0, len(kp) - num_frames + 1)) if rng is not None else (len(kp) - num_frames) // 2
        kp, depth = kp[start:start + num_frames], depth[start:start + num_frames]
    present = kp[..., 2] > 0  # (L', M', V)
    if aug:
        kp, depth, present = _augment(kp, depth, present, (width, height), rng, aug)
    kp[..., 2] = np.where(present, kp[..., 2], 0.0)
    depth = np.where(present, depth, 0.0)
    normed = normalize_keypoints(kp, (width, height))  # (L', M', V, 3)
    length = len(normed)
    offset = int(rng.integers(0, num_frames - length + 1)) if rng is not None else (num_frames - length) // 2
    window = to_window(normed, num_frames, num_persons, offset)  # (3, T, V, M)
    depth_window = np.zeros((num_frames, kp.shape[2], num_persons), np.float32)
    persons = min(num_persons, depth.shape[1])
    depth_window[offset:offset + length, :, :persons] = depth[:, :persons].transpose(0, 2, 1)  # (L,M,V)->(L,V,M)
    return window, depth_window, (offset, offset + length)


def _augment(kp, depth, present, frame_size, rng, aug: Augment):
    width, height = frame_size
    length, persons, joints, _ = kp.shape
    if persons > 1 and rng.random() < aug.swap_persons:
        kp, depth, present = kp[:, ::-1], depth[:, ::-1], present[:, ::-1]
    if rng.random() < aug.mirror:
        kp = kp[:, :, MIRROR].copy()
        depth, present = depth[:, :, MIRROR], present[:, :, MIRROR]
        kp[..., 0] = width - kp[..., 0]
    # affine map about the frame centre, in pixels
    theta = np.deg2rad(rng.uniform(-aug.rotate_deg, aug.rotate_deg))
    scale = 1.0 + rng.uniform(-aug.scale, aug.scale)
    shear = rng.uniform(-aug.shear, aug.shear)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    mat = scale * rot @ np.array([[1.0, shear], [0.0, 1.0]])
    centre = np.array([0.5 * width, 0.5 * height])
    shift = rng.uniform(-aug.shift, aug.shift, size=2) * height
    xy = (kp[..., :2] - centre) @ mat.T + centre + shift  # (L, M, V, 2)
    xy = xy + rng.normal(0.0, aug.jitter * height, size=xy.shape)
    kp = kp.copy()
    kp[..., :2] = xy
    depth = depth / scale
    present = present & (rng.random(present.shape) >= aug.drop)
    low = rng.random(present.shape) < aug.low_score
    scores = np.where(low, rng.uniform(0.05, 0.5, present.shape), rng.uniform(*aug.score_range, present.shape))
    kp[..., 2] = scores.astype(np.float32)
    return kp.astype(np.float32), depth.astype(np.float32), present


class WindowDataset(Dataset):
    """Windows of labelled and/or depth-supervised sequences.

    Args:
        sequences: the records.
        labels: class names; a sequence's ``label`` maps through ``label_map`` (or itself) to an
            index in this list; unknown or ``None`` -> ``-1`` (no recognition supervision).
        label_map: optional ``{sequence label: class name}`` (e.g. every MSR action -> ``other``).
        use_depth: give depth targets for these sequences (else all zero = unknown).
        num_frames, num_persons, fps: window settings (the daemon's).
        augment: settings; ``None`` = deterministic windows (evaluation).
        seed: base seed; item ``i`` of epoch ``e`` uses ``(seed, e, i)``; call :meth:`set_epoch`.
        mask_joints: COCO-18 joints zeroed in every window (x, y, score and depth), e.g. the eyes and
            ears (14-17), which lab skeletons lack; the exported manifest records them and the daemon's
            recogniser zeroes the same joints (``engines.recognizer``).
        virtual_camera: probability that a training sequence with ``points3d`` is re-projected through
            a random surveillance camera (``engines.sarde.views``) before the window is built.

    Items:
        ``{"window": (3, T, V, M) float32, "depth": (T, V, M) float32, "label": int64,
        "span": (2,) int64}`` as torch tensors.
    """

    def __init__(self, sequences: Sequence[SkeletonSequence], labels: Sequence[str],
                 label_map: dict[str, str] | None = None, use_depth: bool = True, num_frames: int = 150,
                 num_persons: int = 2, fps: float = 15.0, augment: Augment | None = None, seed: int = 0,
                 mask_joints: Sequence[int] = (), virtual_camera: float = 0.0):
        self.sequences = list(sequences)
        self.labels = list(labels)
        self.label_map = label_map or {}
        self.use_depth = use_depth
        self.num_frames, self.num_persons, self.fps = num_frames, num_persons, fps
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.mask_joints = list(mask_joints)
        self.virtual_camera = float(virtual_camera)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def label_index(self, seq: SkeletonSequence) -> int:
        name = self.label_map.get(seq.label, seq.label) if seq.label is not None else None
        return self.labels.index(name) if name in self.labels else -1

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        seq = self.sequences[i]
        rng = np.random.default_rng((self.seed, self.epoch, i)) if self.augment is not None else None
        if (rng is not None and self.virtual_camera > 0 and getattr(seq, "points3d", None) is not None
                and rng.random() < self.virtual_camera):
            from engines.sarde.views import CameraRanges, project_virtual

            keypoints, vdepth, size = project_virtual(seq.points3d, rng, CameraRanges())
            seq = replace(seq, keypoints=keypoints, depth=vdepth, frame_size=size)
        window, depth, span = make_window(seq, self.num_frames, self.num_persons, self.fps, rng, self.augment)
        if not self.use_depth:
            depth = np.zeros_like(depth)
        if self.mask_joints:
            window[:, :, self.mask_joints, :] = 0.0
            depth[:, self.mask_joints, :] = 0.0
        return {
            "window": torch.from_numpy(window),
            "depth": torch.from_numpy(depth),
            "label": torch.tensor(self.label_index(seq), dtype=torch.int64),
            "span": torch.tensor(span, dtype=torch.int64),
        }


def collate(batch: list[dict[str, torch.Tensor]], crop_stride: int | None = None) -> dict[str, torch.Tensor]:
    """Stack items; with ``crop_stride`` cut every window to the shortest common length that holds
    each sample's span, each cut starting at a multiple of ``crop_stride`` (zero-padded past ``T``).

    Returns:
        ``window`` ``(N, 3, T', V, M)``, ``depth`` ``(N, T', V, M)``, ``label`` ``(N,)``,
        ``span`` ``(N, 2)`` (relative to the cut).
    """
    windows = torch.stack([b["window"] for b in batch])
    depth = torch.stack([b["depth"] for b in batch])
    labels = torch.stack([b["label"] for b in batch])
    spans = torch.stack([b["span"] for b in batch])
    if crop_stride:
        starts = (spans[:, 0] // crop_stride) * crop_stride
        length = int((spans[:, 1] - starts).max())
        length = -(-length // crop_stride) * crop_stride
        t = windows.shape[2]
        pad = max(0, int(starts.max()) + length - t)
        if pad:
            windows = torch.nn.functional.pad(windows, (0, 0, 0, 0, 0, pad))
            depth = torch.nn.functional.pad(depth, (0, 0, 0, 0, 0, pad))
        windows = torch.stack([w[:, s:s + length] for w, s in zip(windows, starts.tolist())])
        depth = torch.stack([d[s:s + length] for d, s in zip(depth, starts.tolist())])
        spans = spans - starts[:, None]
    return {"window": windows, "depth": depth, "label": labels, "span": spans}
