"""OpenPose decoding: heatmap peaks + part affinity field (PAF) grouping into COCO-18 persons.

Implements the bottom-up parsing of Cao et al., "Realtime Multi-Person 2D Pose Estimation using Part
Affinity Fields" (CVPR 2017): keypoint candidates are non-maximum-suppressed heatmap peaks (Sec. 2.2);
each candidate pair of a limb is scored by the line integral of the PAF along the segment (Sec. 2.3,
Eq. 10, approximated by ``paf_samples`` uniformly spaced samples); limbs are matched greedily
(Sec. 2.4, the per-limb bipartite matching relaxed as in the reference code) and assembled into
persons along the COCO-18 limb tree.

Network output (``(h, w, 57)`` float32, stride 8, the CMU COCO-18 head): channels ``[0, 18)`` keypoint
heatmaps in COCO-18 order (``engines.layouts``), 18 background, ``[19, 57)`` 19 PAFs as (x, y) pairs
in the channel order of :data:`COCO18_LIMBS`.

Coordinate frame of every result: **detector-input pixels**, pixel centres on integers (OpenCV's
convention, as in ``engines.letterbox``), x right, y down. Output cell ``(row, col)`` of a stride-``s``
map covers input pixels ``[s col, s col + s)``; its centre is ``x = (col + 0.5) s - 0.5``. With
``upsample = u`` the heatmaps are cubic-resized by ``u`` (``cv2.resize``, centre-aligned) first, and
a peak at upsampled column ``c`` maps to ``x = (c + 0.5) s / u - 0.5`` (same for ``y``).

The PAF channel order was checked on real frames (3 frames of ``pyskl/ntu_hug.avi`` with two
persons, 3 of the NTU sample, 9 person instances): along every one of the 19 limbs the table's PAF
pair has the largest mean projection on the unit limb vector of all 19 pairs (0.59-0.98; the best
other pair 0.08-0.63, the parallel limb neck-hip of the other side being the closest), and swapping
its x/y channels lowers the projection for every limb.
"""
from __future__ import annotations

import logging

import cv2
import numpy as np

from engines.layouts import NUM_JOINTS

log = logging.getLogger(__name__)

__all__ = ["PoseDecoder", "COCO18_LIMBS", "NUM_OUTPUT_CHANNELS", "PAF_OFFSET", "STRIDE", "duplicate_persons",
           "DUPLICATE_MAX_PARTS"]

#: Channels of the CMU COCO-18 head: 18 heatmaps + background + 38 PAF channels.
NUM_OUTPUT_CHANNELS: int = 57
#: First PAF channel of the output.
PAF_OFFSET: int = 19
#: Output stride of the network, input pixels per output cell.
STRIDE: int = 8

#: COCO-18 limbs as ``(joint_a, joint_b, paf_x, paf_y)``: PAF channels relative to
#: :data:`PAF_OFFSET`; the field points from ``joint_a`` to ``joint_b``. Order = assembly order:
#: the first 17 form the tree rooted at the neck (they may start a new person); the last two
#: (shoulder-ear) only add to existing persons. Same table as tf-pose-estimation's
#: ``CocoPairs`` / ``CocoPairsNetwork`` and the CMU caffe ``mapIdx`` minus 19.
COCO18_LIMBS: tuple[tuple[int, int, int, int], ...] = (
    (1, 2, 12, 13),    # neck - R-shoulder
    (1, 5, 20, 21),    # neck - L-shoulder
    (2, 3, 14, 15),    # R-shoulder - R-elbow
    (3, 4, 16, 17),    # R-elbow - R-wrist
    (5, 6, 22, 23),    # L-shoulder - L-elbow
    (6, 7, 24, 25),    # L-elbow - L-wrist
    (1, 8, 0, 1),      # neck - R-hip
    (8, 9, 2, 3),      # R-hip - R-knee
    (9, 10, 4, 5),     # R-knee - R-ankle
    (1, 11, 6, 7),     # neck - L-hip
    (11, 12, 8, 9),    # L-hip - L-knee
    (12, 13, 10, 11),  # L-knee - L-ankle
    (1, 0, 28, 29),    # neck - nose
    (0, 14, 30, 31),   # nose - R-eye
    (14, 16, 34, 35),  # R-eye - R-ear
    (0, 15, 32, 33),   # nose - L-eye
    (15, 17, 36, 37),  # L-eye - L-ear
    (2, 16, 18, 19),   # R-shoulder - R-ear
    (5, 17, 26, 27),   # L-shoulder - L-ear
)
_TREE_LIMBS = 17  # limbs [0, 17) may start a person
#: Most joints a person may have and still be dropped as a duplicate of another (:func:`duplicate_persons`).
DUPLICATE_MAX_PARTS: int = 5


