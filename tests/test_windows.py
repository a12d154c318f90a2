"""Tests of pipeline.windows: ring buffers (wraparound, gaps, alignment, fixed memory), scheduler."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engines.layouts import SBU15_TO_COCO18, remap_to_coco18
from engines.skeleton import normalize_keypoints, to_window
from pipeline.windows import TrackBuffers, Window, WindowScheduler

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
SBU_DIR = SHARED / "data" / "skeletons" / "sbu_kinect_interaction"


def marked(frame_no: int, track_id: int = 0, x: float = 0.0) -> np.ndarray:
    """(18, 3) normalised keypoints whose nose x encodes the frame and left-ear x the track.

    Only x of non-neck joints carries the markers, so the person's neck (centre) and height
    (y extent, 0.6 frame heights) stay those of a real person standing at neck x = ``x``.
    """
    kp = np.zeros((18, 3), np.float32)
    kp[:, 0] = x
    kp[:, 1] = np.linspace(-0.3, 0.3, 18)  # a 0.6 frame-heights tall person
    kp[:, 2] = 1.0
    kp[0, 0] = frame_no
    kp[17, 0] = track_id
    return kp


def frames_of(window: Window, m: int) -> np.ndarray:
    """Frame numbers encoded in person ``m`` of a window, 0 where the row is missing. Shape (T,)."""
    return np.where(window.data[2, :, 0, m] > 0, window.data[0, :, 0, m], 0)


# ---------------------------------------------------------------- ring buffers

def test_ring_wraparound_right_aligned_and_old_frames_vanish():
    buf = TrackBuffers(num_frames=10, camera="cam1")
    for f in range(25):
        buf.append(7, f, 1000.0 + f / 10, marked(f))
    w = buf.build([7], end_frame=24, num_persons=1)
    assert w.data.shape == (3, 10, 18, 1) and w.data.dtype == np.float32
    np.testing.assert_array_equal(frames_of(w, 0), np.arange(15, 25))  # oldest first, newest last
    assert (w.camera, w.track_ids, w.start_frame, w.end_frame, w.valid_frames) == ("cam1", (7,), 15, 24, 10)
    assert w.start_ts == pytest.approx(1001.5) and w.end_ts == pytest.approx(1002.4)
    # six frames later, with no new data: frames 21..24 remain, at the start of the window
    later = buf.build([7], end_frame=30, num_persons=1)
    np.testing.assert_array_equal(frames_of(later, 0), [21, 22, 23, 24, 0, 0, 0, 0, 0, 0])
    assert later.data[:, 4:].max() == 0 and later.valid_frames == 4 and later.end_frame == 24
    assert buf.count(7, since_frame=15) == 10 and buf.count(7, since_frame=21) == 4


def test_gaps_are_zero_and_rows_land_at_their_frame():
    buf = TrackBuffers(num_frames=8)
    kept = [3, 4, 6, 9, 10]
    for f in kept:
        buf.append(1, f, float(f), marked(f))
    w = buf.build([1], end_frame=10, num_persons=2)
    assert w.data.shape == (3, 8, 18, 2)
    np.testing.assert_array_equal(frames_of(w, 0), [3, 4, 0, 6, 0, 0, 9, 10])
    assert w.data[..., 1].max() == 0  # the padded second person
    assert w.data[:, 2].max() == 0 and w.data[:, 4:6].max() == 0  # gaps are all-zero rows
    # the same window from the one layout conversion of engines.skeleton
    seq = np.zeros((8, 1, 18, 3), np.float32)
    for f in kept:
        seq[f - 3, 0] = marked(f)
    np.testing.assert_array_equal(w.data, to_window(seq, 8, 2))


def test_early_frames_do_not_match_empty_rows():
    """A window reaching before frame 0 must not read empty rows as frames -1, -2, ..."""
    buf = TrackBuffers(num_frames=150)
    for f in range(3):
        buf.append(1, f, 0.0, marked(f))
    w = buf.build([1], end_frame=2, num_persons=1)
    assert w.valid_frames == 3 and w.start_frame == 0
    assert buf.count(1, since_frame=-147) == 3


def test_memory_is_preallocated_and_bounded():
    buf = TrackBuffers(num_frames=30, max_tracks=4)
    arrays = (buf.keypoints, buf.frames, buf.timestamps)
    ids, nbytes = [id(a) for a in arrays], sum(a.nbytes for a in arrays)
    rng = np.random.default_rng(0)
    live: list[int] = []
    next_id = 1
    for f in range(2000):
        if len(live) < 3 or rng.random() < 0.01:
            live.append(next_id)
            next_id += 1
        if rng.random() < 0.01 and live:
            buf.drop(live.pop(0))
        for t in live:
            buf.append(t, f, float(f), marked(f, t))
    assert [id(a) for a in (buf.keypoints, buf.frames, buf.timestamps)] == ids
    assert sum(a.nbytes for a in (buf.keypoints, buf.frames, buf.timestamps)) == nbytes
    assert len(buf.track_ids) <= 4


def test_eviction_takes_the_stalest_track_and_is_counted():
    buf = TrackBuffers(num_frames=10, max_tracks=2)
    buf.append(1, 0, 0.0, marked(0))
    buf.append(2, 5, 0.0, marked(5))
    buf.append(1, 6, 0.0, marked(6))  # track 2 is now the stalest
    buf.append(3, 7, 0.0, marked(7))
    assert buf.evictions == 1 and buf.track_ids == [1, 3]
    assert buf.count(2, since_frame=0) == 0
    w = buf.build([2, 3], end_frame=7, num_persons=2)  # an evicted id is a zero person
    assert w.data[..., 0].max() == 0 and w.valid_frames == 1


def test_build_keeps_person_order_and_validates():
    buf = TrackBuffers(num_frames=5)
    for f in range(5):
        buf.append(4, f, float(f), marked(f, 4))
        buf.append(9, f, float(f), marked(f, 9))
    w = buf.build([9, 4], end_frame=4, num_persons=2)
    assert w.track_ids == (9, 4)
    assert (w.data[0, :, 17, 0] == 9).all() and (w.data[0, :, 17, 1] == 4).all()
    assert w.joints == (18.0, 18.0)
    with pytest.raises(ValueError):
        buf.build([1, 2, 3], end_frame=4, num_persons=2)
    with pytest.raises(ValueError):
        buf.build([4], end_frame=100, num_persons=2)  # nothing in the span
    with pytest.raises(ValueError):
        buf.append(4, 4, 0.0, marked(4))  # frame must increase
    with pytest.raises(ValueError):
        buf.append(4, 5, 0.0, np.zeros((17, 3)))


def test_window_joints_are_the_median_over_observed_frames():
    buf = TrackBuffers(num_frames=10)
    for f in range(7):  # joints found: 4, 4, 4, 8, 8, 8, 8 (frames 7-9 unobserved) -> median 8
        kp = marked(f, 1)
        kp[4 if f < 3 else 8:, 2] = 0.0
        buf.append(1, f, float(f), kp)
    ghost = marked(0, 2)
    ghost[3:, 2] = 0.0
    buf.append(2, 5, 5.0, ghost)  # three joints, one frame
    w = buf.build([1, 2], end_frame=9, num_persons=2)
    assert w.joints == (8.0, 3.0)


# ---------------------------------------------------------------- scheduler

def feed(buf: TrackBuffers, sched: WindowScheduler, frames, tracks: dict[int, float]) -> dict[int, list[Window]]:
    """Append every track (id -> neck x) at each frame and collect the scheduler's windows."""
    out = {}
    for f in frames:
        for t, x in tracks.items():
            buf.append(t, f, float(f), marked(f, t, x))
        windows = sched.due(buf, list(tracks), f, "camA")
        if windows:
            out[f] = windows
    return out


