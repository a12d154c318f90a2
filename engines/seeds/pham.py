"""Pham et al. (seed 001): a 2D -> 3D lifting network and the Enhanced-SPMF image + CNN recogniser.

Seed 001 ("A Unified Deep Framework for Joint 3D Pose Estimation and Action Recognition from a
Single RGB Camera") has two stages: (1) a two-stream MLP lifts OpenPose 2D keypoints to 3D poses
(Sec. 3.2, Fig. 2); (2) the 3D pose sequence is encoded as one colour image, the Enhanced-SPMF
("Skeleton Pose-Motion Feature", Sec. 3.3, defined in their ref. [53], Sensors 2019), which a CNN
found by ENAS classifies (Sec. 3.3, Fig. 6). Both stages become parts of the project's fused graph
(:class:`engines.sarde.models.SardeNet`):

* :class:`Lifter` is a depth front end (``model.depth_net: lifter``, settings ``model.lifter``):
  the lifting MLP, predicting each joint's camera depth (the detector already gives x, y).
* :class:`SPMFNet` is a recogniser back end (``model.recognizer: pham``, settings ``model.head``):
  :func:`encode_spmf` (sampling, joint ordering, pose and motion features, per-window min-max
  colour coding, contrast enhancement) followed by a fixed small CNN.

Everything is built from the window inside the graph, so training, evaluation and the daemon share
it through the exported ONNX model. The seed text defers the details of the Enhanced-SPMF to [53]
("detailed description of the Enhanced-SPMF is not included"); [53]'s abstract names the
enhancement "Adaptive Histogram Equalization (AHE)". The encoding below is therefore our reading,
with every choice listed in the docstrings ("Departure").
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from engines.layouts import NUM_JOINTS
from engines.seeds.resample import sample_span

# --- depth front end: the 2D -> 3D lifter (Sec. 3.2) ---------------------------------------------------


class _FrameBatchNorm(nn.BatchNorm1d):
    """BatchNorm over frames ``(R, C)``; a single row in training uses the running statistics
    (``nn.BatchNorm1d`` refuses batch statistics of one sample; the per-frame training paths of
    SardeNet and ``pretrain_depth`` can hand over one frame). Eval mode is plain BatchNorm."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def _dense(cin: int, cout: int, dropout: float) -> list[nn.Module]:
    """Linear -> BatchNorm -> SELU -> Dropout: the unit of the paper's stream (Sec. 3.2.1)."""
    lin = nn.Linear(cin, cout)
    nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")  # "He initialization" (Sec. 4.2)
    nn.init.zeros_(lin.bias)
    return [lin, _FrameBatchNorm(cout), nn.SELU(), nn.Dropout(dropout)]


class _LifterStream(nn.Module):
    """One stream: input unit, ``blocks`` residual blocks of two units with an identity skip, linear
    output layer (Fig. 2). ``(R, F_in)`` -> ``(R, F_out)`` (pre-activation depth)."""

    def __init__(self, in_features: int, width: int, blocks: int, dropout: float, out_features: int,
                 init_depth: float):
        super().__init__()
        self.inp = nn.Sequential(*_dense(in_features, width, dropout))
        self.blocks = nn.ModuleList(
            nn.Sequential(*_dense(width, width, dropout), *_dense(width, width, dropout)) for _ in range(blocks))
        self.out = nn.Linear(width, out_features)
        with torch.no_grad():  # start near init_depth metres for every joint: softplus^-1(init_depth)
            nn.init.normal_(self.out.weight, std=1e-3)
            self.out.bias.fill_(float(torch.log(torch.expm1(torch.tensor(init_depth)))))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        h = self.inp(h)
        for block in self.blocks:
            h = h + block(h)  # identity connection
        return self.out(h)