def duplicate_persons(keypoints: np.ndarray, distance: float, max_parts: int = DUPLICATE_MAX_PARTS) -> np.ndarray:
    """Which persons of one frame are leftovers of another person's body, not people.

    Greedy PAF grouping (Cao et al. Sec. 2.4) keeps the second heatmap peak of a limb as a person of
    its own when no limb joins it to the body it lies on: on real frames, typically the left/right
    mirror of a leg or arm (``Rhip-Rknee-Rankle`` on the left leg) or an arm detected twice. Such a
    3-joint "person" turns a lone person into a pair, and an interaction window (``fighting``) follows.
    Person ``q`` is a duplicate of a kept person ``p`` when ``q`` has at most ``max_parts`` joints,
    fewer than ``p`` (or as many, and ``p`` comes first: two mirrored copies of one leg keep one), and
    **every** joint of ``q`` lies within ``distance x height(p)`` of some joint of ``p`` (any type;
    height = vertical extent of ``p``'s joints, at least 1 px). A person next to another (a partner, a
    bystander) has joints off the other's body and is kept.

    Measured on the daemon's recordings (``docs/DETECTOR.md``, distance 0.15): frames with two or more
    persons fell from 0.49 to 0.22 on tai chi (one person) and from 0.25 to 0.08 on a GMDCSA24 fall,
    and from 0.49 to 0.48 / 0.29 to 0.27 on the real CCTV fight / noFight clips.

    Args:
        keypoints: ``(P, 18, 3)`` float32 ``(x, y, score)``, any pixel frame; score 0 = joint missing;
            best person first (the decoder's order), which breaks ties.
        distance: in multiples of the host's height; ``<= 0`` marks nobody.
        max_parts: the most joints a duplicate can have.

    Returns:
        ``(P,)`` bool, True for a duplicate.
    """
    kp = np.asarray(keypoints, np.float32)
    vis = kp[..., 2] > 0  # (P, V)
    n = vis.sum(axis=1)
    out = np.zeros(len(kp), bool)
    if distance <= 0 or len(kp) < 2:
        return out
    for q in np.nonzero((n > 0) & (n <= max_parts))[0]:
        pts = kp[q, vis[q], :2]  # (nq, 2)
        hosts = (n > n[q]) | ((n == n[q]) & (np.arange(len(kp)) < q))
        for p in np.nonzero(hosts & ~out)[0]:
            host = kp[p, vis[p], :2]  # (np, 2)
            height = max(float(np.ptp(host[:, 1])), 1.0)
            nearest = np.linalg.norm(pts[:, None] - host[None], axis=-1).min(axis=1)  # (nq,)
            if (nearest < distance * height).all():
                out[q] = True
                break
    return out