def test_scheduler_stride_min_frames_and_singletons():
    buf = TrackBuffers(num_frames=150)
    sched = WindowScheduler(stride=30, min_frames=15, num_persons=2, pair_distance=1.5)
    ticks = feed(buf, sched, range(0, 95), {1: 0.0, 2: 5.0})  # far apart: no pair
    assert sorted(ticks) == [29, 59, 89]
    assert [w.track_ids for w in ticks[29]] == [(1,), (2,)]
    assert all(w.camera == "camA" and w.end_frame == 29 and w.valid_frames == 30 for w in ticks[29])
    assert ticks[29][0].data[..., 1].max() == 0  # singleton padded with zeros
    # a late track with fewer than min_frames observed frames is not classified yet
    for f in range(95, 125):
        buf.append(1, f, float(f), marked(f, 1))
        if f >= 115:
            buf.append(3, f, float(f), marked(f, 3, 9.0))
        windows = sched.due(buf, [1, 3], f, "camA")
        if windows:
            assert f == 119 and [w.track_ids for w in windows] == [(1,)]  # track 3 has 5 < 15 frames


def test_scheduler_tick_survives_dropped_frames():
    buf = TrackBuffers(num_frames=150)
    sched = WindowScheduler(stride=30, min_frames=5)
    frames = [f for f in range(200) if f % 30 != 29]  # every tick frame is dropped upstream
    ticks = feed(buf, sched, frames, {1: 0.0})
    assert sorted(ticks) == [30, 60, 90, 120, 150, 180]