class Lifter(nn.Module):
    """Pham et al.'s 2D -> 3D lifting network (seed 001, Sec. 3.2, Eq. 1, Fig. 2) as a depth front end.

    Per frame, the ``2V`` normalised joint coordinates (``[x_0..x_{V-1}, y_0..y_{V-1}]``; 0 for a
    missing joint) plus, with ``visibility``, ``V`` 0/1 joint-present flags go through one or more
    streams of: Linear(F_in -> width) -> BN -> SELU -> Dropout, then ``blocks`` residual blocks
    ``h + [Linear -> BN -> SELU -> Dropout] x 2 (h)``, then Linear(width -> V) and a softplus, so
    the depth is positive, in metres. The output layer starts with small weights and the bias
    ``softplus^-1(init_depth)`` (every joint near 2.5 m at initialisation, like
    :class:`engines.sarde.models.DepthGCN`). Hidden layers use He initialisation (Sec. 4.2).
    Every frame is lifted on its own: ``(B, 2, T, V)`` is flattened to ``(B*T, 2V)``, so BatchNorm
    normalises over frames; frame ``t``'s depth depends on frame ``t`` only.

    Training (Sec. 3.2, 4.2): the paper minimises the Huber loss (Eq. 2): select
    ``engines.sarde.losses.huber_depth_loss`` with recipe ``train: {depth_loss: huber}``. The paper
    trains with Adam, lr 1e-3 halved every 50 epochs, 300 epochs, mini-batches of 128 poses,
    dropout 0.25; the project trains with its own one-cycle schedule (``engines.sarde.train``), with
    ``pretrain_depth`` then joint multi-task training, which is what is used here.

    Departures from the paper:

    * predicts per-joint camera depth ``z`` only (``V`` outputs), not the 3D pose ``(x, y, z)``
      (``3V``): in this pipeline ``x, y`` come from the detector, and SARDE's depth-net contract is
      depth in metres; the depth is absolute camera z, not root-relative as on Human3.6M;
    * width is a setting, default 256 for the CPU budget (the paper's reading, after Martinez et
      al., is 1024: ``width=1024`` gives about 4.3 M parameters per stream);
    * the paper's two streams are trained separately, one on ground-truth 2D and one on OpenPose
      detections, and averaged at inference; the project has no separate ground-truth 2D stream
      (training windows are detector-like by augmentation), so ``streams=1`` by default; with
      ``streams=2`` independent streams see the same input and their depths are averaged;
    * ``visibility`` flags (joint present = its (x, y) is not exactly (0, 0)) are our addition:
      the project's windows have missing joints (0), the paper's Human3.6M poses do not;
    * trained jointly with the recogniser inside SardeNet (the paper pre-trains on Human3.6M and
      then only runs it to produce 3D poses for the recogniser).

    Args:
        width: hidden width.
        blocks: residual blocks (paper: 2).
        dropout: dropout rate (paper: 0.25).
        streams: parallel streams averaged (paper: 2, see above).
        visibility: append the ``V`` joint-present flags to the input.
        num_joints: V.
        init_depth: depth in metres at initialisation.
        in_channels: 2 (x, y).

    Shape:
        input ``(B, 2, T, V)`` float32 normalised (x, y) (``engines.skeleton``), ``B = N*M``; also
        the per-frame training path's ``(R, 2, 1, V)``. Output ``(B, T, V)`` depth in metres (> 0).
    """

    def __init__(self, width: int = 256, blocks: int = 2, dropout: float = 0.25, streams: int = 1,
                 visibility: bool = True, num_joints: int = NUM_JOINTS, init_depth: float = 2.5,
                 in_channels: int = 2):
        super().__init__()
        if streams < 1 or blocks < 0 or width < 1:
            raise ValueError(f"Lifter needs streams >= 1, blocks >= 0, width >= 1; got {streams}, {blocks}, {width}")
        self.visibility = bool(visibility)
        self.num_joints = num_joints
        in_features = in_channels * num_joints + (num_joints if visibility else 0)
        self.streams = nn.ModuleList(
            _LifterStream(in_features, int(width), int(blocks), float(dropout), num_joints, init_depth)
            for _ in range(int(streams)))

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        _, c, t, v = xy.shape
        f = xy.permute(0, 2, 1, 3).reshape(-1, c * v)  # (B*T, 2V): [x_0..x_V-1, y_0..y_V-1] per frame
        if self.visibility:
            present = (xy.abs().amax(dim=1) > 0).to(xy.dtype)  # (B, T, V)
            f = torch.cat([f, present.reshape(-1, v)], dim=1)
        depth = F.softplus(self.streams[0](f))
        for stream in self.streams[1:]:
            depth = depth + F.softplus(stream(f))
        depth = depth / len(self.streams)  # the paper averages the streams' outputs
        return depth.reshape(-1, t, v)


