"""Per-track ring buffers and the windows the recogniser classifies.

:class:`TrackBuffers` keeps, for every live track of one camera, the last ``T`` frames of normalised
keypoints in a preallocated ring indexed by ``frame_no % T`` (never concatenated per frame; memory
is fixed at construction). :class:`WindowScheduler` decides, every ``stride`` frames, which tracks
(alone or in interaction pairs) are classified, and :meth:`TrackBuffers.build` gathers them into one
ST-GCN window ``(C, T, V, M)`` through :func:`engines.skeleton.to_window` (the one layout conversion).

Coordinates in the buffers are those of :func:`engines.skeleton.normalize_keypoints`:
image-centred, in multiples of the frame height, plus the joint score (0 = missing).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from engines.layouts import COCO18_CENTER
from engines.skeleton import to_window

log = logging.getLogger(__name__)

_EMPTY = np.iinfo(np.int64).min  # frame number of an empty ring row (never equals a real frame)


@dataclass
class Window:
    """One window ready for the recogniser.

    Attributes:
        data: ``(3, T, V, M)`` float32 (x, y, score), right-aligned: the newest frame is ``t = T-1``;
            frames and persons without data are zero.
        camera: camera id.
        track_ids: the tracks in person order ``m = 0 .. len-1`` (``len <= M``; the rest is padding).
        start_frame, end_frame: first and last frame (camera frame numbers) in which any of the
            persons was observed; the window spans ``end_frame - T + 1 .. end_frame`` in general
            (``end_frame`` is the requested end frame when it has data).
        start_ts, end_ts: capture timestamps of ``start_frame`` and ``end_frame``, Unix seconds.
        valid_frames: number of frames of the window in which at least one person was observed.
        joints: per person (order of ``track_ids``) the median number of joints found over the frames
            in which it was observed: how much of a body the detector saw (a leftover of another
            person's body or a blur ghost has 3-4, ``events.pair_min_joints``).
        received_ts: optional Unix time the stage received the frame that completed the window
            (set by the stage, for the event-latency histogram).
    """

    data: np.ndarray
    camera: str
    track_ids: tuple[int, ...]
    start_frame: int
    end_frame: int
    start_ts: float
    end_ts: float
    valid_frames: int
    joints: tuple[float, ...] = ()
    received_ts: float | None = None


class TrackBuffers:
    """Fixed-memory ring buffers of normalised keypoints, one per track, for one camera.

    Memory: a pool of ``max_tracks`` rings, allocated once: keypoints ``(max_tracks, T, V, 3)``
    float32, frame numbers ``(max_tracks, T)`` int64 (int64 min = empty) and capture timestamps
    ``(max_tracks, T)`` float64. Row ``frame_no % T`` of a track's ring holds that frame; a row is
    valid for frame ``f`` only if its stored frame number equals ``f``, so frames older than ``T``
    and gaps read as missing without any clearing. When a new track arrives and the pool is full,
    the track with the oldest last frame is evicted (its data is lost), logged and counted in
    :attr:`evictions`.

    Args:
        num_frames: ``T``, ring and window length in frames.
        num_joints: ``V``.
        max_tracks: live tracks held at most.
        camera: camera id stamped on the windows.
    """

    def __init__(self, num_frames: int = 150, num_joints: int = 18, *, max_tracks: int = 64, camera: str = ""):
        if num_frames < 1 or num_joints < 1 or max_tracks < 1:
            raise ValueError(f"num_frames, num_joints and max_tracks must be >= 1, got "
                             f"{num_frames}, {num_joints}, {max_tracks}")
        self.num_frames = int(num_frames)
        self.num_joints = int(num_joints)
        self.max_tracks = int(max_tracks)
        self.camera = camera
        self.keypoints = np.zeros((max_tracks, num_frames, num_joints, 3), dtype=np.float32)  # (S, T, V, 3)
        self.frames = np.full((max_tracks, num_frames), _EMPTY, dtype=np.int64)  # (S, T)
        self.timestamps = np.zeros((max_tracks, num_frames), dtype=np.float64)  # (S, T) Unix s
        self._last = np.full(max_tracks, _EMPTY, dtype=np.int64)  # (S,) last frame appended per slot
        self._slots: dict[int, int] = {}  # track id -> slot
        self._free: list[int] = list(range(max_tracks - 1, -1, -1))
        self.evictions = 0

    @property
    def track_ids(self) -> list[int]:
        """Tracks currently held, ascending."""
        return sorted(self._slots)

    def __contains__(self, track_id: int) -> bool:
        return track_id in self._slots

    def last_frame(self, track_id: int) -> int:
        """Last frame appended for ``track_id``. Raises ``KeyError`` if the track is not held."""
        return int(self._last[self._slots[track_id]])

    def append(self, track_id: int, frame_no: int, capture_ts: float, keypoints: np.ndarray) -> None:
        """Store one frame of a track.

        Args:
            track_id: tracker id; a new id takes a free ring (evicting the stalest track if none).
            frame_no: camera frame number; must be greater than the track's previous one.
            capture_ts: capture time of the frame, Unix seconds.
            keypoints: ``(V, 3)`` normalised keypoints (``engines.skeleton.normalize_keypoints``).

        Raises:
            ValueError: on a wrong keypoint shape or a frame number that does not increase.
        """
        kp = np.asarray(keypoints, dtype=np.float32)
        if kp.shape != (self.num_joints, 3):
            raise ValueError(f"keypoints must have shape ({self.num_joints}, 3), got {kp.shape}")
        slot = self._slots.get(track_id)
        if slot is None:
            slot = self._allocate(track_id)
        elif frame_no <= self._last[slot]:
            raise ValueError(f"track {track_id}: frame_no {frame_no} after {int(self._last[slot])}")
        row = frame_no % self.num_frames
        self.keypoints[slot, row] = kp
        self.frames[slot, row] = frame_no
        self.timestamps[slot, row] = capture_ts
        self._last[slot] = frame_no

    def drop(self, track_id: int) -> None:
        """Forget a track and free its ring (no-op for an unknown id)."""
        slot = self._slots.pop(track_id, None)
        if slot is not None:
            self.frames[slot] = _EMPTY
            self._last[slot] = _EMPTY
            self._free.append(slot)

    def count(self, track_id: int, since_frame: int) -> int:
        """Frames stored for ``track_id`` with frame number ``>= since_frame`` (0 for an unknown id)."""
        slot = self._slots.get(track_id)
        if slot is None:
            return 0
        return int(np.count_nonzero(self.frames[slot] >= since_frame))

    def rows(self, track_id: int, end_frame: int) -> tuple[np.ndarray, np.ndarray]:
        """The track's frames ``end_frame - T + 1 .. end_frame`` in time order.

        Returns:
            ``(keypoints (T, V, 3) float32, valid (T,) bool)``; rows not observed are zero. An
            unknown track gives all zeros.
        """
        frames = np.arange(end_frame - self.num_frames + 1, end_frame + 1)  # (T,)
        out = np.zeros((self.num_frames, self.num_joints, 3), dtype=np.float32)
        slot = self._slots.get(track_id)
        if slot is None:
            return out, np.zeros(self.num_frames, dtype=bool)
        idx = frames % self.num_frames
        valid = self.frames[slot, idx] == frames  # (T,)
        out[valid] = self.keypoints[slot, idx[valid]]
        return out, valid

    def build(self, track_ids: Sequence[int], end_frame: int, num_persons: int, camera: str | None = None) -> Window:
        """Gather the window ending at ``end_frame`` for ``track_ids`` (person order as given).

        Args:
            track_ids: 1 to ``num_persons`` track ids; unknown (e.g. evicted) ids are zero persons.
            end_frame: newest frame of the window (placed at ``t = T - 1``).
            num_persons: ``M``; missing persons are zero-padded.
            camera: camera id of the window (default: :attr:`camera`).

        Returns:
            :class:`Window` with ``data`` ``(3, T, V, M)`` float32 from :func:`engines.skeleton.to_window`.

        Raises:
            ValueError: if no or too many tracks are given, or none has a frame in the window.
        """
        ids = tuple(int(t) for t in track_ids)
        if not 1 <= len(ids) <= num_persons:
            raise ValueError(f"need 1 to {num_persons} track ids, got {ids}")
        seq = np.zeros((self.num_frames, len(ids), self.num_joints, 3), dtype=np.float32)  # (T, M', V, 3)
        any_valid = np.zeros(self.num_frames, dtype=bool)
        ts = np.zeros(self.num_frames, dtype=np.float64)
        frames = np.arange(end_frame - self.num_frames + 1, end_frame + 1)
        joints = []
        for m, tid in enumerate(ids):
            seq[:, m], valid = self.rows(tid, end_frame)
            if valid.any():
                slot = self._slots[tid]
                ts[valid] = self.timestamps[slot, frames[valid] % self.num_frames]
            joints.append(float(np.median((seq[valid, m, :, 2] > 0).sum(axis=-1))) if valid.any() else 0.0)
            any_valid |= valid
        observed = np.flatnonzero(any_valid)
        if observed.size == 0:
            raise ValueError(f"tracks {ids} have no frame in {frames[0]}..{end_frame}")
        data = to_window(seq, self.num_frames, num_persons)  # (3, T, V, M), L = T: right-aligned
        first, last = int(observed[0]), int(observed[-1])
        return Window(data=data, camera=self.camera if camera is None else camera, track_ids=ids,
                      start_frame=int(frames[first]), end_frame=int(frames[last]),
                      start_ts=float(ts[first]), end_ts=float(ts[last]), valid_frames=int(observed.size),
                      joints=tuple(joints))

    def _allocate(self, track_id: int) -> int:
        if not self._free:
            victim = min(self._slots, key=lambda t: self._last[self._slots[t]])
            self.evictions += 1
            if self.evictions == 1 or self.evictions % 100 == 0:  # rate-limited: one line per 100
                log.warning("camera %s: track buffer pool full (%d tracks), evicting track %d (%d evictions)",
                            self.camera, self.max_tracks, victim, self.evictions)
            self.drop(victim)
        slot = self._free.pop()
        self._slots[track_id] = slot
        return slot


class WindowScheduler:
    """Decides which windows of one camera are classified, and when.

    Timing: the first tick is ``stride - 1`` frames after the first frame the scheduler sees (so
    the first window holds ``stride`` frames), then every ``stride`` frames; a tick fires at the
    first processed frame ``f >= next_tick``, so dropped frames delay but never skip a tick. A tick
    at frame ``f`` builds windows ending at ``f``.

    Grouping rule (SBU-style interactions need both persons in one window, ``M = 2``): at a tick, a
    *candidate* is a held active track with at least ``min_frames`` observed frames in the window
    span. Each candidate is paired with its nearest other active track (candidate or not) if their
    mean distance is below ``pair_distance``; the distance is, over the frames both were observed,
    the mean of ``|| centre_a - centre_b || / ((h_a + h_b) / 2)``, where ``centre`` is the neck
    (the mean of the visible joints when the neck is missing) and ``h`` the height of the person's
    visible joints (floored at ``min_height``), i.e. neck-to-neck distance in person heights.
    A pair is one window with persons in ascending track-id order; a pair found from both sides is
    built once. Candidates with no partner get a singleton window (person 1..M-1 zero-padded).
    With ``num_persons = 1`` there is no pairing.

    Args:
        stride: frames between ticks.
        min_frames: observed frames a track needs in the span to be classified.
        num_persons: ``M`` of the windows.
        pair_distance: pairing threshold, in person heights (neck to neck).
        center_joint: COCO-18 joint used as the person centre (the neck).
        min_height: floor of the person height, in normalised units (frame heights).
    """

    def __init__(self, stride: int = 30, min_frames: int = 15, num_persons: int = 2, pair_distance: float = 1.5,
                 *, center_joint: int = COCO18_CENTER, min_height: float = 0.02):
        if stride < 1 or min_frames < 1 or num_persons < 1:
            raise ValueError(f"stride, min_frames, num_persons must be >= 1, got {stride}, {min_frames}, {num_persons}")
        if not pair_distance > 0:
            raise ValueError(f"pair_distance must be > 0, got {pair_distance}")
        self.stride = int(stride)
        self.min_frames = int(min_frames)
        self.num_persons = int(num_persons)
        self.pair_distance = float(pair_distance)
        self.center_joint = int(center_joint)
        self.min_height = float(min_height)
        self._next_tick: int | None = None
        self._covered: dict[int, int] = {}  # track id -> last frame covered by a built window

    def covered(self, track_id: int) -> int | None:
        """Last frame of ``track_id`` covered by a built window, or ``None``."""
        return self._covered.get(track_id)

    def due(self, buffers: TrackBuffers, active_ids: Iterable[int], frame_no: int,
            camera: str | None = None) -> list[Window]:
        """Call once per processed frame of the camera, after the buffers were appended.

        Args:
            buffers: the camera's :class:`TrackBuffers`.
            active_ids: the tracker's live track ids.
            frame_no: the frame just processed.
            camera: camera id stamped on the windows (default: ``buffers.camera``).

        Returns:
            The windows to classify now, ending at ``frame_no`` (empty between ticks).
        """
        if self._next_tick is None:
            self._next_tick = frame_no + self.stride - 1
        if frame_no < self._next_tick:
            return []
        self._next_tick = frame_no + self.stride
        active = [t for t in active_ids if t in buffers]
        since = frame_no - buffers.num_frames + 1
        candidates = [t for t in active if buffers.count(t, since) >= self.min_frames]
        return self._build(buffers, candidates, active, frame_no, camera)

    def flush(self, buffers: TrackBuffers, track_ids: Iterable[int], frame_no: int | None = None,
              camera: str | None = None) -> list[Window]:
        """Windows for ending tracks (or all tracks at end of stream) with frames no window covered.

        Each such track with at least ``min_frames`` observed frames in the ``T`` frames up to its
        last frame gets a window ending at its last observed frame (not later than ``frame_no``, so
        no trailing empty frames), grouped by the same rule as :meth:`due` with every track the
        buffers hold (the other flushed ones and those that continue). The flushed tracks are then
        forgotten by the scheduler; drop them from the buffers afterwards.

        Args:
            buffers: the camera's buffers (still holding the flushed tracks).
            track_ids: the tracks to flush.
            frame_no: the current frame (upper bound of the window ends), default unbounded.
            camera: camera id stamped on the windows (default: ``buffers.camera``).
        """
        flushed = [t for t in dict.fromkeys(track_ids) if t in buffers]
        partners = buffers.track_ids
        windows: list[Window] = []
        seen_groups: set[tuple[int, ...]] = set()
        for tid in sorted(flushed, key=buffers.last_frame):
            last = buffers.last_frame(tid)
            if frame_no is not None:
                last = min(last, int(frame_no))
            covered = self._covered.get(tid)
            if (covered is not None and last <= covered) or buffers.count(tid, last - buffers.num_frames + 1) < self.min_frames:
                continue
            windows.extend(self._build(buffers, [tid], partners, last, camera, seen_groups))
        for tid in flushed:
            self._covered.pop(tid, None)
        return windows

    # -- internals ---------------------------------------------------------------------------

    def _build(self, buffers: TrackBuffers, candidates: list[int], partners: list[int], end_frame: int,
               camera: str | None, seen_groups: set[tuple[int, ...]] | None = None) -> list[Window]:
        groups = self.group(buffers, candidates, partners, end_frame)
        seen_groups = set() if seen_groups is None else seen_groups
        windows = []
        for group in groups:
            if group in seen_groups:
                continue
            seen_groups.add(group)
            windows.append(buffers.build(group, end_frame, self.num_persons, camera))
            for t in group:
                last = min(end_frame, buffers.last_frame(t))
                self._covered[t] = max(self._covered.get(t, last), last)
        return windows

    def group(self, buffers: TrackBuffers, candidates: Sequence[int], partners: Sequence[int],
              end_frame: int) -> list[tuple[int, ...]]:
        """Apply the grouping rule; returns sorted, deduplicated groups (tuples of track ids)."""
        groups: list[tuple[int, ...]] = []
        cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

        def centre(tid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            if tid not in cache:
                kp, valid = buffers.rows(tid, end_frame)  # (T, V, 3), (T,)
                cache[tid] = (*_centre_and_height(kp, self.center_joint, self.min_height), valid)
            return cache[tid]

        for a in candidates:
            best, best_d = None, np.inf
            if self.num_persons >= 2:
                ca, ha, va = centre(a)
                for b in partners:
                    if b == a:
                        continue
                    cb, hb, vb = centre(b)
                    both = va & vb
                    if not both.any():
                        continue
                    d = np.linalg.norm(ca[both] - cb[both], axis=-1) / (0.5 * (ha[both] + hb[both]))
                    d = float(d.mean())
                    if d < best_d:
                        best, best_d = b, d
            group = tuple(sorted((a, best))) if best is not None and best_d < self.pair_distance else (a,)
            if group not in groups:
                groups.append(group)
        return groups


def _centre_and_height(kp: np.ndarray, center_joint: int, min_height: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame centre ``(T, 2)`` and height ``(T,)`` of one person's normalised keypoints ``(T, V, 3)``."""
    vis = kp[..., 2] > 0  # (T, V)
    n = np.maximum(vis.sum(axis=1), 1)  # (T,)
    mean_xy = np.where(vis[..., None], kp[..., :2], 0.0).sum(axis=1) / n[:, None]  # (T, 2)
    centre = np.where(vis[:, center_joint, None], kp[:, center_joint, :2], mean_xy)
    y = kp[..., 1]
    top = np.where(vis, y, np.inf).min(axis=1)
    bottom = np.where(vis, y, -np.inf).max(axis=1)
    height = np.where(vis.any(axis=1), bottom - top, 0.0)
    return centre, np.maximum(height, min_height)
