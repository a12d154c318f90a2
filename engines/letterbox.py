"""Letterbox geometry: fit a frame into the detector input keeping its aspect ratio, and map back.

Coordinate frames (both directions use the same convention):

* **Pixel-index coordinates, pixel centres on integers** (OpenCV's convention): the pixel in column
  ``j``, row ``i`` covers ``[j - 0.5, j + 0.5) x [i - 0.5, i + 0.5)`` and its centre is ``(x, y) = (j, i)``.
  ``x`` grows to the right, ``y`` downwards, units are pixels of the image in question.
* *Original frame*: the decoded camera frame, size ``(W0, H0)``.
* *Detector input*: the letterboxed image, size ``(W, H)``; the resized frame sits centred in it, offset
  by ``pad = (pad_x, pad_y)`` pixels, the rest is zero padding.

``cv2.resize`` aligns pixel *edges* (areas), so a centre ``x0`` of the original frame lands at
``x = (x0 + 0.5) * scale - 0.5 + pad_x`` in the detector input (same for ``y``) and back
``x0 = (x - pad_x + 0.5) / scale - 0.5``. One isotropic ``scale`` is used both ways; the resized size is
rounded to whole pixels, so the true per-axis scale differs from ``scale`` by less than half a pixel
over the frame (below 0.5 detector-input pixels anywhere in the image).
"""
from __future__ import annotations

import cv2
import numpy as np

__all__ = ["letterbox", "letterbox_points", "unletterbox", "letterbox_geometry"]


def letterbox_geometry(orig_size: tuple[int, int], size: tuple[int, int]) -> tuple[float, tuple[int, int], tuple[int, int]]:
    """Scale, resized size and padding for fitting ``orig_size`` into ``size``.

    Args:
        orig_size: ``(W0, H0)`` of the original frame, pixels, both >= 1.
        size: ``(W, H)`` of the detector input, pixels, both >= 1.

    Returns:
        ``(scale, (new_w, new_h), (pad_x, pad_y))``: ``scale = min(W / W0, H / H0)``; the resized
        frame is ``new_w x new_h`` (rounded, at least 1, at most ``W x H``) placed at column ``pad_x``,
        row ``pad_y`` (centred; an odd leftover pixel goes to the right / bottom).

    Raises:
        ValueError: on a non-positive size.
    """
    w0, h0 = int(orig_size[0]), int(orig_size[1])
    w, h = int(size[0]), int(size[1])
    if w0 < 1 or h0 < 1 or w < 1 or h < 1:
        raise ValueError(f"letterbox: sizes must be positive, got frame {(w0, h0)} into {(w, h)}")
    scale = min(w / w0, h / h0)
    new_w = min(w, max(1, int(round(w0 * scale))))
    new_h = min(h, max(1, int(round(h0 * scale))))
    pad = ((w - new_w) // 2, (h - new_h) // 2)
    return float(scale), (new_w, new_h), pad


def letterbox(frame: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, float, tuple[int, int]]:
    """Resize ``frame`` into ``size`` keeping its aspect ratio, centred, zero padding.

    Interpolation: ``cv2.INTER_AREA`` when shrinking, ``cv2.INTER_LINEAR`` when enlarging, none
    (a copy) when the scale is exactly 1.

    Args:
        frame: ``(H0, W0, 3)`` uint8 image (any channel order; it is kept).
        size: ``(W, H)`` detector input size, pixels.

    Returns:
        ``(image, scale, pad)``: ``image`` is a new C-contiguous ``(H, W, 3)`` uint8 array; ``scale``
        (float) multiplies original-frame lengths into detector-input pixels; ``pad = (pad_x, pad_y)``
        (ints) is the offset of the resized frame in ``image``. See the module docstring for the
        coordinate mapping.

    Raises:
        ValueError: if ``frame`` is not ``(H0, W0, 3)`` uint8 or ``size`` is not positive.
    """
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        desc = (frame.shape, frame.dtype) if isinstance(frame, np.ndarray) else type(frame)
        raise ValueError(f"letterbox: expected an (H, W, 3) uint8 frame, got {desc}")
    h0, w0 = frame.shape[:2]
    w, h = int(size[0]), int(size[1])
    scale, (new_w, new_h), (pad_x, pad_y) = letterbox_geometry((w0, h0), (w, h))
    if (new_w, new_h) == (w0, h0):
        resized = frame
    else:
        interp = cv2.INTER_AREA if scale < 1.0 else cv2.INTER_LINEAR
        resized = cv2.resize(frame, (new_w, new_h), interpolation=interp)
    out = np.zeros((h, w, 3), dtype=np.uint8)  # (H, W, 3), padding value 0
    out[pad_y:pad_y + new_h, pad_x:pad_x + new_w] = resized
    return out, scale, (pad_x, pad_y)


def letterbox_points(points: np.ndarray, scale: float, pad: tuple[int, int]) -> np.ndarray:
    """Map original-frame points into detector-input pixels (the forward map of :func:`letterbox`).

    Args:
        points: ``(..., 2)`` or ``(..., 3)`` float array; ``[..., 0:2]`` are ``x, y`` in original-frame
            pixels (pixel centres on integers); a third column (score) is copied unchanged.
        scale, pad: as returned by :func:`letterbox`.

    Returns:
        A new float array of the same shape: ``x' = (x + 0.5) * scale - 0.5 + pad_x`` (same for ``y``).
    """
    pts = np.array(points, dtype=np.result_type(points, np.float32), copy=True)
    pts[..., 0] = (pts[..., 0] + 0.5) * scale - 0.5 + pad[0]
    pts[..., 1] = (pts[..., 1] + 0.5) * scale - 0.5 + pad[1]
    return pts


def unletterbox(keypoints: np.ndarray, scale: float, pad: tuple[int, int]) -> np.ndarray:
    """Map keypoints from detector-input pixels back to original-frame pixels.

    Args:
        keypoints: ``(..., 3)`` float array of ``(x, y, score)``, ``x, y`` in detector-input pixels
            (pixel centres on integers), e.g. ``(P, 18, 3)`` COCO-18 persons. A joint with score 0 is
            missing.
        scale: the letterbox scale (detector-input pixels per original-frame pixel), > 0.
        pad: ``(pad_x, pad_y)`` offset of the resized frame in the detector input, pixels.

    Returns:
        A new array, same shape and float dtype: ``x0 = (x - pad_x + 0.5) / scale - 0.5`` (same for
        ``y``), score unchanged; missing joints (score 0) are ``(0, 0, 0)``. Points in the padding map
        outside the original frame (not clipped).

    Raises:
        ValueError: if the last axis is not 3 or ``scale`` is not positive.
    """
    kp = np.asarray(keypoints)
    if kp.shape[-1:] != (3,):
        raise ValueError(f"unletterbox: expected (..., 3) keypoints, got shape {kp.shape}")
    if not scale > 0:
        raise ValueError(f"unletterbox: scale must be > 0, got {scale}")
    out = np.array(kp, dtype=np.result_type(kp, np.float32), copy=True)
    out[..., 0] = (out[..., 0] - pad[0] + 0.5) / scale - 0.5
    out[..., 1] = (out[..., 1] - pad[1] + 0.5) / scale - 0.5
    out[out[..., 2] == 0] = 0.0
    return out