class PoseDecoder:
    """Heatmap peaks + PAF grouping for one frame of the OpenPose COCO-18 head.

    Args:
        peak_threshold: minimum heatmap value of a keypoint candidate (OpenPose ``thre1``).
        paf_threshold: minimum PAF projection on the limb direction for a sample to count
            (OpenPose ``thre2``).
        paf_samples: samples of the PAF line integral per candidate limb (Eq. 10).
        min_paf_ratio: fraction of samples that must exceed ``paf_threshold`` for a connection.
        min_parts: minimum number of joints of a kept person (every person has at least the two
            joints of one limb, so 1 and 2 are the same).
        min_person_score: minimum person score (see :meth:`decode_with_scores`) of a kept person.
        duplicate_distance: drop persons lying on another person's body (:func:`duplicate_persons`,
            in multiples of its height); 0 = keep them.
        upsample: integer factor by which the heatmaps are cubic-upsampled before peak finding
            (OpenPose upsamples to the input size; 1 = peaks on the stride-8 grid). Non-maximum
            suppression uses a ``(2u+1)``-pixel square window at that resolution, i.e. one output
            cell each side.
        subpixel: refine each peak by the vertex of a parabola through it and its neighbours
            along x and along y (at the upsampled resolution). On the NTU sample (26 frames, 13
            joints vs Kinect) the median error was 18.5 px (1920x1080 frame) for grid peaks,
            15.4 px with ``subpixel`` (the default, ~2.5 ms/frame in all), 14.5 px for
            ``upsample=4`` without and 14.3 px for ``upsample=2`` with it (~1-3 ms/frame more).
        stride: network output stride in input pixels.

    Raises:
        ValueError: on out-of-range settings.
    """

    def __init__(self, peak_threshold: float = 0.1, paf_threshold: float = 0.05, paf_samples: int = 10,
                 min_paf_ratio: float = 0.8, min_parts: int = 4, min_person_score: float = 0.4,
                 duplicate_distance: float = 0.0, upsample: int = 1, subpixel: bool = True, stride: int = STRIDE):
        if paf_samples < 2:
            raise ValueError(f"paf_samples must be >= 2, got {paf_samples}")
        if not 0.0 <= min_paf_ratio <= 1.0:
            raise ValueError(f"min_paf_ratio must be in [0, 1], got {min_paf_ratio}")
        if upsample < 1 or int(upsample) != upsample:
            raise ValueError(f"upsample must be an integer >= 1, got {upsample}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        if min_parts < 1:
            raise ValueError(f"min_parts must be >= 1, got {min_parts}")
        if not 0.0 <= duplicate_distance <= 1.0:
            raise ValueError(f"duplicate_distance must be in [0, 1], got {duplicate_distance}")
        self.peak_threshold = float(peak_threshold)
        self.paf_threshold = float(paf_threshold)
        self.paf_samples = int(paf_samples)
        self.min_paf_ratio = float(min_paf_ratio)
        self.min_parts = int(min_parts)
        self.min_person_score = float(min_person_score)
        self.duplicate_distance = float(duplicate_distance)
        self.upsample = int(upsample)
        self.subpixel = bool(subpixel)
        self.stride = int(stride)
        size = 2 * self.upsample + 1
        self._nms_kernel = np.ones((size, size), np.uint8)
        self._t = np.linspace(0.0, 1.0, self.paf_samples, dtype=np.float32)  # (S,)

    # ------------------------------------------------------------------ peaks
    def peaks(self, heatmaps: np.ndarray) -> list[np.ndarray]:
        """Keypoint candidates of each joint type (OpenPose Sec. 2.2, NMS on the heatmaps).

        A candidate is a pixel (of the heatmap cubic-upsampled by ``upsample``) above
        ``peak_threshold`` that equals the maximum of its ``(2u+1)``-square window (``cv2.dilate``,
        all joint types at once); equal-valued neighbours (plateaus) merge into one; with
        ``subpixel`` the position is refined by a parabola fit per axis.

        Args:
            heatmaps: ``(h, w, J)`` float32 keypoint heatmaps at the output stride.

        Returns:
            ``J`` arrays, each ``(n_j, 3)`` float32 ``(x, y, score)``: x, y in detector-input pixels
            (module docstring), score = heatmap value at the peak clipped to [0, 1]; sorted by
            score, best first.
        """
        hm = np.ascontiguousarray(heatmaps, dtype=np.float32)
        h, w, joints = hm.shape
        u = self.upsample
        if u > 1:
            hm = cv2.resize(hm, (w * u, h * u), interpolation=cv2.INTER_CUBIC)
            if joints == 1:
                hm = hm[..., None]
        maxed = cv2.dilate(hm, self._nms_kernel)
        if joints == 1 and maxed.ndim == 2:
            maxed = maxed[..., None]
        is_peak = (hm >= maxed) & (hm > self.peak_threshold)  # (H', W', J)
        rows, cols, kinds = np.nonzero(is_peak)
        dx = np.zeros(len(rows), np.float32)
        dy = np.zeros(len(rows), np.float32)
        if self.subpixel and len(rows):
            dx = self._parabola(hm, rows, cols, kinds, axis=1)
            dy = self._parabola(hm, rows, cols, kinds, axis=0)
        scale = self.stride / u
        xs = (cols + dx + 0.5) * scale - 0.5
        ys = (rows + dy + 0.5) * scale - 0.5
        scores = np.clip(hm[rows, cols, kinds], 0.0, 1.0)
        out: list[np.ndarray] = []
        for j in range(joints):
            sel = np.nonzero(kinds == j)[0]
            cand = np.stack([xs[sel], ys[sel], scores[sel]], axis=1).astype(np.float32)  # (n_j, 3)
            cand = self._merge_ties(cand, rows[sel], cols[sel])
            out.append(cand[np.argsort(-cand[:, 2], kind="stable")])
        return out

    def _merge_ties(self, cand: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Merge peaks of one joint type that lie in each other's NMS window into their mean.

        Two candidates can survive ``value >= window max`` in each other's window only if their
        values are equal: a plateau (e.g. a peak exactly between two pixels after an even
        ``upsample``); it becomes one candidate at the plateau's mean position.
        """
        n = len(cand)
        if n < 2:
            return cand
        u = self.upsample
        near = (np.abs(rows[:, None] - rows[None]) <= u) & (np.abs(cols[:, None] - cols[None]) <= u)  # (n, n)
        if near.sum() == n:  # no ties (the usual case)
            return cand
        group = np.full(n, -1, np.intp)
        for i in range(n):
            if group[i] < 0:
                group[near[i] & (group < 0)] = i
        ids, group = np.unique(group, return_inverse=True)
        counts = np.bincount(group).astype(np.float32)
        merged = np.empty((len(ids), 3), np.float32)
        merged[:, 0] = np.bincount(group, cand[:, 0]) / counts
        merged[:, 1] = np.bincount(group, cand[:, 1]) / counts
        merged[:, 2] = cand[ids, 2]
        return merged

    @staticmethod
    def _parabola(hm: np.ndarray, rows: np.ndarray, cols: np.ndarray, kinds: np.ndarray, axis: int) -> np.ndarray:
        """Sub-cell offset of each peak along ``axis`` (0 rows, 1 cols): vertex of the parabola
        through the peak and its two neighbours, in [-0.5, 0.5] cells (0 at the border)."""
        size = hm.shape[axis]
        idx = rows if axis == 0 else cols
        lo = np.maximum(idx - 1, 0)
        hi = np.minimum(idx + 1, size - 1)
        if axis == 0:
            f_lo, f_hi = hm[lo, cols, kinds], hm[hi, cols, kinds]
        else:
            f_lo, f_hi = hm[rows, lo, kinds], hm[rows, hi, kinds]
        f_0 = hm[rows, cols, kinds]
        curv = f_lo - 2.0 * f_0 + f_hi  # <= 0 at a maximum
        inside = (idx > 0) & (idx < size - 1) & (curv < 0)
        offset = np.where(inside, 0.5 * (f_lo - f_hi) / np.where(inside, curv, -1.0), 0.0)
        return np.clip(offset, -0.5, 0.5).astype(np.float32)

    # ------------------------------------------------------------ PAF scoring
    def _sample_paf(self, paf: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Bilinear samples of a ``(h, w, 2)`` field at input-pixel points ``x, y`` (any shape) -> ``(..., 2)``."""
        h, w = paf.shape[:2]
        gx = np.clip((x + 0.5) / self.stride - 0.5, 0.0, w - 1.0)
        gy = np.clip((y + 0.5) / self.stride - 0.5, 0.0, h - 1.0)
        x0 = np.floor(gx).astype(np.intp)
        y0 = np.floor(gy).astype(np.intp)
        x1 = np.minimum(x0 + 1, w - 1)
        y1 = np.minimum(y0 + 1, h - 1)
        fx = (gx - x0)[..., None]
        fy = (gy - y0)[..., None]
        top = paf[y0, x0] * (1.0 - fx) + paf[y0, x1] * fx
        bottom = paf[y1, x0] * (1.0 - fx) + paf[y1, x1] * fx
        return top * (1.0 - fy) + bottom * fy

    def limb_scores(self, paf: np.ndarray, cand_a: np.ndarray, cand_b: np.ndarray,
                    image_height: float) -> tuple[np.ndarray, np.ndarray]:
        """PAF line-integral score of every candidate pair of one limb, vectorised (Eq. 10).

        Args:
            paf: ``(h, w, 2)`` float32 PAF (x, y) of the limb at the output stride.
            cand_a: ``(nA, 3)`` candidates of the limb's first joint, ``(x, y, score)`` input pixels.
            cand_b: ``(nB, 3)`` candidates of the second joint.
            image_height: detector-input height in pixels, for OpenPose's length prior
                ``min(0.5 H / |limb| - 1, 0)``.

        Returns:
            ``(score, valid)``, both ``(nA, nB)``: mean projection of the PAF samples on the unit
            limb vector plus the length prior, and whether the pair passes both OpenPose criteria
            (more than ``min_paf_ratio`` of the samples above ``paf_threshold``, score > 0).
        """
        a = cand_a[:, None, :2]  # (nA, 1, 2)
        b = cand_b[None, :, :2]  # (1, nB, 2)
        vec = b - a  # (nA, nB, 2)
        norm = np.sqrt((vec ** 2).sum(-1))  # (nA, nB)
        unit = vec / np.maximum(norm, 1e-6)[..., None]
        pts = a[:, :, None, :] + vec[:, :, None, :] * self._t[None, None, :, None]  # (nA, nB, S, 2)
        field = self._sample_paf(paf, pts[..., 0], pts[..., 1])  # (nA, nB, S, 2)
        proj = (field * unit[:, :, None, :]).sum(-1)  # (nA, nB, S)
        prior = np.minimum(0.5 * image_height / np.maximum(norm, 1e-6) - 1.0, 0.0)
        score = proj.mean(-1) + prior
        ratio_ok = (proj > self.paf_threshold).sum(-1) > self.min_paf_ratio * self.paf_samples
        valid = ratio_ok & (score > 0) & (norm > 0)
        return score, valid

    # --------------------------------------------------------------- decoding
    def decode(self, output: np.ndarray) -> np.ndarray:
        """Persons of one frame.

        Args:
            output: ``(h, w, 57)`` float32 network output of one image (module docstring).

        Returns:
            ``(P, 18, 3)`` float32 COCO-18 keypoints ``(x, y, score)`` in detector-input pixels,
            persons sorted by person score, best first; joints not found are ``(0, 0, 0)``.
            ``(0, 18, 3)`` when nobody is found.

        Raises:
            ValueError: if ``output`` is not ``(h, w, 57)``.
        """
        return self.decode_with_scores(output)[0]

    def decode_with_scores(self, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Like :meth:`decode`, also returning the person scores.

        Person score (as OpenPose's): (sum of the joint scores + sum of the PAF scores of the
        person's limbs) / number of joints found; persons with fewer than ``min_parts`` joints or a score below
        ``min_person_score`` are dropped, then (``duplicate_distance > 0``) the persons that lie on a
        better-joined person's body (:func:`duplicate_persons`).

        Returns:
            ``(keypoints (P, 18, 3) float32, scores (P,) float32)``.
        """
        out = np.asarray(output)
        if out.ndim != 3 or out.shape[2] != NUM_OUTPUT_CHANNELS:
            raise ValueError(f"decode: expected a (h, w, {NUM_OUTPUT_CHANNELS}) output, got {out.shape}")
        out = out.astype(np.float32, copy=False)
        height_px = out.shape[0] * self.stride
        peaks = self.peaks(out[..., :NUM_JOINTS])
        # Global candidate table: rows (x, y, score), and each joint type's id range in it.
        counts = [len(p) for p in peaks]
        starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.intp)
        cand = np.concatenate(peaks, axis=0) if sum(counts) else np.zeros((0, 3), np.float32)
        empty = (np.zeros((0, NUM_JOINTS, 3), np.float32), np.zeros((0,), np.float32))
        if len(cand) == 0:
            return empty

        # Per limb: greedy matching of candidate pairs, best PAF score first (Sec. 2.4).
        connections: list[np.ndarray] = []  # each (C, 3): global id A, global id B, PAF score
        for ja, jb, px, py in COCO18_LIMBS:
            ca, cb = peaks[ja], peaks[jb]
            if len(ca) == 0 or len(cb) == 0:
                connections.append(np.zeros((0, 3), np.float32))
                continue
            paf = out[..., [PAF_OFFSET + px, PAF_OFFSET + py]]  # (h, w, 2): x, y
            score, valid = self.limb_scores(paf, ca, cb, height_px)
            ia, ib = np.nonzero(valid)
            order = np.argsort(-score[ia, ib], kind="stable")
            used_a = np.zeros(len(ca), bool)
            used_b = np.zeros(len(cb), bool)
            chosen = []
            limit = min(len(ca), len(cb))
            for i, j in zip(ia[order], ib[order]):
                if used_a[i] or used_b[j]:
                    continue
                used_a[i] = used_b[j] = True
                chosen.append((starts[ja] + i, starts[jb] + j, score[i, j]))
                if len(chosen) == limit:
                    break
            connections.append(np.asarray(chosen, np.float32).reshape(-1, 3))

        # Assemble persons: rows of global candidate ids (-1 = none) and total scores.
        persons = np.full((0, NUM_JOINTS), -1, np.intp)
        totals: list[float] = []
        for k, (ja, jb, _, _) in enumerate(COCO18_LIMBS):
            for id_a_f, id_b_f, paf_score in connections[k]:
                id_a, id_b = int(id_a_f), int(id_b_f)
                found = np.nonzero((persons[:, ja] == id_a) | (persons[:, jb] == id_b))[0]
                if len(found) == 1:
                    p = found[0]
                    if persons[p, jb] != id_b:
                        persons[p, jb] = id_b
                        totals[p] += float(cand[id_b, 2]) + float(paf_score)
                elif len(found) >= 2:
                    p1, p2 = int(found[0]), int(found[1])
                    overlap = (persons[p1] >= 0) & (persons[p2] >= 0)
                    if not overlap.any():  # two partial persons joined by this limb: merge
                        persons[p1] = np.where(persons[p1] >= 0, persons[p1], persons[p2])
                        totals[p1] += totals[p2] + float(paf_score)
                        persons = np.delete(persons, p2, axis=0)
                        del totals[p2]
                    else:
                        persons[p1, jb] = id_b
                        totals[p1] += float(cand[id_b, 2]) + float(paf_score)
                elif k < _TREE_LIMBS:
                    row = np.full((1, NUM_JOINTS), -1, np.intp)
                    row[0, ja], row[0, jb] = id_a, id_b
                    persons = np.concatenate([persons, row], axis=0)
                    totals.append(float(cand[id_a, 2] + cand[id_b, 2]) + float(paf_score))

        if len(persons) == 0:
            return empty
        n_joints = (persons >= 0).sum(1)  # (P,)
        person_score = np.asarray(totals, np.float64) / np.maximum(n_joints, 1)
        keep = (n_joints >= self.min_parts) & (person_score >= self.min_person_score)
        persons, person_score = persons[keep], person_score[keep]
        order = np.argsort(-person_score, kind="stable")
        persons, person_score = persons[order], person_score[order]
        keypoints = np.zeros((len(persons), NUM_JOINTS, 3), np.float32)  # (P, V, 3)
        has = persons >= 0
        keypoints[has] = cand[persons[has]]
        if self.duplicate_distance > 0:
            keep = ~duplicate_persons(keypoints, self.duplicate_distance)
            keypoints, person_score = keypoints[keep], person_score[keep]
        return keypoints, person_score.astype(np.float32)
