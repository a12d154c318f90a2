"""Uniform temporal sampling over the frames of a window that hold a skeleton.

The daemon's windows are ``T = 150`` frames with the action anywhere inside and zero padding
around it (``engines.skeleton.to_window``); training cuts windows to the span holding their
skeletons (``engines.sarde.data.crop_batch``). The seed models all want a fixed, short time axis
over the action itself: PoseC3D samples ``T'`` frames uniformly from the clip (Duan et al., Sec. 3.2,
"uniform sampling"), the image encodings of Pham et al. and DeepActsNet resize the sequence to the
image width. :func:`sample_span` does this once for all of them, inside the graph: the span runs from
the first to the last frame in which any person of the window has a joint, and ``T'`` frame indices
are spread evenly over it (nearest frame). A window and any cut of it that keeps all its skeletons
therefore give the same sampled frames, so these back ends have a temporal stride of 1 for the crop.
"""
from __future__ import annotations

import torch


def span_indices(frame_mask: torch.Tensor, num_persons: int, num_out: int) -> torch.Tensor:
    """Indices of ``num_out`` frames spread evenly over each window's span of skeleton frames.

    Args:
        frame_mask: ``(N*M, 1, T, 1)`` float 0/1, 1 where the person has at least one joint.
        num_persons: ``M`` (persons are folded into the batch, person-major within a window).
        num_out: ``T'``.

    Returns:
        ``(N, T')`` int64 frame indices in ``[first, last]`` of the window (all 0 for an empty window).
    """
    b, _, t, _ = frame_mask.shape
    any_person = frame_mask.reshape(b // num_persons, num_persons, t).amax(dim=1)  # (N, T)
    present = any_person > 0
    # first / last frame holding a skeleton, via argmax of a 0/1 row (ONNX ArgMax picks the first maximum)
    first = torch.argmax(present.to(torch.int64), dim=1, keepdim=True)  # (N, 1)
    last = (t - 1) - torch.argmax(present.flip(dims=[1]).to(torch.int64), dim=1, keepdim=True)
    last = torch.maximum(last, first)  # empty window: first = 0, last = T-1 -> clamp below
    last = torch.where(present.any(dim=1, keepdim=True), last, first)
    steps = torch.linspace(0.0, 1.0, num_out, device=frame_mask.device).unsqueeze(0)  # (1, T')
    pos = first.to(steps.dtype) + (last - first).to(steps.dtype) * steps  # (N, T')
    return torch.floor(pos + 0.5).to(torch.int64).clamp(0, t - 1)


def sample_span(x: torch.Tensor, frame_mask: torch.Tensor, num_persons: int, num_out: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample features and mask to ``T'`` frames over the window's skeleton span (:func:`span_indices`).

    Args:
        x: ``(N*M, C, T, V)`` per-person features (zeros where no skeleton).
        frame_mask: ``(N*M, 1, T, 1)`` float 0/1.
        num_persons: ``M``.
        num_out: ``T'``.

    Returns:
        ``(x', mask')``: ``(N*M, C, T', V)`` and ``(N*M, 1, T', 1)``; both persons of a window are
        sampled at the same frames, so they stay aligned in time.
    """
    b, c, _, v = x.shape
    idx = span_indices(frame_mask, num_persons, num_out)  # (N, T')
    idx = idx.repeat_interleave(num_persons, dim=0)  # (N*M, T')
    x_idx = idx.reshape(b, 1, num_out, 1).expand(b, c, num_out, v)
    m_idx = idx.reshape(b, 1, num_out, 1)
    return torch.gather(x, 2, x_idx), torch.gather(frame_mask, 2, m_idx)