def test_scheduler_pairs_nearest_and_deduplicates():
    buf = TrackBuffers(num_frames=150)
    sched = WindowScheduler(stride=30, min_frames=15, num_persons=2, pair_distance=1.5)
    # persons are 0.6 frame heights tall: 1 and 2 are 0.5 heights apart, 3 is 0.83 from 2, 4 alone
    ticks = feed(buf, sched, range(30), {1: 0.0, 2: 0.3, 3: 0.8, 4: 5.0})
    groups = [w.track_ids for w in ticks[29]]
    assert groups == [(1, 2), (2, 3), (4,)]  # (1,2) found from both sides is built once
    w12 = ticks[29][0]
    assert (w12.data[0, -30:, 17, 0] == 1).all() and (w12.data[0, -30:, 17, 1] == 2).all()
    single = WindowScheduler(stride=30, min_frames=15, num_persons=1)
    buf1 = TrackBuffers(num_frames=150)
    assert [w.track_ids for w in feed(buf1, single, range(30), {1: 0.0, 2: 0.3})[29]] == [(1,), (2,)]


def test_pair_distance_is_in_person_heights():
    buf = TrackBuffers(num_frames=150)
    tight = WindowScheduler(stride=30, min_frames=15, pair_distance=0.4)  # 0.3 / 0.6 = 0.5 heights apart
    ticks = feed(buf, tight, range(30), {1: 0.0, 2: 0.3})
    assert [w.track_ids for w in ticks[29]] == [(1,), (2,)]
    assert tight.group(buf, [1], [1, 2], 29) == [(1,)]
    loose = WindowScheduler(stride=30, min_frames=15, pair_distance=0.6)
    assert loose.group(buf, [1], [1, 2], 29) == [(1, 2)]


def test_flush_covers_only_unclassified_frames():
    buf = TrackBuffers(num_frames=150)
    sched = WindowScheduler(stride=30, min_frames=15)
    feed(buf, sched, range(30), {1: 0.0, 2: 5.0})  # tick at 29 covers both
    assert sched.flush(buf, [1], frame_no=40) == []  # nothing after frame 29
    for f in range(30, 45):
        buf.append(2, f, float(f), marked(f, 2, 5.0))
    windows = sched.flush(buf, [2], frame_no=60)  # track 2 ended, seen until 44
    assert [(w.track_ids, w.end_frame) for w in windows] == [((2,), 44)]
    np.testing.assert_array_equal(frames_of(windows[0], 0)[-45:], np.arange(45))  # newest frame last
    assert sched.covered(2) is None  # forgotten after the flush


def test_flush_short_clip_and_min_frames():
    """A clip shorter than the stride still gets one window at end of stream; a blip gets none."""
    buf = TrackBuffers(num_frames=150)
    sched = WindowScheduler(stride=30, min_frames=15)
    assert feed(buf, sched, range(20), {1: 0.0, 2: 0.3}) == {}
    buf.append(3, 19, 19.0, marked(19, 3, 9.0))  # one-frame blip
    windows = sched.flush(buf, [1, 2, 3], frame_no=19, camera="camA")
    assert [w.track_ids for w in windows] == [(1, 2)]
    assert windows[0].valid_frames == 20 and windows[0].camera == "camA"


@pytest.mark.skipif(not SBU_DIR.is_dir(), reason=f"SBU data not found at {SBU_DIR}")
def test_sbu_interactions_are_paired():
    """Every real SBU interaction is grouped into one M = 2 window; moved 3 frame widths apart, none is."""
    files = sorted(SBU_DIR.glob("*/*/*/skeleton_pos.txt"))
    assert files
    for shift, expected in ((0.0, "pair"), (3 * 640.0, "singletons")):
        for path in files:
            rows = np.loadtxt(path, delimiter=",")[:, 1:].reshape(-1, 2, 15, 3)
            xy = rows[..., :2] * np.array([640.0, 480.0])
            xy[:, 1, :, 0] += shift
            kp = remap_to_coco18(np.concatenate([xy, np.ones_like(xy[..., :1])], axis=-1), SBU15_TO_COCO18)
            norm = normalize_keypoints(kp, (640, 480))  # (L, 2, 18, 3)
            buf = TrackBuffers(num_frames=150)
            sched = WindowScheduler(stride=1000, min_frames=10, pair_distance=1.5)
            for f, frame in enumerate(norm):
                buf.append(1, f, f / 15, frame[0])
                buf.append(2, f, f / 15, frame[1])
            groups = [w.track_ids for w in sched.flush(buf, [1, 2])]
            want = [(1, 2)] if expected == "pair" else [(1,), (2,)]
            assert groups == want, (path, shift)
