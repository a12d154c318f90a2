"""PoseC3D (seed 002; Duan et al., "Revisiting Skeleton-based Action Recognition", CVPR 2022) as a
recogniser back end of :class:`engines.sarde.models.SardeNet`.

PoseC3D classifies a 2D skeleton sequence as a stack of pseudo heatmaps with a 3D-CNN instead of a
graph network. Its pipeline, and where each step lives here:

1. Keypoints as coordinate triplets ``(x, y, c)`` (paper Sec. 3.1): the window's ``x``, ``y`` and
   ``score`` channels (``channels``); the depth channel, when the fused graph has one, is not used
   (PoseC3D is a 2D method; SardeNet still trains its depth net through ``L_I``).
2. Uniform temporal sampling of ``T'`` frames (Sec. 3.2): :func:`engines.seeds.resample.sample_span`.
3. Subject-centred cropping (Sec. 3.2): :func:`crop_box` / :func:`to_grid`.
4. Joint and limb pseudo heatmaps stacked over time into ``K x T' x H x W`` volumes (Sec. 3.1,
   Eqs. 1-2): :func:`joint_heatmaps`, :func:`limb_heatmaps`; all of 2-4 in :func:`window_to_volume`.
5. PoseConv3D with a SlowOnly backbone (Sec. 3.3): :class:`SlowOnly3D`, one per stream (joint, limb),
   late fusion of the two streams: :class:`PoseC3D`.

Section and equation numbers are those of the arXiv paper (2104.13586v2); the seed text in
``shared/seeds/002_*.txt`` is a slide summary of it with the same equations.

Everything is tensor arithmetic on the window inside the graph (no data-dependent control flow), so
training, evaluation and the daemon share it through the exported ONNX graph (opset 17, dynamic batch).

Departures from the paper (each also noted where it is made):

* Uniform sampling is deterministic (the nearest frame at ``T'`` evenly spaced points of the
  window's skeleton span) instead of a random frame per segment in training: identical under
  training's crops, and the same in training and in the daemon (no test-time multi-clip averaging).
* Default volume ``32 x 32 x 32`` (``T' x H x W``) instead of ``48 x 56 x 56``, ``σ = 1`` grid pixel
  instead of 0.6 px at 56 (a Gaussian narrower than ~0.8 px aliases on a coarse grid), and eyes/ears
  (COCO-18 joints 14-17, always masked in the default model) dropped: ``K = 14`` joints,
  ``L = 13`` limbs (the COCO-18 edges between them). All are settings.
* The crop box is one per window: the smallest box holding every visible joint of every person in
  every frame, padded by 25 % and made square (about what pyskl's ``PoseCompact`` does), and the
  volume is rendered in the box's coordinates directly (the paper crops the frames and resizes).
* Multi-person: the persons' heatmaps are merged by the maximum (the paper "accumulates" them;
  pyskl takes the maximum, which keeps the volume in [0, 1] where two persons overlap).
* SlowOnly is slimmed for a CPU: a ``1x3x3`` stem with spatial stride 2 (the paper's stem is
  ``1x7x7`` at stride 1 on a 56 grid: the paper keeps early down-sampling out; here a stride-1
  first stage alone doubled the training time), three stages of one bottleneck block each, widths
  ``(32, 64, 128)`` (paper ``128/256/512``, blocks ``4/6/3``); temporal kernels only in the last two
  stages (SlowOnly's inflation), spatial stride 2 per stage, no temporal stride.
* Both streams are trained together, from one cross-entropy on fused logits (the paper trains a
  joint and a limb model separately and averages their scores at test time); ``fusion`` picks the
  mean of the logits (default) or the paper's score average (log of the mean of the softmaxes).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from engines.layouts import COCO18_EDGES
from engines.seeds.resample import sample_span

#: COCO-18 joints rendered by default: all but the eyes and ears (14-17), masked in the default model.
BODY_JOINTS: tuple[int, ...] = tuple(range(14))
#: COCO-18 edges between :data:`BODY_JOINTS` (13 limbs).
BODY_EDGES: tuple[tuple[int, int], ...] = tuple(
    (a, b) for a, b in COCO18_EDGES if a in BODY_JOINTS and b in BODY_JOINTS)
STREAMS: tuple[str, ...] = ("joint", "limb")
#: Largest Gaussian exponent evaluated: ``exp(-80) ~ 2e-35`` stays a normal float32, where the far
#: tail would otherwise be denormal (an order of magnitude slower on a CPU) and contribute nothing.
_MAX_EXPONENT: float = 80.0


def joint_coordinates(x: torch.Tensor, mask: torch.Tensor, channels: Sequence[str]
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coordinate triplets ``(x, y, c)`` of the window (paper Sec. 3.1, "coordinate-triplets").

    Args:
        x: ``(B, C, T, V)`` float32, channels named by ``channels`` (``x``, ``y`` in frame-height
            units, image-centred; ``score`` in [0, 1]; 0 where a joint is missing), ``B = N*M``.
        mask: ``(B, 1, T, 1)`` float 0/1, 1 where the person has a skeleton.
        channels: names of ``x``'s channels; needs ``x`` and ``y``, uses ``score`` if present.

    Returns:
        ``(px, py, c)``, each ``(B, T, V)``: coordinates and confidence; ``c`` is the score where
        the window has one, else 1 where the joint is present (inside ``mask`` and not at (0, 0), the
        value every channel takes for a missing joint), and 0 for a missing joint either way.
    """
    names = tuple(channels)
    px, py = x[:, names.index("x")], x[:, names.index("y")]
    frame = mask[:, 0]  # (B, T, 1)
    if "score" in names:
        c = x[:, names.index("score")].clamp(min=0.0) * frame
    else:
        c = ((px.abs() + py.abs()) > 0).to(x.dtype) * frame
    return px, py, c


