"""The one keypoint normalisation and the one window layout conversion of the project.

Both the daemon (``pipeline.windows``) and training (``engines.sarde.data``) call these two
functions, so that the deployed model sees windows built exactly as in training.

Layout convention: model input is ST-GCN's ``(N, C, T, V, M)``; a single window is
``(C, T, V, M)`` with ``C = 3`` channels ``(x, y, score)``, ``V = 18`` COCO-18 joints,
``M`` persons. Per-person sequences are ``(L, M, V, 3)`` (time, person, joint, channel).
This module is NumPy only (no torch), so the daemon imports it without torch installed.
"""
from __future__ import annotations

import numpy as np

#: Channels of a window: normalised x, normalised y, detector score (0 = joint missing).
WINDOW_CHANNELS: tuple[str, ...] = ("x", "y", "score")


def normalize_keypoints(keypoints: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Map pixel keypoints to image-centred, height-normalised coordinates.

    ``x' = (x - W/2) / H`` and ``y' = (y - H/2) / H``, so a person's apparent size and image
    position (both cues to depth, SARDE Sec. 3.1) survive while the camera resolution does not.
    Joints with ``score <= 0`` (missed by the detector, absent in a dataset) become ``(0, 0, 0)``.

    Args:
        keypoints: ``(..., V, 3)`` float array: x, y in original-frame pixels (origin top-left,
            x right, y down) and a score in ``[0, 1]``.
        frame_size: ``(W, H)`` of the frame the pixels refer to, in pixels.

    Returns:
        ``(..., V, 3)`` float32 array ``(x', y', score)``; unitless (multiples of frame height).

    Raises:
        ValueError: if the last axis is not 3 or the frame size is not positive.
    """
    kp = np.asarray(keypoints, dtype=np.float32)
    if kp.ndim < 2 or kp.shape[-1] != 3:
        raise ValueError(f"keypoints must have shape (..., V, 3), got {kp.shape}")
    width, height = frame_size
    if width <= 0 or height <= 0:
        raise ValueError(f"frame_size must be positive, got {frame_size}")
    out = np.empty_like(kp)
    out[..., 0] = (kp[..., 0] - 0.5 * width) / height
    out[..., 1] = (kp[..., 1] - 0.5 * height) / height
    out[..., 2] = np.clip(kp[..., 2], 0.0, 1.0)
    missing = ~(kp[..., 2] > 0)  # NaN scores count as missing
    out[missing] = 0.0
    return out


def to_window(sequence: np.ndarray, num_frames: int, num_persons: int, offset: int | None = None) -> np.ndarray:
    """Place a normalised multi-person sequence into one fixed-size window.

    The window layout is ``(C, T, V, M)``; frames outside the sequence and persons beyond the
    sequence's own are zero (ST-GCN's padding convention). A sequence longer than ``T`` keeps its
    last ``T`` frames. The daemon right-aligns (``offset = T - L``: newest frame last); training
    places a short recorded action at a random offset, as the daemon would see it mid-window.

    Args:
        sequence: ``(L, M', V, 3)`` float array from :func:`normalize_keypoints`.
        num_frames: ``T``, window length in frames.
        num_persons: ``M``; persons beyond ``M`` are dropped, missing ones zero-padded.
        offset: first window frame of the sequence; default right-aligned.

    Returns:
        ``(3, T, V, M)`` float32 array.

    Raises:
        ValueError: on a wrongly shaped sequence or an offset that does not fit.
    """
    seq = np.asarray(sequence, dtype=np.float32)
    if seq.ndim != 4 or seq.shape[-1] != 3:
        raise ValueError(f"sequence must have shape (L, M, V, 3), got {seq.shape}")
    seq = seq[-num_frames:, :num_persons]  # (L, M, V, 3), L <= T
    length, persons, joints, _ = seq.shape
    if offset is None:
        offset = num_frames - length
    if not 0 <= offset <= num_frames - length:
        raise ValueError(f"offset {offset} does not fit a sequence of {length} frames in T={num_frames}")
    window = np.zeros((3, num_frames, joints, num_persons), dtype=np.float32)
    window[:, offset:offset + length, :, :persons] = seq.transpose(3, 0, 2, 1)  # (L,M,V,C) -> (C,L,V,M)
    return window
