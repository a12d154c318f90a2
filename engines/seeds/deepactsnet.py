"""DeepActsNet (seed 003; Asif et al., AAAI 2021) as a recogniser back end of the fused SARDE graph.

The paper encodes a clip as "Deep Action Stamps" (DeepActs, Sec. "The Proposed Deep Action Stamps"):
one ``C x W x H`` map per modality, ``W`` = time, ``H`` = joint, ``C`` = feature channels, and
classifies it with DeepActsNet (Sec. "The Proposed Network", Fig. 3): per modality a convolutional
branch (EfficientNet / ResNet layers + ``fc``) over the stamp seen as an image AND a graph branch
(ST-GCN-style spatial graph convolutions, Eq. 3, with a learnable edge mask ``M_k``, global average
pooling and ``fc``) over the same data as a ``C x T x N`` graph sequence. The class scores of all
branches are summed before the softmax.

Here:

* :func:`action_stamps` builds the stamps inside the graph (so training, evaluation and the ONNX
  daemon share one conversion) from the back end's input, after resampling the window's skeleton
  span to ``T'`` frames (:func:`engines.seeds.resample.sample_span`). Modalities
  (:data:`MODALITY_BUILDERS`): ``joints`` (body joints: the coordinate channels x, y[, depth]),
  ``bones`` (joint minus its parent toward the neck, :data:`COCO18_PARENTS`) and ``motion`` (the
  difference of consecutive sampled frames).
* :class:`StampCNN` is the convolutional branch, :class:`engines.sarde.models.STGCN` (the project's
  ST-GCN, small blocks) the graph branch; :class:`DeepActsNet` holds one of each per modality and
  sums their logits.

Departures from the paper (and why):

* **No hands (2 x 21 joints) and no face (68 landmarks) modalities**: they need a hand-pose detector
  and a facial-landmark detector the project does not have (the daemon's input is the COCO-18 body
  skeleton). The modalities are a registry (:data:`MODALITY_BUILDERS`, setting ``modalities``), so a
  modality built from further inputs can be added without touching the networks.
* **Optical flow replaced by joint motion**: the paper's motion stamp is dense optical flow (x, y,
  x + y) sampled at 25 body joints; there are no video frames in the recogniser's input, so motion is
  the displacement of each joint between consecutive *sampled* frames (as the motion stream of
  2s-AGCN / MS-AAGCN). Its scale is per sampled step (``span / (T' - 1)`` video frames).
* **Body joints are COCO-18 2D + estimated depth**, not NTU's 25 Kinect 3D joints: channels x, y and
  the depth front end's metres (``depth_mode: none`` gives x, y only; the paper's ``z = x + y``
  third channel of 2D keypoints is a linear combination the first convolution can learn, so it is
  not added). A detector ``score`` channel, if configured, is not a stamp channel (it only marks
  missing joints, which the stamps keep as 0).
* **No min-max to [0, 255] and no resizing to 224 x 224** (Eq. 1, Fig. 2): the stamps stay in the
  input's units at ``H = joints``, ``W = T'``; each CNN branch starts with a BatchNorm over the stamp
  channels (a per-channel affine map with dataset statistics, the same function class as Eq. 1's
  dataset-wide min-max) and re-zeroes missing entries. Upsampling 18 x 32 to 224 x 224 would only
  cost time on a 2-core CPU.
* **Small plain CNN instead of EfficientNet/ResNet** (Tan and Le 2019; "Multi-CNN" ensemble of
  Table 2 H left out): 3x3 conv + BN + ReLU stages (widths ``cnn_channels``), global average pooling,
  ``fc``; sized for the daemon's CPU budget.
* **Graph branch = the project's ST-GCN** on the COCO-18 spatial-partitioning adjacency (three
  partitions, Yan et al.) rather than the paper's single binary adjacency of Eq. 2; the learnable
  mask ``M_k`` of Eq. 3 is ST-GCN's edge importance, as the paper cites.
* **Two persons**: the paper does not say. The graph branch pools over persons itself (ST-GCN, mean
  over the (frame, person) positions holding a skeleton). The CNN branch by default stacks the
  persons' stamps along ``H`` (``cnn_persons: stack``, ``H = M * V``, person 0 on top) so that it can
  see the two persons of an interaction together; ``cnn_persons: mean`` runs it per person and
  averages the pooled features over the persons present.
* **Fixed temporal length** ``T' = 32`` (``num_frames``) instead of 60 (NTU) / 200 (SYSU): the
  daemon's windows are 150 frames at 15 fps and most actions span 1-4 s.
* Bones of the neck (the root) are 0; a bone is 0 where either of its joints is missing, a motion
  entry where the joint is missing in either frame, and the last frame's motion is 0.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from engines.layouts import COCO18_CENTER, COCO18_EDGES, NUM_JOINTS
from engines.sarde.graph import spatial_adjacency
from engines.sarde.models import STGCN
from engines.seeds.resample import sample_span

#: Parent of each COCO-18 joint on the tree of :data:`engines.layouts.COCO18_EDGES` rooted at the neck
#: (``COCO18_CENTER``); the neck is its own parent (its bone is 0). nose->neck, r_shoulder->neck,
#: r_elbow->r_shoulder, r_wrist->r_elbow, l_shoulder->neck, l_elbow->l_shoulder, l_wrist->l_elbow,
#: r_hip->r_shoulder, r_knee->r_hip, r_ankle->r_knee, l_hip->l_shoulder, l_knee->l_hip,
#: l_ankle->l_knee, r_eye->nose, l_eye->nose, r_ear->r_eye, l_ear->l_eye.
COCO18_PARENTS: tuple[int, ...] = (1, 1, 1, 2, 3, 1, 5, 6, 2, 8, 9, 5, 11, 12, 0, 0, 14, 15)

#: Input channels that are coordinates (stamp channels), in the order ``SardeNet`` passes them.
COORDINATE_CHANNELS: tuple[str, ...] = ("x", "y", "depth")

#: Default modalities (the paper's body joints, bones and motion; hands and face left out).
MODALITIES: tuple[str, ...] = ("joints", "bones", "motion")

#: ``(out_channels, temporal stride)`` of each modality's graph branch (ST-GCN blocks).
GRAPH_BLOCKS: tuple[tuple[int, int], ...] = ((32, 1), (32, 2), (64, 2))

#: Widths of the CNN branch's 3x3 conv stages (the first keeps resolution, the others stride 2).
CNN_CHANNELS: tuple[int, ...] = (16, 32, 64)


def joint_stamp(p: torch.Tensor, ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Body-joint stamp (Fig. 2 A): the coordinates themselves.

    Args:
        p: ``(B, C, T', V)`` coordinates (x, y[, depth]) of the sampled frames.
        ok: ``(B, 1, T', V)`` float 0/1, 1 where the joint is present.

    Returns:
        ``(stamp (B, C, T', V), valid (B, 1, T', V))``, stamp 0 where the joint is missing.
    """
    return p * ok, ok


