"""SARDE torch modules: per-frame depth GCN (Sec. 3.1), ST-GCN recogniser (Sec. 3.2), fused net.

Layout: the fused model takes ST-GCN's ``(N, C, T, V, M)``; inside, persons are folded into the
batch, ``(N*M, C, T, V)``, in exactly one place (:meth:`SardeNet.logits`).

Graph convolution is written as a broadcast matrix multiply followed by a 1x1 convolution
(``Σ_k W_k X A_k``, Eq. 2), not ``einsum``: it exports to plain ONNX ``MatMul`` + ``Conv`` and runs
about 40 % faster in onnxruntime (``FIELD-NOTES.md``).
"""
from __future__ import annotations

from typing import Callable, Protocol, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from engines.layouts import COCO18_CENTER, NUM_JOINTS
from engines.sarde.graph import spatial_adjacency


class GraphConv(nn.Module):
    """Spatial graph convolution ``X_out = Σ_k W_k X Â_k`` (SARDE Eq. 2, ST-GCN spatial partitions).

    Args:
        in_channels, out_channels: feature widths.
        adjacency: ``(K, V, V)`` normalised partitions from :func:`spatial_adjacency`.
        edge_importance: learn a multiplicative mask on ``Â`` (ST-GCN's edge importance weighting).

    Shape:
        input ``(B, C_in, T, V)`` -> output ``(B, C_out, T, V)``.
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: torch.Tensor, edge_importance: bool = True):
        super().__init__()
        k, v, _ = adjacency.shape
        # (V_in, K*V_out): all partitions in one right operand, so the product is one large GEMM
        self.register_buffer("adjacency", adjacency.permute(1, 0, 2).reshape(v, k * v).clone())
        self.importance = nn.Parameter(torch.ones_like(self.adjacency)) if edge_importance else None
        self.conv = nn.Conv2d(in_channels * k, out_channels, kernel_size=1)  # input channel c*K + k
        self.num_subsets = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.adjacency if self.importance is None else self.adjacency * self.importance
        b, c, t, v = x.shape
        y = torch.matmul(x, a)  # (B, C, T, V) @ (V, K*V) -> (B, C, T, K*V)
        y = y.reshape(b, c, t, self.num_subsets, v).transpose(2, 3)  # (B, C, K, T, V)
        return self.conv(y.reshape(b, c * self.num_subsets, t, v))


#: Channels of the paper's series depth network (Table 1).
DEPTH_CHANNELS: tuple[int, ...] = (64, 64, 64, 128, 128, 128, 128, 256, 256, 256)


class DepthGCN(nn.Module):
    """SARDE Series depth network (Sec. 3.1, Fig. 3, Table 1): per-frame GCN blocks + MLP head.

    Ten GCN blocks (kernel 1x1 in time, i.e. every frame on its own) with BatchNorm + ReLU and
    DenseNet-style additive skips: with ``skip = s >= 1`` block ``l`` also receives the output of
    block ``l - 1 - s`` (1x1-projected when widths differ); ``s = 0`` is a plain series. A two-layer
    MLP per joint regresses depth through a softplus, so depth is positive, in metres.

    Args:
        channels: block widths (paper: :data:`DEPTH_CHANNELS`).
        width: multiplier on ``channels`` (the daemon's default model is smaller).
        skip: skip distance hyper-parameter (paper: 1).
        in_channels: 2 (x, y).
        init_depth: depth in metres the head outputs at initialisation.

    Shape:
        input ``(B, 2, T, V)`` normalised (x, y) (``engines.skeleton``), ``B = N*M``;
        output ``(B, T, V)`` depth in metres (> 0).
    """

    def __init__(self, channels: Sequence[int] = DEPTH_CHANNELS, width: float = 1.0, skip: int = 1,
                 in_channels: int = 2, init_depth: float = 2.5, adjacency: torch.Tensor | None = None):
        super().__init__()
        a = torch.as_tensor(spatial_adjacency()) if adjacency is None else adjacency
        widths = [max(4, int(round(c * width))) for c in channels]
        self.skip = skip
        self.blocks = nn.ModuleList()
        self.norms = nn.ModuleList()
        prev = in_channels
        for w in widths:
            self.blocks.append(GraphConv(prev, w, a))
            self.norms.append(nn.BatchNorm2d(w))
            prev = w
        self.projections = nn.ModuleDict()
        if skip > 0:
            for i in range(len(widths)):
                j = i - 1 - skip  # source block of the skip into block i's output
                if j >= 0 and widths[j] != widths[i]:
                    self.projections[str(i)] = nn.Conv2d(widths[j], widths[i], kernel_size=1, bias=False)
        hidden = max(4, prev // 2)
        self.head = nn.Sequential(nn.Conv2d(prev, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))
        with torch.no_grad():  # softplus^-1(init_depth): start near typical camera distances
            self.head[-1].bias.fill_(float(torch.log(torch.expm1(torch.tensor(init_depth)))))

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        h = xy
        for i, (block, norm) in enumerate(zip(self.blocks, self.norms)):
            h = F.relu(norm(block(h)))
            j = i - 1 - self.skip
            if self.skip > 0 and j >= 0:
                src = outs[j]
                h = h + (self.projections[str(i)](src) if str(i) in self.projections else src)
            outs.append(h)
        return F.softplus(self.head(h)).squeeze(1)  # (B, 1, T, V) -> (B, T, V)


class InceptionDepthGCN(nn.Module):
    """SARDE Inception depth network (Sec. 3.1, Fig. 4, Table 1): per-frame inception GCN blocks + MLP head.

    Each block has four parallel branches on the same input, concatenated (Table 1):
    (a) GCN in->16 -> GCN 16->24; (b) GCN in->16 -> GCN 16->24 -> GCN 24->24; (c) GCN in->24;
    (d) graph pooling (mean over the 1-hop neighbourhood, ``X Σ_k Â_k``) -> 1x1 conv in->24.
    Every GCN / conv is followed by BatchNorm + ReLU. Blocks output ``4 * 24 = 96`` channels (times
    ``width``). Skips as in :class:`DepthGCN`: with ``skip = s >= 1`` block ``l`` adds the output of
    block ``l - 1 - s``. Table 1 is ambiguous about branch (b)'s first layer ("GCN 16->24 -> GCN
    24->24"); it is read as the deeper sibling of (a). All operations are MatMul/Conv (ONNX friendly).

    Args:
        num_blocks: inception blocks (Table 4: 3).
        width: multiplier on the branch widths 16 / 24.
        skip, in_channels, init_depth: as :class:`DepthGCN`.

    Shape:
        input ``(B, 2, T, V)`` normalised (x, y); output ``(B, T, V)`` depth in metres (> 0).
    """

    def __init__(self, num_blocks: int = 3, width: float = 1.0, skip: int = 1, in_channels: int = 2,
                 init_depth: float = 2.5, adjacency: torch.Tensor | None = None):
        super().__init__()
        a = torch.as_tensor(spatial_adjacency()) if adjacency is None else adjacency
        c16, c24 = max(4, int(round(16 * width))), max(4, int(round(24 * width)))
        self.register_buffer("pool", a.sum(0).clone())  # (V, V) Λ^-1/2 A Λ^-1/2, X @ pool = neighbour mean
        self.skip = skip

        def gcn(cin, cout):
            return nn.Sequential(GraphConv(cin, cout, a), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

        self.blocks = nn.ModuleList()
        prev = in_channels
        for _ in range(num_blocks):
            self.blocks.append(nn.ModuleDict({
                "a": nn.Sequential(gcn(prev, c16), gcn(c16, c24)),
                "b": nn.Sequential(gcn(prev, c16), gcn(c16, c24), gcn(c24, c24)),
                "c": gcn(prev, c24),
                "d": nn.Sequential(nn.Conv2d(prev, c24, 1), nn.BatchNorm2d(c24), nn.ReLU(inplace=True)),
            }))
            prev = 4 * c24
        hidden = max(4, prev // 2)
        self.head = nn.Sequential(nn.Conv2d(prev, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, 1))
        with torch.no_grad():
            self.head[-1].bias.fill_(float(torch.log(torch.expm1(torch.tensor(init_depth)))))

    def forward(self, xy: torch.Tensor) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        h = xy
        for i, block in enumerate(self.blocks):
            pooled = torch.matmul(h, self.pool)  # (B, C, T, V) graph mean pooling
            h = torch.cat([block["a"](h), block["b"](h), block["c"](h), block["d"](pooled)], dim=1)
            j = i - 1 - self.skip
            if self.skip > 0 and j >= 0:
                h = h + outs[j]
            outs.append(h)
        return F.softplus(self.head(h)).squeeze(1)  # (B, T, V)


class STGCNBlock(nn.Module):
    """ST-GCN unit (Yan et al. 2018): spatial GCN -> BN -> ReLU -> temporal conv -> BN -> dropout,
    plus a residual, then ReLU; features of frames without a skeleton are zeroed.

    Shape:
        input ``(B, C_in, T, V)`` -> output ``(B, C_out, ceil(T / stride), V)``.
    """

    def __init__(self, in_channels: int, out_channels: int, adjacency: torch.Tensor, stride: int = 1,
                 kernel: int = 9, dropout: float = 0.0, residual: bool = True):
        super().__init__()
        self.gcn = GraphConv(in_channels, out_channels, adjacency)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.tcn = nn.Sequential(
            nn.Conv2d(out_channels, out_channels, (kernel, 1), (stride, 1), ((kernel - 1) // 2, 0)),
            nn.BatchNorm2d(out_channels), nn.Dropout(dropout),
        )
        if not residual:
            self.residual = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, (stride, 1)),
                                          nn.BatchNorm2d(out_channels))
        self.stride = stride

    def forward(self, x: torch.Tensor, mask: torch.Tensor, mask_out: torch.Tensor) -> torch.Tensor:
        """``mask`` ``(B, 1, T, 1)`` and ``mask_out`` ``(B, 1, T', 1)``: 1 where a skeleton is; the
        temporal convolution only sees features of those frames (zeros elsewhere)."""
        y = self.tcn(F.relu(self.bn1(self.gcn(x))) * mask)
        if self.residual is not None:
            y = y + self.residual(x)
        return F.relu(y) * mask_out


#: ``(out_channels, temporal stride)`` of the default recogniser blocks (reduced from ST-GCN's 10).
STGCN_BLOCKS: tuple[tuple[int, int], ...] = ((32, 1), (32, 2), (64, 1), (64, 2), (64, 1), (128, 2))


class STGCN(nn.Module):
    """ST-GCN recogniser (SARDE Sec. 3.2, Fig. 5; Yan et al. 2018).

    Data BatchNorm over ``(V, C)`` (shared by persons), stacked :class:`STGCNBlock` s, global pooling
    over ``T``, ``V`` and ``M``, linear head. Pooling over ``T`` and ``M`` is a mean over the
    (frame, person) positions that hold a skeleton (``mask``), and every block's output is zeroed
    outside them (as a partial convolution), so logits do not depend on how much of the
    150-frame window is zero padding or on an absent second person: a window cut to any span that
    holds all its skeletons and starts at a multiple of :attr:`time_stride` gives the same logits
    (training uses this to skip empty frames, ``engines.sarde.data.crop_batch``).

    Args:
        in_channels: 3 (x, y, depth) or 4 with the detector score.
        num_classes: K.
        blocks: ``(out_channels, stride)`` per block; the first block has no residual.
        dropout: dropout inside blocks.

    Shape:
        ``x`` ``(N*M, C, T, V)``, ``mask`` ``(N*M, 1, T, 1)`` float 0/1 -> logits ``(N, K)``.
    """

    def __init__(self, in_channels: int, num_classes: int, blocks: Sequence[Sequence[int]] = STGCN_BLOCKS,
                 num_persons: int = 2, dropout: float = 0.0, kernel: int = 9, num_joints: int = NUM_JOINTS,
                 adjacency: torch.Tensor | None = None):
        super().__init__()
        a = torch.as_tensor(spatial_adjacency()) if adjacency is None else adjacency
        self.num_persons = num_persons
        self.data_bn = nn.BatchNorm1d(in_channels * num_joints)
        layers = []
        prev = in_channels
        for i, (ch, stride) in enumerate(blocks):
            layers.append(STGCNBlock(prev, int(ch), a, int(stride), kernel, dropout, residual=i > 0))
            prev = int(ch)
        self.blocks = nn.ModuleList(layers)
        self.fc = nn.Linear(prev, num_classes)
        #: Product of the temporal strides: crops must start at multiples of it.
        self.time_stride = 1
        for _, stride in blocks:
            self.time_stride *= int(stride)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, t, v = x.shape
        x = self.data_bn(x.permute(0, 3, 1, 2).reshape(b, v * c, t))  # (B, V*C, T)
        x = x.reshape(b, v, c, t).permute(0, 2, 3, 1) * mask  # (B, C, T, V)
        for block in self.blocks:
            mask_out = mask
            if block.stride > 1:
                mask_out = F.max_pool2d(mask, (block.stride, 1), (block.stride, 1), ceil_mode=True)
            x = block(x, mask, mask_out)
            mask = mask_out
        feat = x.mean(dim=3)  # (B, C', T')
        m = mask[:, :, :, 0]  # (B, 1, T')
        n = b // self.num_persons
        num = (feat * m).sum(dim=2).reshape(n, self.num_persons, -1).sum(dim=1)  # (N, C')
        den = m.sum(dim=2).reshape(n, self.num_persons).sum(dim=1, keepdim=True).clamp(min=1.0)  # (N, 1)
        return self.fc(num / den)


class RecognizerFactory(Protocol):
    """Builds a recogniser back end for :class:`SardeNet` (ST-GCN, or a seed model of ``engines.seeds``).

    Called as ``factory(in_channels, num_classes, num_persons, channels)``; the module it returns
    maps ``x`` ``(N*M, C, T, V)`` (channels named by ``channels``: ``x``, ``y`` in the window's
    normalised frame coordinates, ``depth`` in metres, ``score`` in [0, 1]; 0 where a joint is
    missing) and ``mask`` ``(N*M, 1, T, 1)`` (1 where the person has a skeleton) to logits
    ``(N, K)``, and has ``time_stride``: training crops windows to their skeletons at multiples of
    it, and the logits must not change under such a crop.
    """

    def __call__(self, in_channels: int, num_classes: int, num_persons: int, channels: tuple[str, ...]) -> nn.Module: ...


class SardeNet(nn.Module):
    """Fused SARDE graph: depth GCN -> (x, y, depth[, score]) -> ST-GCN (Sec. 3, Fig. 5).

    Args:
        num_classes: K.
        depth_width, depth_channels, skip: depth network settings (:class:`DepthGCN`;
            ``depth_width`` and ``skip`` also for :class:`InceptionDepthGCN`).
        blocks, dropout: :class:`STGCN` settings.
        use_score: also feed the detector score channel to the recogniser.
        num_persons: M.
        depth_net: ``"series"`` (:class:`DepthGCN`, the paper's better variant) or ``"inception"``.
        inception_blocks: blocks of the inception variant (Table 4: 3).
        depth_mode: ``"estimated"`` (SARDE), ``"none"`` (2D-only ST-GCN baseline on (x, y)) or
            ``"oracle"`` (ST-GCN on (x, y, ground-truth depth): the 3D upper bound of the ablation;
            the depth is passed to :meth:`logits` as ``depth_in``). Only ``"estimated"`` is a
            deployable daemon model.
        depth_input: what the recogniser's depth channel holds: ``"absolute"`` camera-space z
            (the paper) or ``"root_relative"`` z minus the neck's z in the same frame (0 where
            the neck or the joint is missing); the depth output is absolute either way.
        recognizer_input: the frame of the recogniser's (x, y): ``"frame"`` as given (image-centred,
            frame-height units: SARDE), or ``"person"``: the window re-centred on the mean of its
            visible joints (all persons, all frames) and divided by the mean height of its visible
            person-frames (joint y extent, floored at 0.02): the same motion then looks the same
            whether the people stand 60 or 600 px tall, near the image centre or its corner (the
            role of pyskl's / PoseC3D's subject-centred crop). Computed inside the graph, so the
            daemon's windows and the exported model need no change. The depth net always sees the
            frame coordinates (metric depth needs the apparent size).
        recognizer: a :class:`RecognizerFactory` for another back end than ST-GCN (``blocks`` and
            ``dropout`` then do not apply; ``engines.sarde.architectures`` builds them from a recipe).
        depth_factory: builds another depth network than ``depth_net`` (e.g. Pham et al.'s lifter);
            it maps ``(B, 2, T, V)`` to ``(B, T, V)`` metres like :class:`DepthGCN`.

    Shape:
        input ``(N, 3, T, V, M)``: channels (x, y, score) from ``engines.skeleton`` (score 0 =
        joint missing). :meth:`forward` returns ``scores`` ``(N, K)`` softmax probabilities and
        ``depth`` ``(N, T, V, M)`` metres (0 where the joint is missing; all 0 for ``"none"``);
        :meth:`logits` returns ``(logits (N, K), depth)`` for training.
    """

    def __init__(self, num_classes: int, depth_width: float = 1.0, depth_channels: Sequence[int] = DEPTH_CHANNELS,
                 skip: int = 1, blocks: Sequence[Sequence[int]] = STGCN_BLOCKS, dropout: float = 0.0,
                 use_score: bool = False, num_persons: int = 2, depth_net: str = "series",
                 inception_blocks: int = 3, depth_mode: str = "estimated", depth_input: str = "absolute",
                 recognizer_input: str = "frame", recognizer: RecognizerFactory | None = None,
                 depth_factory: Callable[[], nn.Module] | None = None):
        super().__init__()
        if recognizer_input not in ("frame", "person"):
            raise ValueError(f"recognizer_input must be frame or person, got {recognizer_input!r}")
        self.recognizer_input = recognizer_input
        if depth_input not in ("absolute", "root_relative"):
            raise ValueError(f"depth_input must be absolute or root_relative, got {depth_input!r}")
        self.depth_input = depth_input
        if depth_mode not in ("estimated", "none", "oracle"):
            raise ValueError(f"depth_mode must be estimated, none or oracle, got {depth_mode!r}")
        if depth_net not in ("series", "inception"):
            raise ValueError(f"depth_net must be series or inception, got {depth_net!r}")
        a = torch.as_tensor(spatial_adjacency())
        self.use_score = use_score
        self.num_persons = num_persons
        self.depth_mode = depth_mode
        self.depth_net: nn.Module | None = None
        if depth_mode == "estimated":
            if depth_factory is not None:
                self.depth_net = depth_factory()
            elif depth_net == "series":
                self.depth_net = DepthGCN(depth_channels, depth_width, skip, adjacency=a)
            else:
                self.depth_net = InceptionDepthGCN(inception_blocks, depth_width, skip, adjacency=a)
        channels = ("x", "y") + (() if depth_mode == "none" else ("depth",)) + (("score",) if use_score else ())
        #: names of the recogniser's input channels, in order (``x``, ``y``[, ``depth``][, ``score``])
        self.channels: tuple[str, ...] = channels
        self.num_classes = num_classes
        if recognizer is None:
            self.recognizer = STGCN(len(channels), num_classes, blocks, num_persons, dropout, adjacency=a)
        else:
            self.recognizer = recognizer(len(channels), num_classes, num_persons, channels)

    @property
    def estimates_depth(self) -> bool:
        """True when the model has a depth network (trained with ``L_I``)."""
        return self.depth_net is not None

    def logits(self, x: torch.Tensor, depth_in: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(N, 3, T, V, M)``; ``depth_in`` ``(N, T, V, M)`` metres, required for ``"oracle"``."""
        n, c, t, v, m = x.shape
        x = x.permute(0, 4, 1, 2, 3).reshape(n * m, c, t, v)  # (N, C, T, V, M) -> (N*M, C, T, V)
        score = x[:, 2:3]
        joint_mask = (score > 0).to(x.dtype)  # (N*M, 1, T, V)
        xy = x[:, :2] * joint_mask  # missing joints are (0, 0) whatever the input holds there
        frame_mask = joint_mask.amax(dim=3, keepdim=True)  # (N*M, 1, T, 1)
        if self.depth_mode == "oracle":
            if depth_in is None:
                raise ValueError("depth_mode 'oracle' needs depth_in (ground-truth depth)")
            depth = depth_in.permute(0, 3, 1, 2).reshape(n * m, t, v)  # (N, T, V, M) -> (N*M, T, V)
        elif self.depth_mode == "none":
            depth = xy.new_zeros(n * m, t, v)
        elif self.training:
            depth = self._depth_of_valid_frames(xy, frame_mask)
        else:
            depth = self.depth_net(xy)  # (N*M, T, V)
        depth = depth.unsqueeze(1) * joint_mask  # (N*M, 1, T, V), 0 where missing
        feature = depth
        if self.depth_input == "root_relative":
            neck = depth[:, :, :, COCO18_CENTER:COCO18_CENTER + 1]  # (N*M, 1, T, 1)
            feature = (depth - neck) * joint_mask * (neck > 0).to(x.dtype)
        rec_xy = self._person_frame(xy, joint_mask, n, m) if self.recognizer_input == "person" else xy
        parts = [rec_xy] if self.depth_mode == "none" else [rec_xy, feature]
        if self.use_score:
            parts.append(score)
        logits = self.recognizer(torch.cat(parts, dim=1), frame_mask)
        depth_out = depth.reshape(n, m, t, v).permute(0, 2, 3, 1)  # (N, T, V, M)
        return logits, depth_out

    @staticmethod
    def _person_frame(xy: torch.Tensor, joint_mask: torch.Tensor, n: int, m: int) -> torch.Tensor:
        """``(N*M, 2, T, V)`` -> the same joints centred and scaled per window (``recognizer_input``)."""
        _, c, t, v = xy.shape
        w_xy = xy.reshape(n, m, c, t, v)
        w_mask = joint_mask.reshape(n, m, 1, t, v)
        count = w_mask.sum(dim=(1, 3, 4), keepdim=True).clamp(min=1.0)  # (N, 1, 1, 1, 1)
        centre = (w_xy * w_mask).sum(dim=(1, 3, 4), keepdim=True) / count  # (N, 1, 2, 1, 1)
        y = w_xy[:, :, 1:2]
        big = torch.full_like(y, 1e4)
        top = torch.where(w_mask > 0, y, big).amin(dim=4, keepdim=True)  # (N, M, 1, T, 1)
        bottom = torch.where(w_mask > 0, y, -big).amax(dim=4, keepdim=True)
        present = (w_mask.amax(dim=4, keepdim=True) > 0).to(xy.dtype)  # person-frames with a joint
        height = (bottom - top).clamp(min=0.0) * present
        scale = (height.sum(dim=(1, 3), keepdim=True) / present.sum(dim=(1, 3), keepdim=True).clamp(min=1.0)).clamp(min=0.02)
        out = (w_xy - centre) / scale * w_mask  # (N, M, 2, T, V)
        return out.reshape(n * m, c, t, v)

    def _depth_of_valid_frames(self, xy: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Training path: the per-frame depth net runs on frames holding a skeleton only (same
        values as the full path, and BatchNorm statistics free of padding frames)."""
        b, c, t, v = xy.shape
        rows = xy.permute(0, 2, 1, 3).reshape(b * t, c, 1, v)  # (B*T, 2, 1, V)
        keep = frame_mask.reshape(b * t) > 0
        depth = xy.new_zeros(b * t, v)
        if bool(keep.any()):
            depth[keep] = self.depth_net(rows[keep])[:, 0]  # (R, 1, V) -> (R, V)
        return depth.reshape(b, t, v)

    def forward(self, x: torch.Tensor, depth_in: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        logits, depth = self.logits(x, depth_in)
        return torch.softmax(logits, dim=1), depth