# --- recogniser back end: Enhanced-SPMF + CNN (Sec. 3.3) ------------------------------------------------

#: Rows of one person in the SPMF image: an Euler tour of the COCO-18 tree rooted at the neck
#: (depth-first, writing a joint again when the walk comes back to it), so any two neighbouring rows
#: are joints connected by a bone (``engines.layouts.COCO18_EDGES``) and every limb appears as a
#: contiguous run of rows: neck, head (nose, eyes, ears), right arm, right leg (hanging from the
#: right shoulder in COCO-18), left arm, left leg. 35 rows (2V - 1).
SPMF_JOINT_ORDER: tuple[int, ...] = (
    1, 0, 14, 16, 14, 0, 15, 17, 15, 0,  # neck, nose, r_eye, r_ear, back, l_eye, l_ear, back to the neck
    1, 2, 3, 4, 3, 2, 8, 9, 10, 9, 8, 2,  # right shoulder, elbow, wrist, back; right hip, knee, ankle, back
    1, 5, 6, 7, 6, 5, 11, 12, 13, 12, 11, 5,  # the same on the left side
    1,
)

#: Smallest value range of a min-max normalisation (normalised units / metres): a static pose's
#: motion feature (range 0) maps to 0 instead of amplifying rounding noise.
_RANGE_EPS = 1e-4


def _colour_channels(x: torch.Tensor, channels: Sequence[str]) -> torch.Tensor:
    """``(B, C, T, V)`` -> ``(B, 3, T, V)``: x -> R, y -> G, depth -> B (zeros without depth)."""
    names = tuple(channels)
    ix, iy = names.index("x"), names.index("y")
    parts = [x[:, ix:ix + 1], x[:, iy:iy + 1]]
    if "depth" in names:
        iz = names.index("depth")
        parts.append(x[:, iz:iz + 1])
    else:
        parts.append(torch.zeros_like(parts[0]))
    return torch.cat(parts, dim=1)


