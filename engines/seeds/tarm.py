"""TARM back end (seed 004, Siddique et al., "Deep Learning For Human Activity Recognition").

The paper's skeleton branch is Xie et al.'s Memory Attention Network (its ref. [21], "MAN"): a
**Temporal Attention Recalibration Module** (TARM, Sec. 3.1, Fig. 1) per coordinate, then a
**Spatio-Temporal Convolution Module** (STCM, Sec. 3.2), a ResNet-18 that reads the recalibrated
coordinates as an image (Sec. 4.3: "For the STCM ... we chose ResNet-18"). The paper's depth-map
branch (a CNN on depth *images*, Sec. 3.1 / Table 2) has no counterpart here: the fused graph has no
depth images, only the depth front end's per-joint depth, which is fed as one more coordinate.

Pipeline of :class:`TARM` (layout ``(N*M, C, T, V)`` in, persons folded person-major as
everywhere in :mod:`engines.sarde.models`):

1. :func:`skeleton_map` (the input conversion): ``T'`` frames sampled uniformly over the window's
   skeleton span (:func:`engines.seeds.resample.sample_span`), then, per coordinate channel ``c``,
   the matrix ``X_c`` of Sec. 3.1 (``X in R^{T x N}``: frames x joints), with the ``M`` persons'
   joints stacked along the joint axis: ``(N, C, T', M*V)``. Stacking is MAN's reference layout
   (its NTU input is 50 frames x 50 = 2 persons x 25 joints), so one sequence model sees both
   persons of an interaction.
2. A data BatchNorm per (coordinate, joint), shared by the persons (as ST-GCN's ``data_bn``);
   missing joints are set back to 0 after it.
3. One :class:`TemporalAttentionRecalibration` per coordinate channel ("3 different channels of
   RNN", Sec. 3; one per entry of ``channels``): ``X' = X + F_M(X) * F_A(X)`` (Eqs. 1-2).
4. :class:`ResNetImage`: the ``C`` recalibrated maps as a ``C``-channel image, H = ``M*V`` joint
   rows, W = ``T'`` frames; 4 stages of 2 BasicBlocks (ResNet-18, He et al. 2015), global average
   pooling, a linear classifier -> logits ``(N, K)``.

Everything after :func:`sample_span` sees a fixed ``T'``, so a window and any cut of it that keeps
all its skeletons give the same logits (``time_stride = 1``). The GRUs are ``torch.nn.GRU``
(``batch_first``, bidirectional): ONNX ``GRU`` (opset 17), dynamic batch.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from engines.layouts import NUM_JOINTS
from engines.seeds.resample import sample_span

#: ResNet-18's stage widths (He et al. 2015, Table 1) -- the paper's STCM.
RESNET18_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
#: The default, CPU-sized stage widths (same 4 x 2 BasicBlock structure, a quarter of the width).
CPU_WIDTHS: tuple[int, ...] = (16, 32, 64, 128)


def skeleton_map(x: torch.Tensor, frame_mask: torch.Tensor, num_persons: int, num_frames: int
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-coordinate frame x joint matrices of a window (Sec. 3.1 ``O = [X; Y; Z]``), persons stacked.

    Args:
        x: ``(N*M, C, T, V)`` float32, persons folded person-major (row ``n*M + m``); channels as
            the back end's ``channels`` (x, y image-centred frame-height units, depth metres,
            score in [0, 1]); 0 where a joint is missing.
        frame_mask: ``(N*M, 1, T, 1)`` float 0/1, 1 where the person has a skeleton.
        num_persons: ``M``.
        num_frames: ``T'``, frames sampled uniformly over the window's skeleton span.

    Returns:
        ``(maps, joint_mask, row_mask)``:

        * ``maps`` ``(N, C, T', M*V)``: ``maps[n, c, t, m*V + v] = x[n*M + m, c, idx[n, t], v]``
          with ``idx`` the sampled frames (:func:`engines.seeds.resample.span_indices`);
        * ``joint_mask`` ``(N, 1, T', M*V)`` float 0/1: 1 where the joint has any non-zero channel;
        * ``row_mask`` ``(N, 1, T', M*V)`` float 0/1: the person's frame mask, repeated over its joints.
    """
    b, c, _, v = x.shape
    n = b // num_persons
    xs, ms = sample_span(x, frame_mask, num_persons, num_frames)  # (N*M, C, T', V), (N*M, 1, T', 1)
    maps = xs.reshape(n, num_persons, c, num_frames, v).permute(0, 2, 3, 1, 4)  # (N, C, T', M, V)
    maps = maps.reshape(n, c, num_frames, num_persons * v)
    joint_mask = (maps.abs().amax(dim=1, keepdim=True) > 0).to(x.dtype)
    rows = ms.reshape(n, num_persons, 1, num_frames, 1).expand(n, num_persons, 1, num_frames, v)
    row_mask = rows.permute(0, 2, 3, 1, 4).reshape(n, 1, num_frames, num_persons * v)
    return maps, joint_mask, row_mask


