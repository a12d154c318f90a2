"""Per-camera multi-person tracker: stable integer ids for the persons of the pose detector.

One :class:`Tracker` per camera. Each frame's persons (after PAF grouping) are matched to the live
tracks by an optimal assignment (``scipy.optimize.linear_sum_assignment``, the Hungarian/LAPJV
routine) on a pose-distance cost:

``cost(track, person) = mean_j || pred_track[j] - person[j] || / scale_track``

over the joints ``j`` visible in both (at least ``min_joints`` of them), where ``pred_track`` is a
constant-velocity prediction of the track's joints to the current frame and ``scale_track`` the
track's bounding-box diagonal. Pairs with a cost above ``max_distance`` are never matched; unmatched
persons start new tracks; tracks unmatched for more than ``max_age`` frames end.

Units: keypoints in original-frame pixels (origin top-left, x right, y down) plus a score in
``[0, 1]`` (``score <= 0``, a NaN score or non-finite x, y = joint missing); frame numbers are the camera's own frame counter
(gaps = dropped frames); velocities are pixels per frame; costs are unitless (person scales).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

log = logging.getLogger(__name__)

_INFEASIBLE = 1e9  # stands in for +inf in the assignment (scipy rejects all-inf rows)


@dataclass(frozen=True)
class TrackUpdate:
    """Result of :meth:`Tracker.update` for one frame.

    Attributes:
        frame_no: the frame the update is for.
        assignments: ``(track_id, person_index)`` for every tracked person of the frame, ordered by
            person index; ``person_index`` indexes the ``persons`` array given to ``update``.
        started: ids of the tracks created at this frame (also present in ``assignments``).
        ended: ids of the tracks that ended at this frame (unmatched for more than ``max_age``
            frames); they are no longer in :attr:`Tracker.active_ids`.
    """

    frame_no: int
    assignments: list[tuple[int, int]] = field(default_factory=list)
    started: list[int] = field(default_factory=list)
    ended: list[int] = field(default_factory=list)


class _Track:
    """State of one track: last observed position of every joint and a body velocity."""

    __slots__ = ("track_id", "pos", "seen", "vel", "scale", "last_frame", "hits")

    def __init__(self, track_id: int, num_joints: int):
        self.track_id = track_id
        self.pos = np.zeros((num_joints, 2), dtype=np.float64)  # (V, 2) px, last observed per joint
        self.seen = np.full(num_joints, -1, dtype=np.int64)  # (V,) frame of that observation, -1 never
        self.vel = np.zeros(2, dtype=np.float64)  # (2,) px / frame, whole-body velocity
        self.scale = 0.0  # px, EMA of the bounding-box diagonal
        self.last_frame = -1
        self.hits = 0


class Tracker:
    """Assigns stable, increasing integer track ids to the persons of one camera.

    Args:
        max_age: a track unmatched for more than this many frames ends (frames, >= 1).
        max_distance: largest admissible match cost, in person scales (track bounding-box diagonal);
            0.5 = the mean joint displacement may be half the person's diagonal.
        min_joints: persons with fewer visible joints are ignored (neither matched nor started), and
            a match needs at least this many joints visible in both the prediction and the person.
        num_joints: ``V`` (18 for COCO-18).
        velocity_weight: EMA weight of the newest velocity measurement (0..1].
        min_scale: floor of the person scale in pixels, so tiny or degenerate persons do not make
            every cost huge.

    Raises:
        ValueError: on out-of-range arguments.
    """

    def __init__(self, max_age: int = 15, max_distance: float = 0.5, min_joints: int = 3, *,
                 num_joints: int = 18, velocity_weight: float = 0.5, min_scale: float = 4.0):
        if max_age < 1:
            raise ValueError(f"max_age must be >= 1, got {max_age}")
        if not max_distance > 0:
            raise ValueError(f"max_distance must be > 0, got {max_distance}")
        if not 1 <= min_joints <= num_joints:
            raise ValueError(f"min_joints must be in [1, {num_joints}], got {min_joints}")
        if not 0 < velocity_weight <= 1:
            raise ValueError(f"velocity_weight must be in (0, 1], got {velocity_weight}")
        self.max_age = int(max_age)
        self.max_distance = float(max_distance)
        self.min_joints = int(min_joints)
        self.num_joints = int(num_joints)
        self.velocity_weight = float(velocity_weight)
        self.min_scale = float(min_scale)
        self._tracks: dict[int, _Track] = {}
        self._next_id = 1
        self._last_frame: int | None = None

    @property
    def active_ids(self) -> list[int]:
        """Ids of the live tracks, ascending."""
        return sorted(self._tracks)

    def last_frame(self, track_id: int) -> int:
        """Frame number at which ``track_id`` was last matched. Raises ``KeyError`` if not live."""
        return self._tracks[track_id].last_frame

    def update(self, frame_no: int, persons: np.ndarray) -> TrackUpdate:
        """Match one frame's persons to the tracks.

        Args:
            frame_no: the camera's frame number, strictly increasing between calls (gaps allowed).
            persons: ``(P, V, 3)`` float array, x and y in original-frame pixels and a joint score
                (``<= 0`` or NaN = missing); ``P`` may be 0.

        Returns:
            :class:`TrackUpdate` with the assignments, new and ended track ids.

        Raises:
            ValueError: on a wrongly shaped ``persons`` array or a frame number that does not increase.
        """
        frame_no = int(frame_no)
        if self._last_frame is not None and frame_no <= self._last_frame:
            raise ValueError(f"frame_no must increase: got {frame_no} after {self._last_frame}")
        dets = np.asarray(persons, dtype=np.float64)
        if dets.size == 0:
            dets = dets.reshape(0, self.num_joints, 3)
        if dets.ndim != 3 or dets.shape[1:] != (self.num_joints, 3):
            raise ValueError(f"persons must have shape (P, {self.num_joints}, 3), got {dets.shape}")
        self._last_frame = frame_no

        vis = (dets[..., 2] > 0) & np.isfinite(dets[..., :2]).all(axis=-1)  # (P, V); NaN score is False
        xy = np.where(vis[..., None], dets[..., :2], 0.0)  # (P, V, 2)
        usable = np.flatnonzero(vis.sum(axis=1) >= self.min_joints)  # person indices we track

        track_ids = list(self._tracks)
        matched_tracks: dict[int, int] = {}  # track id -> person index
        if track_ids and usable.size:
            cost = self._cost(frame_no, [self._tracks[t] for t in track_ids], xy[usable], vis[usable])
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols):
                if cost[r, c] <= self.max_distance:
                    matched_tracks[track_ids[r]] = int(usable[c])

        started: list[int] = []
        matched_persons = set(matched_tracks.values())
        for p in usable:
            if int(p) not in matched_persons:
                track = _Track(self._next_id, self.num_joints)
                self._next_id += 1
                self._tracks[track.track_id] = track
                matched_tracks[track.track_id] = int(p)
                started.append(track.track_id)

        for tid, p in matched_tracks.items():
            self._observe(self._tracks[tid], frame_no, xy[p], vis[p])

        ended = [tid for tid, tr in self._tracks.items() if frame_no - tr.last_frame > self.max_age]
        for tid in ended:
            del self._tracks[tid]
        assignments = sorted(matched_tracks.items(), key=lambda item: item[1])
        return TrackUpdate(frame_no=frame_no, assignments=assignments, started=started, ended=sorted(ended))

    def finish(self) -> list[int]:
        """End every live track (end of stream); returns their ids, ascending."""
        ended = sorted(self._tracks)
        self._tracks.clear()
        return ended

    # -- internals ---------------------------------------------------------------------------

    def _cost(self, frame_no: int, tracks: list[_Track], xy: np.ndarray, vis: np.ndarray) -> np.ndarray:
        """``(N tracks, P persons)`` cost matrix; infeasible pairs hold a large constant."""
        pos = np.stack([t.pos for t in tracks])  # (N, V, 2)
        seen = np.stack([t.seen for t in tracks])  # (N, V)
        vel = np.stack([t.vel for t in tracks])  # (N, 2)
        scale = np.array([max(t.scale, self.min_scale) for t in tracks])  # (N,)
        age = frame_no - seen  # (N, V) frames since each joint was seen
        known = (seen >= 0) & (age <= self.max_age)  # (N, V)
        pred = pos + vel[:, None, :] * age[..., None]  # (N, V, 2) constant-velocity prediction
        both = known[:, None, :] & vis[None, :, :]  # (N, P, V)
        dist = np.linalg.norm(pred[:, None] - xy[None], axis=-1)  # (N, P, V) px
        shared = both.sum(axis=-1)  # (N, P)
        mean = np.where(both, dist, 0.0).sum(axis=-1) / np.maximum(shared, 1)  # (N, P) px
        cost = mean / scale[:, None]
        cost[(shared < self.min_joints) | (cost > self.max_distance)] = _INFEASIBLE
        return cost

    def _observe(self, track: _Track, frame_no: int, xy: np.ndarray, vis: np.ndarray) -> None:
        """Fold one matched observation ``xy (V, 2)`` px / ``vis (V,)`` into the track."""
        if track.hits:
            dt = frame_no - track.last_frame
            common = vis & (track.seen == track.last_frame)  # joints seen now and at the last match
            if common.any():
                measured = (xy[common] - track.pos[common]).mean(axis=0) / dt  # px / frame
                w = self.velocity_weight if track.hits > 1 else 1.0
                track.vel = w * measured + (1.0 - w) * track.vel
        pts = xy[vis]
        diag = float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0)))
        track.scale = diag if track.hits == 0 else 0.5 * diag + 0.5 * track.scale
        track.pos[vis] = xy[vis]
        track.seen[vis] = frame_no
        track.last_frame = frame_no
        track.hits += 1
