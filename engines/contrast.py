"""Contrast normalisation of detector input frames: CLAHE on the lightness channel.

Contrast-limited adaptive histogram equalisation (Zuiderveld, "Contrast Limited Adaptive Histogram
Equalization", Graphics Gems IV, 1994; OpenCV's ``cv2.createCLAHE``) of the L channel of CIE L*a*b*,
colour (a*, b*) unchanged. Real CCTV is often dim, hazy or back-lit; measured on the 88 real fight
clips of ``fightsurv_dev`` (every 3rd frame at 15 fps, PINTO dm10 at 432x368, grouping 3 joints / 0.25,
2-core AMD EPYC VM), clip limit 2.0 on an 8x8 grid raised the frames with two or more persons from
0.48 to 0.58 (docs/DETECTOR.md).

Only the letterboxed picture is equalised, never its zero padding (a padding tile would stretch the
histogram of the border tiles). The readers call this after :func:`engines.letterbox.letterbox`, so
training recordings, the daemon and ``sarde eval detector`` see the same pixels.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from engines.letterbox import letterbox, letterbox_geometry

__all__ = ["equalize_contrast", "letterbox_equalized"]


@lru_cache(maxsize=8)
def _clahe(clip_limit: float, grid: int):
    return cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(grid, grid))


def equalize_contrast(image: np.ndarray, pad: tuple[int, int], content_size: tuple[int, int],
                      clip_limit: float, grid: int = 8) -> np.ndarray:
    """CLAHE on the picture part of a letterboxed frame, in place.

    Args:
        image: ``(H, W, 3)`` uint8 BGR detector input (modified in place).
        pad: ``(pad_x, pad_y)`` offset of the picture in ``image``, pixels (from ``letterbox``).
        content_size: ``(new_w, new_h)`` size of the picture, pixels.
        clip_limit: OpenCV clip limit (histogram bins clipped at ``clip_limit`` times the mean bin);
            ``0`` returns ``image`` unchanged.
        grid: tiles per side (``grid x grid``).

    Returns:
        ``image`` (the same array).

    Raises:
        ValueError: ``image`` is not ``(H, W, 3)`` uint8, the picture lies outside it, or
            ``clip_limit < 0`` / ``grid < 1``.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("equalize_contrast: expected an (H, W, 3) uint8 image")
    if clip_limit < 0 or grid < 1:
        raise ValueError(f"equalize_contrast: clip_limit must be >= 0 and grid >= 1, got {clip_limit}, {grid}")
    if clip_limit == 0:
        return image
    (x0, y0), (w, h) = (int(pad[0]), int(pad[1])), (int(content_size[0]), int(content_size[1]))
    if x0 < 0 or y0 < 0 or w < 1 or h < 1 or x0 + w > image.shape[1] or y0 + h > image.shape[0]:
        raise ValueError(f"equalize_contrast: picture {w}x{h} at {(x0, y0)} outside a {image.shape[1]}x{image.shape[0]} image")
    view = image[y0:y0 + h, x0:x0 + w]
    lab = cv2.cvtColor(view, cv2.COLOR_BGR2LAB)
    lab[..., 0] = _clahe(float(clip_limit), int(grid)).apply(np.ascontiguousarray(lab[..., 0]))
    view[...] = cv2.cvtColor(lab, cv2.COLOR_LAB2BGR)
    return image


def letterbox_equalized(frame: np.ndarray, size: tuple[int, int], clip_limit: float) -> tuple[np.ndarray, float, tuple[int, int]]:
    """The detector input of one frame: :func:`engines.letterbox.letterbox`, then
    :func:`equalize_contrast` on its picture when ``clip_limit > 0`` (what the readers send).

    Returns and raises as :func:`engines.letterbox.letterbox` (``(image, scale, pad)``).
    """
    image, scale, pad = letterbox(frame, size)
    if clip_limit > 0:
        content = letterbox_geometry((frame.shape[1], frame.shape[0]), size)[1]
        equalize_contrast(image, pad, content, clip_limit)
    return image, scale, pad