class TemporalAttentionRecalibration(nn.Module):
    """TARM for one coordinate (Sec. 3.1, Eqs. 1-2; MAN's TARM): ``X' = X + F_M(X) * F_A(X)``.

    ``X`` is one coordinate's ``(T', R)`` matrix (frames x joint rows, ``R = M*V``), a sequence
    over time whose feature vector is the coordinate of all joints in that frame.

    * Embedding ``E = X W_e + b_e`` (``R -> hidden``), MAN's dense layer in front of its GRU
      (the seed paper does not say how the joint vector enters the GRU).
    * ``F_M`` (modulation / memory branch, "outputs of BiGRU"): a bidirectional GRU over the ``T'``
      frames of ``E``, its two directions summed (MAN's ``merge_mode='sum'``), projected back to the
      ``R`` joint rows by a bias-free linear map, so ``F_M(X)`` has ``X``'s shape ``(T', R)``
      (Eq. 2: "both F_M(X) and F_A(X) are ... in R^{T x N}").
    * ``F_A`` (attention branch, "Sigmoid function of attentional module"): a frame-wise temporal
      attention in (0, 1): ``s_t`` = mean of ``E``'s features in frame ``t`` (squeeze), then
      ``a = sigmoid(W_2 relu(W_1 s))`` with ``W_1: T' -> max(1, T' // reduction)``,
      ``W_2: -> T'`` (excitation over time, MAN's attention); ``F_A(X)`` is ``a`` broadcast over
      the ``R`` rows (shape ``(T', 1)``; the paper's ``T x N`` is the broadcast shape).
    * ``X' = X + F_M(X) * F_A(X)``; with ``row_mask`` given, the recalibration term is zeroed on the
      rows of absent persons / frames (departure, see :class:`TARM`).

    MAN multiplies the attention in the GRU's hidden space before its output dense layer; with a
    frame-wise attention and a bias-free projection that is the same function.

    Args:
        num_rows: ``R`` (``M * V``).
        num_frames: ``T'`` (the attention's fully connected layers act over time, so ``T'`` is fixed).
        hidden: GRU width (MAN: 64).
        reduction: the attention's squeeze ratio over time (MAN: 16).
        dropout: dropout on the embedding (MAN: 0.5 on the GRU's inputs and recurrent state).

    Shape:
        ``x`` ``(N, T', R)`` float32 -> ``(N, T', R)``.
    """

    def __init__(self, num_rows: int, num_frames: int, hidden: int = 32, reduction: int = 16, dropout: float = 0.0):
        super().__init__()
        self.hidden = hidden
        self.embed = nn.Linear(num_rows, hidden)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.out = nn.Linear(hidden, num_rows, bias=False)
        squeeze = max(1, num_frames // reduction)
        self.att1 = nn.Linear(num_frames, squeeze)
        self.att2 = nn.Linear(squeeze, num_frames)

    def embedding(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, T', R)`` -> ``E`` ``(N, T', hidden)``."""
        return self.drop(self.embed(x))

    def modulation(self, e: torch.Tensor) -> torch.Tensor:
        """``F_M``: BiGRU over time, directions summed, projected to the rows: ``(N, T', R)``."""
        h, _ = self.gru(e)  # (N, T', 2*hidden): forward | backward
        return self.out(h[:, :, : self.hidden] + h[:, :, self.hidden:])

    def attention(self, e: torch.Tensor) -> torch.Tensor:
        """``F_A``: frame-wise sigmoid attention, ``(N, T', 1)`` in (0, 1)."""
        s = e.mean(dim=2)  # (N, T')
        return torch.sigmoid(self.att2(F.relu(self.att1(s)))).unsqueeze(2)

    def forward(self, x: torch.Tensor, row_mask: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embedding(x)
        recal = self.modulation(e) * self.attention(e)  # F(X), Eq. 2
        if row_mask is not None:
            recal = recal * row_mask
        return x + recal  # Eq. 1


class BasicBlock(nn.Module):
    """ResNet BasicBlock (He et al. 2015): 3x3 conv -> BN -> ReLU -> 3x3 conv -> BN, plus the
    shortcut (identity, or 1x1 conv + BN when the width or stride changes), then ReLU.

    Shape: ``(B, C_in, H, W)`` -> ``(B, C_out, ceil(H / stride), ceil(W / stride))``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                          nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x))


class ResNetImage(nn.Module):
    """STCM (Sec. 3.2): a ResNet-18-style 2D CNN over the recalibrated coordinate image.

    Stem: 3x3 conv (stride ``stem_stride``) + BN + ReLU, no max pooling; then one stage per entry of
    ``widths`` with ``blocks[i]`` :class:`BasicBlock` s, the first stage at stride 1 and the others
    at stride 2; global average pooling; dropout; a linear classifier. ``widths = (64, 128, 256,
    512)`` and ``blocks = (2, 2, 2, 2)`` is ResNet-18's body (:data:`RESNET18_WIDTHS`).

    Shape:
        ``(N, C, H, W)`` float32 -> logits ``(N, K)``.
    """

    def __init__(self, in_channels: int, num_classes: int, widths: Sequence[int] = CPU_WIDTHS,
                 blocks: Sequence[int] = (2, 2, 2, 2), stem_stride: int = 1, dropout: float = 0.0):
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths {tuple(widths)} and blocks {tuple(blocks)} must be non-empty and the same length")
        w0 = int(widths[0])
        self.stem = nn.Sequential(nn.Conv2d(in_channels, w0, 3, stem_stride, 1, bias=False),
                                  nn.BatchNorm2d(w0), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        prev = w0
        for i, (w, nb) in enumerate(zip(widths, blocks)):
            for j in range(int(nb)):
                layers.append(BasicBlock(prev, int(w), 2 if (i > 0 and j == 0) else 1))
                prev = int(w)
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(prev, num_classes)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features ``(N, widths[-1])``."""
        return self.body(self.stem(image)).mean(dim=(2, 3))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.features(image)))


class TARM(nn.Module):
    """Seed 004 back end: per-coordinate TARM (BiGRU + residual attention) + ResNet-18 STCM.

    Args:
        in_channels: ``C`` (2-4).
        num_classes: ``K``.
        num_persons: ``M``.
        channels: names of the input channels in order (``x``, ``y``[, ``depth``][, ``score``]); every
            channel gets its own TARM (the paper: one per coordinate x, y, z; its "4th TARM" is for
            depth data).
        num_frames: ``T'`` frames sampled over the skeleton span (default 32; the paper scales every
            sample to 50 x 50, Sec. 4.3).
        gru_hidden: GRU width per TARM (MAN: 64).
        attention_reduction: squeeze ratio of the temporal attention (MAN: 16).
        widths: ResNet stage widths; default :data:`CPU_WIDTHS` (16, 32, 64, 128), a quarter of
            ResNet-18's :data:`RESNET18_WIDTHS` (64, 128, 256, 512), same 4 x 2 BasicBlocks.
        blocks: BasicBlocks per stage (ResNet-18: 2, 2, 2, 2).
        stem_stride: stride of the 3x3 stem convolution (1: the 36 x 32 image is small already).
        dropout: before the classifier; ``tarm_dropout``: on each TARM's embedding.
        mask_recalibration: zero the recalibration term ``F_M * F_A`` where the person has no
            skeleton in that frame (absent second person, gaps), so those rows of the image stay 0
            as in the input.
        num_joints: ``V``.

    Shape:
        ``forward(x, mask)``: ``x`` ``(N*M, C, T, V)`` float32 (see :func:`skeleton_map`), ``mask``
        ``(N*M, 1, T, 1)`` float 0/1 -> logits ``(N, K)`` (not softmax).

    Departures from the paper (and why):

    * Input: 2D image coordinates + the depth front end's per-joint depth (+ score) instead of
      Kinect 3D coordinates; no depth-image CNN branch (the daemon has no depth images).
    * Time axis: ``T'`` frames sampled over the skeleton span (the daemon's 150-frame windows are
      mostly padding) instead of scaling each sample to 50 frames.
    * Two persons: stacked along the joint axis (H = ``M*V`` = 36 rows), one sequence per coordinate
      holds both (MAN's layout; the seed paper's UTD-MHAD has one person).
    * Data BatchNorm per (coordinate, joint) before the TARMs (depth is in metres, ~1-6 m; the paper
      feeds raw coordinates); missing joints stay 0.
    * The recalibration term is masked on absent person-frames (``mask_recalibration``); the
      paper/MAN add it everywhere.
    * F_A is frame-wise (one weight per frame, broadcast over joints) as in MAN's reference code;
      the paper only says F_A is a sigmoid and has shape T x N.
    * CNN widths 16/32/64/128 by default (ResNet-18's 64/128/256/512 is ``widths``), a 3x3 stride-1
      stem without max pooling instead of ResNet-18's 7x7/2 + max-pool/2 (a 36 x 32 image would
      shrink 4x before the first block; MAN uses a 5x5/2 stem without pooling on 50 x 50).
    * GRU without MAN's input / recurrent dropout 0.5 (torch's GRU has none; ``tarm_dropout``
      applies to the embedding); Adam lr 0.01 of Sec. 4.3 is the recipe's business.
    """

    def __init__(self, in_channels: int, num_classes: int, num_persons: int = 2,
                 channels: Sequence[str] = ("x", "y", "depth"), num_frames: int = 32, gru_hidden: int = 32,
                 attention_reduction: int = 16, widths: Sequence[int] = CPU_WIDTHS,
                 blocks: Sequence[int] = (2, 2, 2, 2), stem_stride: int = 1, dropout: float = 0.0,
                 tarm_dropout: float = 0.0, mask_recalibration: bool = True, num_joints: int = NUM_JOINTS):
        super().__init__()
        if len(channels) != in_channels:
            raise ValueError(f"channels {tuple(channels)} do not match in_channels {in_channels}")
        if num_frames < 2:
            raise ValueError(f"num_frames must be >= 2, got {num_frames}")
        self.channels = tuple(channels)
        self.num_persons = num_persons
        self.num_frames = int(num_frames)
        self.mask_recalibration = bool(mask_recalibration)
        rows = num_persons * num_joints
        self.data_bn = nn.BatchNorm1d(in_channels * num_joints)
        self.tarms = nn.ModuleList([
            TemporalAttentionRecalibration(rows, self.num_frames, gru_hidden, attention_reduction, tarm_dropout)
            for _ in range(in_channels)])
        self.cnn = ResNetImage(in_channels, num_classes, tuple(int(w) for w in widths),
                               tuple(int(b) for b in blocks), stem_stride, dropout)
        #: crops may start anywhere (the sampled frames do not depend on the padding)
        self.time_stride = 1

    def normalise(self, maps: torch.Tensor, joint_mask: torch.Tensor) -> torch.Tensor:
        """Data BatchNorm per (coordinate, joint), shared by persons; missing joints back to 0.

        ``maps`` ``(N, C, T', M*V)`` -> same shape.
        """
        n, c, t, r = maps.shape
        v = r // self.num_persons
        y = maps.reshape(n, c, t, self.num_persons, v).permute(0, 1, 4, 2, 3).reshape(n, c * v, t * self.num_persons)
        y = self.data_bn(y).reshape(n, c, v, t, self.num_persons).permute(0, 1, 3, 4, 2).reshape(n, c, t, r)
        return y * joint_mask

    def recalibrate(self, maps: torch.Tensor, row_mask: torch.Tensor) -> torch.Tensor:
        """One TARM per channel: ``(N, C, T', M*V)`` -> ``X'`` of the same shape."""
        rm = row_mask[:, 0] if self.mask_recalibration else None  # (N, T', M*V)
        return torch.stack([tarm(maps[:, i], rm) for i, tarm in enumerate(self.tarms)], dim=1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        maps, joint_mask, row_mask = skeleton_map(x, mask, self.num_persons, self.num_frames)
        recal = self.recalibrate(self.normalise(maps, joint_mask), row_mask)  # (N, C, T', M*V)
        return self.cnn(recal.transpose(2, 3))  # image (N, C, H = M*V, W = T')