def _minmax(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per window and channel min-max normalisation to [0, 1] over the valid entries.

    ``values`` ``(N, M, 3, T, V)``, ``valid`` ``(N, M, 1, T, V)`` 0/1; invalid entries -> 0.
    """
    big = torch.full_like(values, 1e6)
    keep = valid > 0
    lo = torch.where(keep, values, big).amin(dim=(1, 3, 4), keepdim=True)  # (N, 1, 3, 1, 1)
    hi = torch.where(keep, values, -big).amax(dim=(1, 3, 4), keepdim=True)
    scale = (hi - lo).clamp(min=_RANGE_EPS)
    return ((values - lo) / scale).clamp(0.0, 1.0) * valid


def spmf_image(x: torch.Tensor, mask: torch.Tensor, channels: Sequence[str], num_persons: int = 2,
               num_frames: int = 32, joint_order: Sequence[int] | torch.Tensor = SPMF_JOINT_ORDER
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The SPMF colour image before enhancement (seed 001 Sec. 3.3; [53]'s pose + motion features).

    Steps: (1) :func:`engines.seeds.resample.sample_span` picks ``T'`` frames evenly over the
    window's skeleton span (the image width does not depend on the action's length or position);
    (2) per joint and sampled frame, the pose feature PF is the coordinate triple (x, y, depth) and
    the motion feature MF the difference to the next sampled frame, ``p_{t+1} - p_t`` (the last MF
    column, and any MF entry whose joint is missing in either frame, is invalid); (3) PF and MF are
    each min-max normalised per window and per coordinate to [0, 1] over their valid entries (both
    persons, all sampled frames and joints share the range, so relative positions survive) and
    become the colour channels x -> R, y -> G, depth -> B; (4) joints are ordered along the body
    chains (:data:`SPMF_JOINT_ORDER`: neighbouring rows are connected joints); (5) PF and MF are
    placed side by side, PF in columns ``[0, T')``, MF in ``[T', 2T')``, and the persons' rows are
    stacked (person ``m``'s rows ``[m R, (m+1) R)``, ``R = len(joint_order)``).

    A joint is valid where its person has a skeleton in that frame (``mask``) and any of its input
    channels is non-zero (x, y, depth, score are all 0 exactly where a joint is missing; the
    detector score and the estimated depth are > 0 for every present joint). Invalid pixels are 0 (black).

    Departures: [53]'s text is not in the seed folder (the seed paper only names "3D poses and
    their motions" and shows example images, Fig. 3), so the features are our reading: PF / MF
    hold the joint coordinates themselves and their frame-to-frame differences (not derived
    joint-joint features such as distances or orientations, which [53] may use); PF and MF are
    placed as two halves of the image rather than interleaved frame by frame; frames are sampled
    to a fixed ``T'`` (the paper resizes the image); without a ``depth`` channel
    (``depth_mode: none``) the blue channel is 0; a ``score`` channel is only used to tell
    missing joints; missing joints are black (0), the same value as each channel's minimum
    (the paper's Kinect / lifted skeletons have no missing joints).

    Args:
        x: ``(N*M, C, T, V)`` float32, channels named by ``channels`` (``x``, ``y``[, ``depth``]
            [, ``score``]); persons folded person-major.
        mask: ``(N*M, 1, T, 1)`` float 0/1, 1 where the person has a skeleton.
        channels: names of ``x``'s channels.
        num_persons: M. num_frames: T'.
        joint_order: the row order of one person's joints (a sequence, or an int64 tensor).

    Returns:
        ``(image, valid)``: ``(N, 3, M*R, 2T')`` float32 in [0, 1] and ``(N, 1, M*R, 2T')`` 0/1.
    """
    xs, ms = sample_span(x, mask, num_persons, num_frames)  # (B, C, T', V), (B, 1, T', 1)
    present = (xs.abs().amax(dim=1, keepdim=True) > 0).to(xs.dtype) * ms  # (B, 1, T', V)
    pose = _colour_channels(xs, channels)  # (B, 3, T', V)
    motion = torch.cat([pose[:, :, 1:] - pose[:, :, :-1], torch.zeros_like(pose[:, :, :1])], dim=2)
    moving = torch.cat([present[:, :, 1:] * present[:, :, :-1], torch.zeros_like(present[:, :, :1])], dim=2)
    v = xs.shape[3]
    shape = (-1, num_persons, 3, num_frames, v)
    vshape = (-1, num_persons, 1, num_frames, v)
    pf = _minmax(pose.reshape(shape), present.reshape(vshape))
    mf = _minmax(motion.reshape(shape), moving.reshape(vshape))
    order = joint_order if isinstance(joint_order, torch.Tensor) else torch.tensor(list(joint_order), dtype=torch.int64)
    order = order.to(x.device)

    def layout(a: torch.Tensor) -> torch.Tensor:  # (N, M, C, T', V) -> (N, C, M*R, T')
        a = torch.index_select(a, 4, order)  # (N, M, C, T', R)
        return a.permute(0, 2, 1, 4, 3).reshape(a.shape[0], a.shape[2], -1, num_frames)

    image = torch.cat([layout(pf), layout(mf)], dim=3)  # (N, 3, M*R, 2T')
    valid = torch.cat([layout(present.reshape(vshape)), layout(moving.reshape(vshape))], dim=3)
    return image, valid


def enhance_contrast(image: torch.Tensor, valid: torch.Tensor, bins: int = 16, clip_limit: float = 2.0) -> torch.Tensor:
    """The "Enhanced" step: contrast-limited histogram equalisation per image and colour channel.

    For each image and channel, the histogram of the valid pixels' values over ``bins`` equal bins
    of [0, 1] is built with a triangular (linear-interpolation) kernel: a value at ``u = v * bins``
    (clamped to ``[0.5, bins - 0.5]``) gives weight ``max(0, 1 - |u - (j + 0.5)|)`` to bin ``j``
    (weights sum to 1), so the histogram, and the whole encoding, is a continuous function of the
    pixels (no bin flips between torch and onnxruntime rounding). The normalised histogram ``h``
    is clipped at ``clip_limit / bins`` and the clipped mass spread evenly over all bins (CLAHE's
    clip, done once): ``h'_j = min(h_j, c) + Σ_k max(h_k - c, 0) / bins``. The pixel map is the
    piecewise-linear cumulative histogram ``T(v) = Σ_j h'_j clamp(v * bins - j, 0, 1)``: monotone,
    ``T(0) = 0``, ``T(1) = Σ h' = 1``. Invalid pixels stay 0.

    Departure: [53] applies Adaptive Histogram Equalization (local, per tile, interpolated between
    tiles); this is one global mapping per channel of each (small, 70 x 64) image, with a CLAHE-like
    clip limit and a soft histogram, because it must be part of the ONNX graph (no sorting, no
    data-dependent tiles) and a tile of a 70 x 64 image holds too few valid pixels for a stable
    histogram. ``clip_limit = inf`` is plain histogram equalisation; smaller values move the map
    towards the identity.

    Args:
        image: ``(N, 3, H, W)`` in [0, 1]; valid: ``(N, 1, H, W)`` 0/1.
        bins: histogram bins. clip_limit: clip level as a multiple of the uniform bin mass ``1/bins``.

    Returns:
        ``(N, 3, H, W)`` float32 in [0, 1].
    """
    n, c, h, w = image.shape
    centres = torch.arange(bins, dtype=image.dtype, device=image.device) + 0.5  # (B,)
    u = (image * bins).reshape(-1, c, h * w, 1)  # (N, 3, P, 1)
    weight = F.relu(1.0 - (u.clamp(0.5, bins - 0.5) - centres).abs())  # (N, 3, P, bins)
    vmask = valid.reshape(-1, 1, 1, h * w)  # (N, 1, 1, P)
    count = vmask.sum(dim=3, keepdim=True).clamp(min=1.0)  # (N, 1, 1, 1)
    hist = torch.matmul(vmask, weight) / count  # (N, 3, 1, bins), sums to 1 (0 without valid pixels)
    limit = clip_limit / bins
    excess = F.relu(hist - limit).sum(dim=3, keepdim=True)
    hist = torch.clamp(hist, max=limit) + excess / bins
    ramp = (u - (centres - 0.5)).clamp(0.0, 1.0)  # (N, 3, P, bins)
    out = torch.matmul(ramp, hist.transpose(2, 3))  # (N, 3, P, 1)
    return out.reshape(-1, c, h, w) * valid


def encode_spmf(x: torch.Tensor, mask: torch.Tensor, channels: Sequence[str], num_persons: int = 2,
                num_frames: int = 32, bins: int = 16, clip_limit: float = 2.0, enhance: bool = True,
                joint_order: Sequence[int] | torch.Tensor = SPMF_JOINT_ORDER) -> torch.Tensor:
    """Enhanced-SPMF image of a window: :func:`spmf_image`, then :func:`enhance_contrast`.

    Args:
        x: ``(N*M, C, T, V)`` back-end input (see :func:`spmf_image`); mask: ``(N*M, 1, T, 1)``.
        channels: names of ``x``'s channels. num_persons: M. num_frames: T' (default 32).
        bins, clip_limit: :func:`enhance_contrast`. enhance: False skips it (the plain SPMF).
        joint_order: rows of one person (:data:`SPMF_JOINT_ORDER`).

    Returns:
        ``(N, 3, H, W)`` float32 in [0, 1], ``H = M * len(SPMF_JOINT_ORDER)`` (70), ``W = 2 T'`` (64).
    """
    image, valid = spmf_image(x, mask, channels, num_persons, num_frames, joint_order)
    return enhance_contrast(image, valid, bins, clip_limit) if enhance else image


class SPMFEncoder(nn.Module):
    """:func:`encode_spmf` as a module (no parameters): ``(x, mask) -> (N, 3, H, W)`` image."""

    def __init__(self, channels: Sequence[str], num_persons: int = 2, num_frames: int = 32, bins: int = 16,
                 clip_limit: float = 2.0, enhance: bool = True):
        super().__init__()
        self.channels = tuple(channels)
        self.num_persons, self.num_frames = int(num_persons), int(num_frames)
        self.bins, self.clip_limit, self.enhance = int(bins), float(clip_limit), bool(enhance)
        self.register_buffer("joint_order", torch.tensor(SPMF_JOINT_ORDER, dtype=torch.int64), persistent=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return encode_spmf(x, mask, self.channels, self.num_persons, self.num_frames, self.bins,
                           self.clip_limit, self.enhance, self.joint_order)


#: Default widths of the four conv blocks of :class:`SPMFNet`.
SPMF_WIDTHS: tuple[int, ...] = (16, 32, 64, 128)


class SPMFNet(nn.Module):
    """Pham et al.'s recognition stage (seed 001, Sec. 3.3, Fig. 4): Enhanced-SPMF image -> CNN.

    ``forward(x, mask)``: :class:`SPMFEncoder` (``(N, 3, 70, 64)`` with the defaults), then for each
    width ``w_i`` of ``widths``: Conv2d 3x3 (padding 1, no bias) -> BatchNorm2d -> ReLU, followed by
    MaxPool2d 2x2 (stride 2) after every block but the last (70 x 64 -> 35 x 32 -> 17 x 16 -> 8 x 8);
    then global average pooling over the image, Dropout(``dropout``) and Linear(w_last -> K). With
    the defaults (widths 16, 32, 64, 128) that is about 98 k parameters plus ``129 K``.

    The logits depend only on the ``T'`` frames sampled over the window's skeleton span, so a crop
    of the window that keeps all skeleton frames gives the same logits (``time_stride = 1``).

    Departures from the paper: the paper's CNN was found by ENAS (normal and reduction cells,
    about 2.3 M / 3 M parameters, Sec. 4.4, Fig. 6); architecture search is out of scope, so this
    is a fixed plain 4-block CNN sized for a 2-core CPU. The paper augments with random crops and
    flips of the image (Sec. 4.2); here augmentation is done on the skeletons (``engines.sarde.data``).
    See :func:`spmf_image` and :func:`enhance_contrast` for the encoding's departures.

    Args:
        in_channels: C (must equal ``len(channels)``). num_classes: K. num_persons: M.
        channels: the input channel names (``x``, ``y``[, ``depth``][, ``score``]).
        num_frames: T' (image width is 2 T'). widths: conv block widths. dropout: before the fc.
        bins, clip_limit, enhance: :func:`enhance_contrast`.

    Shape:
        ``x`` ``(N*M, C, T, V)``, ``mask`` ``(N*M, 1, T, 1)`` -> logits ``(N, K)``.
    """

    def __init__(self, in_channels: int, num_classes: int, num_persons: int = 2,
                 channels: Sequence[str] = ("x", "y", "depth"), num_frames: int = 32,
                 widths: Sequence[int] = SPMF_WIDTHS, dropout: float = 0.3, bins: int = 16,
                 clip_limit: float = 2.0, enhance: bool = True):
        super().__init__()
        channels = tuple(channels)
        if in_channels != len(channels) or "x" not in channels or "y" not in channels:
            raise ValueError(f"SPMFNet needs channels with x and y, one name per input channel; "
                             f"got {channels} for {in_channels}")
        if len(widths) < 1:
            raise ValueError("SPMFNet needs at least one conv block width")
        self.encoder = SPMFEncoder(channels, num_persons, num_frames, bins, clip_limit, enhance)
        layers: list[nn.Module] = []
        prev = 3
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(prev, int(w), 3, padding=1, bias=False), nn.BatchNorm2d(int(w)), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            prev = int(w)
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(prev, num_classes)
        self.num_persons = num_persons
        #: crops need not start at any multiple: the image is built from the sampled span
        self.time_stride = 1

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        image = self.encoder(x, mask)  # (N, 3, H, W)
        feat = self.features(image).mean(dim=(2, 3))  # (N, w_last)
        return self.fc(self.dropout(feat))