def crop_box(px: torch.Tensor, py: torch.Tensor, c: torch.Tensor, num_persons: int, padding: float = 0.25,
             min_side: float = 1e-2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Subject-centred crop box (paper Sec. 3.2): one square box per window.

    The smallest box holding every joint with ``c > 0`` of every person and frame of the window,
    enlarged by ``padding`` (side ``* (1 + padding)``, centre kept) and made square (the longer side),
    so that the people fill the grid whatever their size and place in the image.

    Args:
        px, py, c: ``(N*M, T, V)`` from :func:`joint_coordinates` (persons person-major).
        num_persons: ``M``.
        padding: relative enlargement of the box (pyskl's ``PoseCompact`` uses 0.25).
        min_side: smallest side in frame-height units (a window with one visible joint).

    Returns:
        ``(cx, cy, side)``, each ``(N, 1, 1, 1)``: the box centre and side, frame-height units; an
        empty window gets the box centred at 0 with side 1 (its heatmaps are all zero anyway).
    """
    present = c > 0
    big = torch.full_like(px, 1e4)
    n_px = torch.where(present, px, big).reshape(-1, num_persons * px.shape[1] * px.shape[2])
    n_py = torch.where(present, py, big).reshape(n_px.shape)
    x_px = torch.where(present, px, -big).reshape(n_px.shape)
    x_py = torch.where(present, py, -big).reshape(n_px.shape)
    x0, x1 = n_px.amin(dim=1), x_px.amax(dim=1)  # (N,) one axis at a time (ONNX ReduceMin/Max)
    y0, y1 = n_py.amin(dim=1), x_py.amax(dim=1)
    any_joint = present.reshape(n_px.shape).any(dim=1)
    zero = torch.zeros_like(x0)
    cx = torch.where(any_joint, 0.5 * (x0 + x1), zero)
    cy = torch.where(any_joint, 0.5 * (y0 + y1), zero)
    side = torch.where(any_joint, torch.maximum(x1 - x0, y1 - y0) * (1.0 + padding), torch.ones_like(x0))
    side = side.clamp(min=min_side)
    return cx.reshape(-1, 1, 1, 1), cy.reshape(-1, 1, 1, 1), side.reshape(-1, 1, 1, 1)


def to_grid(px: torch.Tensor, py: torch.Tensor, box: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
            num_persons: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Window coordinates -> grid pixels of the crop box.

    The box ``[cx - side/2, cx + side/2]`` maps onto ``[-0.5, size - 0.5]``: grid pixel ``w``
    (0..size-1) has its centre at ``u = w``, i.e. ``u = (px - cx) / side * size + (size - 1) / 2``
    (``v`` likewise from ``py``; ``v`` grows downwards like image rows).

    Args:
        px, py: ``(N*M, T, V)`` frame-height units.
        box: :func:`crop_box`'s ``(cx, cy, side)``, ``(N, 1, 1, 1)``.
        num_persons: ``M``. size: ``H = W``.

    Returns:
        ``(u, v)`` ``(N*M, T, V)`` in grid pixels.
    """
    cx, cy, side = box
    b, t, v = px.shape
    scale = float(size) / side  # (N, 1, 1, 1)
    half = 0.5 * (size - 1)
    u = (px.reshape(-1, num_persons, t, v) - cx) * scale + half
    w = (py.reshape(-1, num_persons, t, v) - cy) * scale + half
    return u.reshape(b, t, v), w.reshape(b, t, v)


def joint_heatmaps(u: torch.Tensor, v: torch.Tensor, c: torch.Tensor, size: int, sigma: float) -> torch.Tensor:
    """Joint pseudo heatmaps (paper Eq. 1): ``J_k[h, w] = exp(-((w - u_k)^2 + (h - v_k)^2) / (2σ^2)) * c_k``.

    Computed as the outer product of two 1-D Gaussians (the same value, exactly separable).

    Args:
        u, v: ``(B, T, K)`` grid coordinates (:func:`to_grid`); c: ``(B, T, K)`` confidences.
        size: ``H = W``; sigma: σ in grid pixels.

    Returns:
        ``(B, K, T, H, W)`` float32 in [0, 1]; a joint with ``c = 0`` contributes nothing.
    """
    g = torch.arange(size, dtype=u.dtype, device=u.device)
    uk, vk, ck = u.transpose(1, 2), v.transpose(1, 2), c.transpose(1, 2)  # (B, K, T)
    inv = 0.5 / (sigma * sigma)
    half = 0.5 * _MAX_EXPONENT  # each factor >= e^-40, so the product stays a normal float
    gx = torch.exp(-((g - uk.unsqueeze(-1)) ** 2 * inv).clamp(max=half))  # (B, K, T, W)
    gy = torch.exp(-((g - vk.unsqueeze(-1)) ** 2 * inv).clamp(max=half)) * ck.unsqueeze(-1)  # (B, K, T, H)
    return gy.unsqueeze(-1) * gx.unsqueeze(-2)  # (B, K, T, H, W)


def limb_heatmaps(u: torch.Tensor, v: torch.Tensor, c: torch.Tensor, edges: Sequence[tuple[int, int]],
                  size: int, sigma: float) -> torch.Tensor:
    """Limb pseudo heatmaps (paper Eq. 2): ``L_k[h, w] = exp(-D^2 / (2σ^2)) * min(c_a, c_b)``.

    ``D`` is the distance from the pixel centre ``(w, h)`` to the segment ``[(u_a, v_a), (u_b, v_b)]``
    (the projection parameter clamped to [0, 1], so beyond an end point it is the distance to that
    end; a zero-length limb is its end point's Gaussian).

    Args:
        u, v, c: ``(B, T, V)`` grid coordinates and confidences; edges: ``L`` pairs ``(a, b)`` of
            joint indices into ``V``; size: ``H = W``; sigma: σ in grid pixels.

    Returns:
        ``(B, L, T, H, W)`` float32 in [0, 1].
    """
    ia = [a for a, _ in edges]
    ib = [b for _, b in edges]
    ua, va, ca = u[:, :, ia].transpose(1, 2), v[:, :, ia].transpose(1, 2), c[:, :, ia].transpose(1, 2)  # (B, L, T)
    ub, vb, cb = u[:, :, ib].transpose(1, 2), v[:, :, ib].transpose(1, 2), c[:, :, ib].transpose(1, 2)
    g = torch.arange(size, dtype=u.dtype, device=u.device)
    dx, dy = (ub - ua).unsqueeze(-1), (vb - va).unsqueeze(-1)  # (B, L, T, 1): segment a -> b
    length2 = dx * dx + dy * dy
    inv_len2 = 1.0 / length2.clamp(min=1e-6)
    rx = g - ua.unsqueeze(-1)  # (B, L, T, W): pixel - a, x part
    ry = g - va.unsqueeze(-1)  # (B, L, T, H): y part
    # D^2 = |r|^2 - |d|^2 (p^2 - (p - t)^2), p = r.d / |d|^2 the projection, t = clamp(p, 0, 1):
    # |r - t d|^2 expanded, so that every full-size (B, L, T, H, W) step below works in place (one
    # allocation of each full-size tensor instead of a dozen: several times faster on a CPU).
    p = (ry * (dy * inv_len2)).unsqueeze(-1) + (rx * (dx * inv_len2)).unsqueeze(-2)  # (B, L, T, H, W)
    e = p.clamp(0.0, 1.0)
    e.sub_(p).mul_(e)  # (t - p)^2
    p.mul_(p).sub_(e)  # p^2 - (p - t)^2
    p.mul_(-length2.unsqueeze(-1))
    p.add_((rx * rx).unsqueeze(-2)).add_((ry * ry).unsqueeze(-1)).clamp_(min=0.0)  # D^2
    p.mul_(0.5 / (sigma * sigma)).clamp_(max=_MAX_EXPONENT).neg_().exp_()
    return p.mul_(torch.minimum(ca, cb).unsqueeze(-1).unsqueeze(-1))


def window_to_volume(x: torch.Tensor, mask: torch.Tensor, num_persons: int, channels: Sequence[str],
                     num_frames: int = 32, size: int = 32, sigma: float = 1.0, padding: float = 0.25,
                     joints: Sequence[int] = BODY_JOINTS, edges: Sequence[tuple[int, int]] | None = None,
                     streams: Sequence[str] = STREAMS) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The back end's input -> PoseC3D's 3D heatmap volumes (paper Secs. 3.1-3.2).

    Steps: coordinate triplets (:func:`joint_coordinates`); one subject-centred square crop box per
    window over all its visible joints, persons and frames (:func:`crop_box`); uniform sampling of
    ``num_frames`` frames over the window's skeleton span (:func:`engines.seeds.resample.sample_span`);
    joint (Eq. 1) and limb (Eq. 2) heatmaps per person and frame in the box's grid
    (:func:`joint_heatmaps`, :func:`limb_heatmaps`); the persons of a window merged by the maximum.
    The volumes depend only on the window's skeletons, not on zero frames around them (so not on
    training's crops), nor on the people's place and size in the image (the crop box).

    Args:
        x: ``(N*M, C, T, V)`` float32 (persons folded person-major), channels named by ``channels``
            (see :func:`joint_coordinates`); V = 18 COCO-18 joints.
        mask: ``(N*M, 1, T, 1)`` float 0/1.
        num_persons: ``M``.
        num_frames: ``T'`` (paper 48; default 32).
        size: ``H = W`` of the grid (paper 56; default 32).
        sigma: σ of Eqs. 1-2 in grid pixels (paper 0.6 at 56; default 1.0, see the module notes).
        padding: crop box enlargement (:func:`crop_box`).
        joints: COCO-18 joints rendered (default :data:`BODY_JOINTS`, eyes/ears dropped).
        edges: limbs as COCO-18 joint pairs; default the :data:`engines.layouts.COCO18_EDGES`
            between ``joints``.
        streams: which volumes to build (``"joint"``, ``"limb"``).

    Returns:
        ``(joint, limb)``: ``(N, K, T', H, W)`` with ``K = len(joints)`` and ``(N, L, T', H, W)`` with
        ``L = len(edges)``, float32 in [0, 1] (``H`` rows downwards = image ``y``, ``W`` = image ``x``);
        ``None`` for a stream not in ``streams``. No gradient flows back into ``x``.
    """
    joints = tuple(int(j) for j in joints)
    if edges is None:
        edges = tuple((a, b) for a, b in COCO18_EDGES if a in joints and b in joints)
    # the volumes are a fixed function of the data: no gradient flows back into x (its depth channel,
    # the only one with a gradient in the fused graph, is not used), and the heatmaps work in place
    px, py, c = joint_coordinates(x.detach(), mask.detach(), channels)
    px, py, c = px[:, :, list(joints)], py[:, :, list(joints)], c[:, :, list(joints)]  # (B, T, K)
    box = crop_box(px, py, c, num_persons, padding)  # over every frame of the window (crop-invariant)
    stacked, _ = sample_span(torch.stack([px, py, c], dim=1), mask, num_persons, num_frames)  # (B, 3, T', K)
    px, py, c = stacked[:, 0], stacked[:, 1], stacked[:, 2]
    u, v = to_grid(px, py, box, num_persons, size)

    def merge(volume: torch.Tensor) -> torch.Tensor:  # (N*M, K, T', H, W) -> (N, K, T', H, W)
        _, k, t, h, w = volume.shape
        return volume.reshape(-1, num_persons, k, t, h, w).amax(dim=1)

    joint_vol = merge(joint_heatmaps(u, v, c, size, sigma)) if "joint" in streams else None
    limb_vol = None
    if "limb" in streams:
        index = {j: i for i, j in enumerate(joints)}
        local = [(index[a], index[b]) for a, b in edges]
        limb_vol = merge(limb_heatmaps(u, v, c, local, size, sigma))
    return joint_vol, limb_vol


class Bottleneck3D(nn.Module):
    """SlowOnly's ResNet bottleneck: ``kt x 1 x 1`` (inflated stages, ``kt = 3``; else ``1``) ->
    ``1 x 3 x 3`` (spatial stride) -> ``1 x 1 x 1``, each conv + BN (+ ReLU), plus the (projected) input.

    Shape: ``(B, C_in, T, H, W)`` -> ``(B, C_out, T, ceil(H / s), ceil(W / s))``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, temporal_kernel: int = 1,
                 expansion: int = 4):
        super().__init__()
        mid = max(4, out_channels // expansion)
        kt = int(temporal_kernel)
        self.body = nn.Sequential(
            nn.Conv3d(in_channels, mid, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False),
            nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, mid, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False),
            nn.BatchNorm3d(mid), nn.ReLU(inplace=True),
            nn.Conv3d(mid, out_channels, 1, bias=False), nn.BatchNorm3d(out_channels),
        )
        if in_channels == out_channels and stride == 1:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride=(1, stride, stride), bias=False),
                nn.BatchNorm3d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class SlowOnly3D(nn.Module):
    """Slim SlowOnly 3D-CNN for heatmap volumes (PoseConv3D, paper Sec. 3.3): stem, stages, global
    average pooling, dropout, fully connected layer.

    The paper's Pose-SlowOnly: SlowOnly-R50 with its first stage removed and half the width, no early
    down-sampling, temporal (3x1x1) kernels only in the later, inflated stages. Here (CPU-sized, see
    the module notes): stem ``1 x 3 x 3`` conv (``stem_width``, spatial ``stem_stride``), then one stage
    per ``widths`` entry of ``blocks[i]`` :class:`Bottleneck3D` s, the first with spatial stride
    ``strides[i]``; stage ``i`` has temporal kernels 3 where ``inflate[i]``. With the defaults a
    ``32 x 32`` grid is ``16, 8, 4, 2`` pixels wide after the stem and the stages (paper: 56 -> 7);
    the time axis keeps its ``T'`` frames to the global pooling.

    Args:
        in_channels: ``K`` (or ``L``) heatmaps. num_classes: logits.
        stem_width, stem_stride, widths, blocks, inflate, strides, expansion: the shape above
            (``expansion``: block width / bottleneck width, ResNet's 4).
        dropout: before the fc (paper 0.5).

    Shape: ``(N, K, T', H, W)`` -> logits ``(N, num_classes)``.
    """

    def __init__(self, in_channels: int, num_classes: int, stem_width: int = 16, stem_stride: int = 2,
                 widths: Sequence[int] = (32, 64, 128), blocks: Sequence[int] = (1, 1, 1),
                 inflate: Sequence[bool] = (False, True, True), strides: Sequence[int] = (2, 2, 2),
                 expansion: int = 4, dropout: float = 0.5):
        super().__init__()
        if not (len(widths) == len(blocks) == len(inflate) == len(strides)):
            raise ValueError("widths, blocks, inflate and strides need one entry per stage")
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, stem_width, (1, 3, 3), stride=(1, stem_stride, stem_stride), padding=(0, 1, 1),
                      bias=False),
            nn.BatchNorm3d(stem_width), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        prev = stem_width
        for width, count, inf, stride in zip(widths, blocks, inflate, strides):
            for i in range(int(count)):
                layers.append(Bottleneck3D(prev, int(width), int(stride) if i == 0 else 1, 3 if inf else 1, expansion))
                prev = int(width)
        self.stages = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(volume))
        return self.fc(self.dropout(h.mean(dim=(2, 3, 4))))


