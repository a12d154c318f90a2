"""The operating curve's replay of the event logic, on windows whose outcome is worked out by hand.

The replay on real clips (it must give the journal's own alerts at the deployed threshold) is in
``tests/test_recognition_real.py``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.clips import Clip
from pipeline.config import EventsConfig
from pipeline.operating_curve import operating_curve, render_curve, replay_alerts

LABELS = ["fighting", "hugging", "normal"]
EVENTS = EventsConfig(threshold=0.6, end_threshold=0.4, smoothing=0.5, ignore_labels=["normal"],
                      pair_labels=["fighting", "hugging"])


def _w(tracks, scores, end=29):
    return {"camera": "c0", "track_ids": list(tracks), "start_frame": 0, "end_frame": end, "scores": list(scores)}


def _replay(windows, threshold):
    return replay_alerts(windows, LABELS, threshold=threshold, end_threshold=EVENTS.end_threshold,
                         smoothing=EVENTS.smoothing, min_windows=1, silent=["normal"], pair_labels=EVENTS.pair_labels)


def test_replay_follows_the_ema_by_hand():
    # fighting 0.5 then 0.9: EMA 0.5, then 0.5 * 0.9 + 0.5 * 0.5 = 0.7 -> starts at 0.7, not at 0.75
    windows = [_w((1, 2), (0.5, 0.1, 0.4)), _w((1, 2), (0.9, 0.05, 0.05), end=59)]
    assert _replay(windows, 0.70) == ["fighting"]
    assert _replay(windows, 0.75) == []


def test_replay_applies_the_pair_rule_and_silent_labels():
    lone = [_w((3,), (0.99, 0.0, 0.01))]  # a lone person's fight score is zeroed
    assert _replay(lone, 0.3) == []
    normal = [_w((1, 2), (0.0, 0.0, 1.0))]  # the background never alerts
    assert _replay(normal, 0.3) == []
    groups = [_w((1, 2), (0.1, 0.8, 0.1)), _w((3, 4), (0.8, 0.1, 0.1))]  # each track group has its own EMA
    assert _replay(groups, 0.6) == ["fighting", "hugging"]


def test_replay_needs_recorded_scores():
    with pytest.raises(KeyError):
        _replay([{"track_ids": [1, 2], "start_frame": 0, "end_frame": 29}], 0.6)


def _clip(cid, alerts):
    return Clip(clip_id=cid, path=Path(f"/x/{cid}.mp4"), alerts=alerts, label=None, segments=[], group=cid)


def test_curve_counts_hits_and_false_alarms_per_threshold():
    clips = [_clip("fight1", ["fighting"]), _clip("fight2", ["fighting"]), _clip("quiet1", []), _clip("quiet2", [])]
    scores = {"fight1": [_w((1, 2), (0.9, 0.0, 0.1))],          # EMA 0.9
              "fight2": [_w((1, 2), (0.65, 0.0, 0.35))],        # EMA 0.65
              "quiet1": [_w((1, 2), (0.7, 0.0, 0.3))],          # EMA 0.7: a false alarm below 0.7
              "quiet2": []}                                      # no window at all
    curve = operating_curve(clips, scores, LABELS, EVENTS, ["normal"], thresholds=[0.5, 0.8])
    assert curve["thresholds"] == [0.5, 0.6, 0.8] and curve["deployed"] == 0.6 and curve["quiet_clips"] == 2
    by_t = {r["threshold"]: r for r in curve["rows"]}
    assert by_t[0.6]["per_label"]["fighting"] == {"expected": 2, "hits": 2, "recall": 1.0, "false_alarms": 1}
    assert by_t[0.8]["per_label"]["fighting"]["hits"] == 1 and by_t[0.8]["quiet_with_any_alert"] == 0
    assert by_t[0.6]["false_alarm_rate_any"] == 0.5
    assert by_t[0.6]["per_label"]["hugging"]["recall"] is None  # no clip expects it
    assert curve["at_target"]["threshold"] == 0.8  # the lowest threshold with no quiet clip alerting
    md = "\n".join(render_curve(curve))
    assert "| 0.60* | 2/2 = 1.00 | 1 = 0.50 |" in md and "| 0.80 | 1/2 = 0.50 | 0 = 0.00 |" in md