def bone_stamp(p: torch.Tensor, ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bone stamp (Fig. 2 C): the vector from the parent joint (source) to the joint (target),
    ``b_j = p_j - p_parent(j)`` (:data:`COCO18_PARENTS`), 0 where either joint is missing and at the
    neck. Args and returns as :func:`joint_stamp`."""
    parents = list(COCO18_PARENTS)
    valid = ok * ok[..., parents]
    return (p - p[..., parents]) * valid, valid


def motion_stamp(p: torch.Tensor, ok: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Motion stamp (replaces Fig. 2 E, optical flow): ``m_t = p_{t+1} - p_t`` over the sampled
    frames, 0 where the joint is missing in either frame and at the last frame. Args and returns as
    :func:`joint_stamp`."""
    valid = ok[:, :, 1:] * ok[:, :, :-1]  # (B, 1, T'-1, V)
    motion = (p[:, :, 1:] - p[:, :, :-1]) * valid
    return F.pad(motion, (0, 0, 0, 1)), F.pad(valid, (0, 0, 0, 1))


#: modality name -> builder ``(coordinates (B, C, T', V), present (B, 1, T', V)) -> (stamp, valid)``.
#: A new modality (e.g. hands or face once a detector provides their keypoints) is one more entry.
MODALITY_BUILDERS: dict[str, Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = {
    "joints": joint_stamp,
    "bones": bone_stamp,
    "motion": motion_stamp,
}


class Stamps(NamedTuple):
    """Output of :func:`action_stamps`.

    Attributes:
        maps: modality -> ``(N*M, C, T', V)`` float32 stamp (``C`` coordinate channels; image view:
            channels ``C``, ``H = V`` joints, ``W = T'`` time), in the input's units (x, y frame-height
            normalised, depth metres; bones and motion are differences of those).
        valid: modality -> ``(N*M, 1, T', V)`` float 0/1, 1 where the stamp entry is defined.
        mask: ``(N*M, 1, T', 1)`` float 0/1, 1 where the person has a skeleton in the sampled frame.
    """

    maps: dict[str, torch.Tensor]
    valid: dict[str, torch.Tensor]
    mask: torch.Tensor


def coordinate_count(channels: Sequence[str]) -> int:
    """Number of leading coordinate channels (x, y[, depth]) in ``channels``; raises ``ValueError``
    when ``channels`` does not start with x, y."""
    channels = tuple(channels)
    if channels[:2] != ("x", "y"):
        raise ValueError(f"DeepActsNet needs input channels starting with x, y; got {channels}")
    count = 2
    while count < len(channels) and channels[count] in COORDINATE_CHANNELS:
        count += 1
    return count


def action_stamps(x: torch.Tensor, mask: torch.Tensor, channels: Sequence[str], num_persons: int,
                  num_frames: int = 32, modalities: Sequence[str] = MODALITIES) -> Stamps:
    """Deep Action Stamps of a batch of windows (Asif et al., Sec. "The Proposed Deep Action Stamps").

    1. The window's skeleton span is resampled to ``num_frames`` frames
       (:func:`engines.seeds.resample.sample_span`; the paper transforms sequences to a fixed length,
       Sec. "Implementation Details"), so a window and any cut of it keeping all skeletons give the
       same stamps.
    2. A joint is present where any input channel is non-zero (the input convention: every channel is
       0 where a joint is missing) in a frame holding the person's skeleton.
    3. Each modality's builder (:data:`MODALITY_BUILDERS`) maps the coordinate channels (x, y[,
       depth]; a ``score`` channel is not a stamp channel) to its stamp.

    Args:
        x: ``(N*M, C, T, V)`` float32, channels named by ``channels`` (x, y image-centred and frame-height
            normalised, depth metres, score in [0, 1]); persons folded person-major into the batch.
        mask: ``(N*M, 1, T, 1)`` float 0/1, 1 where the person has a skeleton.
        channels: names of ``x``'s channels, starting with ``("x", "y")``.
        num_persons: ``M``.
        num_frames: ``T'``.
        modalities: keys of :data:`MODALITY_BUILDERS`.

    Returns:
        :class:`Stamps` (``maps`` and ``valid`` in ``modalities`` order).
    """
    unknown = [m for m in modalities if m not in MODALITY_BUILDERS]
    if unknown:
        raise ValueError(f"unknown modalities {unknown}; known: {sorted(MODALITY_BUILDERS)}")
    count = coordinate_count(channels)
    xs, ms = sample_span(x, mask, num_persons, num_frames)  # (N*M, C, T', V), (N*M, 1, T', 1)
    present = (xs.abs().amax(dim=1, keepdim=True) > 0).to(xs.dtype) * ms  # (N*M, 1, T', V)
    coords = xs[:, :count]
    maps: dict[str, torch.Tensor] = {}
    valid: dict[str, torch.Tensor] = {}
    for name in modalities:
        maps[name], valid[name] = MODALITY_BUILDERS[name](coords, present)
    return Stamps(maps, valid, ms)


class StampCNN(nn.Module):
    """Convolutional branch of one modality (Fig. 3 left; paper: EfficientNet layers + ``fc``).

    The stamp is an image with ``C`` channels, height ``H`` = joints and width ``W`` = time. It is
    normalised by a BatchNorm over its channels (replacing Eq. 1's min-max, see the module notes), its
    undefined entries re-zeroed, then passed through 3x3 conv + BN + ReLU stages (the first at full
    resolution, the others stride 2), global average pooling, dropout and a linear layer.

    Args:
        in_channels: stamp channels ``C``.
        num_classes: K.
        num_persons: M.
        widths: conv stage widths.
        persons: ``"stack"`` (the M persons' stamps stacked along H, ``H = M * V``) or ``"mean"`` (one
            image per person, pooled features averaged over the persons with a skeleton).
        dropout: before the linear layer.

    Shape:
        ``stamp`` ``(N*M, C, T', V)``, ``valid`` ``(N*M, 1, T', V)``, ``mask`` ``(N*M, 1, T', 1)`` ->
        logits ``(N, K)``.
    """

    def __init__(self, in_channels: int, num_classes: int, num_persons: int = 2,
                 widths: Sequence[int] = CNN_CHANNELS, persons: str = "stack", dropout: float = 0.0):
        super().__init__()
        if persons not in ("stack", "mean"):
            raise ValueError(f"cnn_persons must be stack or mean, got {persons!r}")
        if not widths:
            raise ValueError("cnn_channels needs at least one width")
        self.num_persons = num_persons
        self.persons = persons
        self.input_bn = nn.BatchNorm2d(in_channels)
        layers: list[nn.Module] = []
        prev = in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(prev, int(w), 3, 1 if i == 0 else 2, 1, bias=False), nn.BatchNorm2d(int(w)),
                       nn.ReLU(inplace=True)]
            prev = int(w)
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, stamp: torch.Tensor, valid: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, c, t, v = stamp.shape
        m = self.num_persons
        image = stamp.transpose(2, 3)  # (B, C, V, T'): H = joints, W = time
        ok = valid.transpose(2, 3)
        if self.persons == "stack":  # (N, M, C, V, T') -> (N, C, M*V, T'), person 0 on top
            image = image.reshape(-1, m, c, v, t).transpose(1, 2).reshape(-1, c, m * v, t)
            ok = ok.reshape(-1, m, 1, v, t).transpose(1, 2).reshape(-1, 1, m * v, t)
        h = self.features(self.input_bn(image) * ok)
        feat = h.mean(dim=(2, 3))  # global average pooling
        if self.persons == "mean":  # (N*M, F) -> mean over the persons present
            here = mask.amax(dim=2).reshape(-1, m, 1)  # (N, M, 1)
            feat = (feat.reshape(-1, m, feat.shape[1]) * here).sum(dim=1) / here.sum(dim=1).clamp(min=1.0)
        return self.fc(self.dropout(feat))


class DeepActsNet(nn.Module):
    """DeepActsNet back end (seed 003): per modality a :class:`StampCNN` and an ST-GCN, logits summed.

    ``forward`` builds the Deep Action Stamps (:func:`action_stamps`), runs every modality's
    convolutional branch on its stamp image and its graph branch
    (:class:`engines.sarde.models.STGCN`: data BatchNorm over ``C * V``, ST-GCN blocks with
    spatial-partition graph convolution and edge importance (Eq. 3), masked global average pooling
    over time and persons, ``fc``) on the same stamp as a ``(C, T', V)`` graph sequence, and returns
    the sum of all branches' logits (Sec. "The Proposed Network": the outputs of the convolutional
    and graph networks "are combined through summation before feeding into a SoftMax"). Module notes
    list the departures from the paper.

    Args:
        in_channels: input channels ``C`` (``len(channels)``).
        num_classes: K.
        num_persons: M.
        channels: input channel names, ``("x", "y"[, "depth"][, "score"])``.
        num_frames: ``T'`` of the stamps (must be a multiple of the graph blocks' stride product).
        modalities: stamp modalities (keys of :data:`MODALITY_BUILDERS`), one CNN + one graph network each.
        branches: ``("cnn", "graph")`` or one of them (Table 2 E/F: graph-only / CNN-only).
        cnn_channels, cnn_persons: :class:`StampCNN` ``widths`` / ``persons``.
        graph_blocks: ``(out_channels, temporal stride)`` of each graph branch's ST-GCN blocks.
        graph_kernel: temporal kernel of the ST-GCN blocks.
        dropout: in the CNN head and inside the ST-GCN blocks.

    Shape:
        ``x`` ``(N*M, C, T, V)`` float32, ``mask`` ``(N*M, 1, T, 1)`` float 0/1 -> logits ``(N, K)``
        (not softmax).
    """

    #: Temporal stride for training crops: the stamps are resampled over the skeleton span, so any
    #: crop keeping all skeleton frames gives the same logits.
    time_stride: int = 1

    def __init__(self, in_channels: int, num_classes: int, num_persons: int = 2,
                 channels: Sequence[str] = ("x", "y", "depth"), num_frames: int = 32,
                 modalities: Sequence[str] = MODALITIES, branches: Sequence[str] = ("cnn", "graph"),
                 cnn_channels: Sequence[int] = CNN_CHANNELS, cnn_persons: str = "stack",
                 graph_blocks: Sequence[Sequence[int]] = GRAPH_BLOCKS, graph_kernel: int = 9,
                 dropout: float = 0.0):
        super().__init__()
        channels = tuple(str(c) for c in channels)
        if len(channels) != in_channels:
            raise ValueError(f"in_channels {in_channels} does not match channels {channels}")
        modalities = tuple(str(m) for m in modalities)
        branches = tuple(str(b) for b in branches)
        if not modalities:
            raise ValueError("modalities must name at least one modality")
        unknown = [m for m in modalities if m not in MODALITY_BUILDERS]
        if unknown:
            raise ValueError(f"unknown modalities {unknown}; known: {sorted(MODALITY_BUILDERS)}")
        if len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities repeat: {modalities}")
        if not branches or set(branches) - {"cnn", "graph"}:
            raise ValueError(f"branches must be a non-empty subset of ('cnn', 'graph'), got {branches}")
        blocks = tuple((int(w), int(s)) for w, s in graph_blocks)
        stride = 1
        for _, s in blocks:
            stride *= s
        if int(num_frames) < 2 or int(num_frames) % stride:
            raise ValueError(f"num_frames {num_frames} must be >= 2 and a multiple of the graph blocks' "
                             f"stride product {stride}")
        self.channels = channels
        self.num_persons = num_persons
        self.num_frames = int(num_frames)
        self.modalities = modalities
        self.branches = branches
        count = coordinate_count(channels)
        adjacency = torch.as_tensor(spatial_adjacency(NUM_JOINTS, COCO18_EDGES, COCO18_CENTER))
        self.cnns = nn.ModuleDict()
        self.graphs = nn.ModuleDict()
        for name in modalities:
            if "cnn" in branches:
                self.cnns[name] = StampCNN(count, num_classes, num_persons, tuple(int(w) for w in cnn_channels),
                                           cnn_persons, dropout)
            if "graph" in branches:
                self.graphs[name] = STGCN(count, num_classes, blocks, num_persons, dropout, int(graph_kernel),
                                          adjacency=adjacency)

    @property
    def num_subnetworks(self) -> int:
        """Number of modality sub-networks (CNN and graph branches) whose logits are summed."""
        return len(self.cnns) + len(self.graphs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        stamps = action_stamps(x, mask, self.channels, self.num_persons, self.num_frames, self.modalities)
        logits: torch.Tensor | None = None
        for name in self.modalities:
            stamp = stamps.maps[name]
            if name in self.cnns:
                out = self.cnns[name](stamp, stamps.valid[name], stamps.mask)
                logits = out if logits is None else logits + out
            if name in self.graphs:
                out = self.graphs[name](stamp, stamps.mask)
                logits = out if logits is None else logits + out
        assert logits is not None
        return logits