class PoseC3D(nn.Module):
    """PoseC3D back end (seed 002): heatmap volumes (:func:`window_to_volume`) -> one
    :class:`SlowOnly3D` per stream (joint, limb) -> late fusion.

    Built by :func:`engines.sarde.architectures.build_model` as
    ``PoseC3D(in_channels, num_classes, num_persons, channels, **model.head)``.

    Args:
        in_channels: ``C`` of the input (checked against ``channels``).
        num_classes: K.
        num_persons: M (persons are folded into the batch and merged into one volume per window).
        channels: input channel names (needs ``x``, ``y``; uses ``score`` if present, ignores ``depth``).
        streams: ``("joint", "limb")`` (paper J + L), or one of them alone.
        fusion: ``"mean"``: the mean of the streams' logits (default; one cross-entropy trains both),
            or ``"scores"``: ``log(mean_s softmax(z_s))``, whose softmax is the mean of the streams'
            probabilities (the paper's score averaging).
        num_frames, size, sigma, padding, joints: volume settings (:func:`window_to_volume`).
        stem_width, stem_stride, widths, blocks, inflate, strides, expansion, dropout:
            :class:`SlowOnly3D` settings, shared by both streams.

    Shape:
        ``forward(x (N*M, C, T, V), mask (N*M, 1, T, 1)) -> logits (N, K)``; ``time_stride = 1``.
    """

    def __init__(self, in_channels: int, num_classes: int, num_persons: int = 2,
                 channels: Sequence[str] = ("x", "y", "score"), streams: Sequence[str] = STREAMS,
                 fusion: str = "mean", num_frames: int = 32, size: int = 32, sigma: float = 1.0,
                 padding: float = 0.25, joints: Sequence[int] = BODY_JOINTS, stem_width: int = 16,
                 stem_stride: int = 2, widths: Sequence[int] = (32, 64, 128), blocks: Sequence[int] = (1, 1, 1),
                 inflate: Sequence[bool] = (False, True, True), strides: Sequence[int] = (2, 2, 2),
                 expansion: int = 4, dropout: float = 0.5):
        super().__init__()
        self.channels = tuple(str(c) for c in channels)
        if len(self.channels) != in_channels:
            raise ValueError(f"posec3d: {in_channels} input channels but channels names {self.channels}")
        if "x" not in self.channels or "y" not in self.channels:
            raise ValueError(f"posec3d needs the x and y channels, got {self.channels}")
        self.streams = tuple(str(s) for s in streams)
        if not self.streams or set(self.streams) - set(STREAMS) or len(set(self.streams)) != len(self.streams):
            raise ValueError(f"posec3d: streams must be a non-empty subset of {STREAMS}, got {self.streams}")
        if fusion not in ("mean", "scores"):
            raise ValueError(f"posec3d: fusion must be mean or scores, got {fusion!r}")
        self.fusion = fusion
        self.num_persons = int(num_persons)
        self.num_frames, self.size, self.sigma, self.padding = int(num_frames), int(size), float(sigma), float(padding)
        self.joints = tuple(int(j) for j in joints)
        if not self.joints or any(j < 0 or j > 17 for j in self.joints) or len(set(self.joints)) != len(self.joints):
            raise ValueError(f"posec3d: joints must be distinct COCO-18 indices, got {self.joints}")
        self.edges = tuple((a, b) for a, b in COCO18_EDGES if a in self.joints and b in self.joints)
        if "limb" in self.streams and not self.edges:
            raise ValueError("posec3d: the limb stream needs joints joined by COCO-18 edges")
        net = dict(stem_width=int(stem_width), stem_stride=int(stem_stride), widths=tuple(int(w) for w in widths),
                   blocks=tuple(int(b) for b in blocks), inflate=tuple(bool(i) for i in inflate),
                   strides=tuple(int(st) for st in strides), expansion=int(expansion), dropout=float(dropout))
        self.nets = nn.ModuleDict()
        if "joint" in self.streams:
            self.nets["joint"] = SlowOnly3D(len(self.joints), num_classes, **net)
        if "limb" in self.streams:
            self.nets["limb"] = SlowOnly3D(len(self.edges), num_classes, **net)
        #: no temporal down-sampling of the input window: crops may start anywhere
        self.time_stride = 1

    def volumes(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The ``(joint, limb)`` heatmap volumes of :func:`window_to_volume` with this model's settings."""
        return window_to_volume(x, mask, self.num_persons, self.channels, self.num_frames, self.size, self.sigma,
                                self.padding, self.joints, self.edges, self.streams)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        joint, limb = self.volumes(x, mask)
        outs = []
        if joint is not None:
            outs.append(self.nets["joint"](joint))
        if limb is not None:
            outs.append(self.nets["limb"](limb))
        if len(outs) == 1:
            return outs[0]
        z = torch.stack(outs, dim=0)  # (S, N, K)
        if self.fusion == "mean":
            return z.mean(dim=0)
        return torch.logsumexp(F.log_softmax(z, dim=2), dim=0) - math.log(len(outs))
