"""The operating curve's replay of the event logic, on windows whose outcome is worked out by hand.

The replay on real clips (it must give the journal's own alerts at the deployed threshold) is in
``tests/test_recognition_real.py``.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.clips import Clip
from pipeline.config import EventsConfig
from engines.errors import UserError
from pipeline.operating_curve import (cv_threshold, operating_curve, render_curve, render_cv_threshold, render_separation,
                                      replay_alerts, roc_auc, separation)

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
    ghost = [dict(_w((1, 2), (0.99, 0.0, 0.01)), joints=[15.0, 3.0])]  # the partner is 3 joints: not a person
    assert _replay(ghost, 0.3) == ["fighting"]  # rule off (pair_min_joints 0)
    assert replay_alerts(ghost, LABELS, threshold=0.3, end_threshold=0.3, smoothing=0.5, min_windows=1, silent=["normal"],
                         pair_labels=EVENTS.pair_labels, pair_min_joints=5) == []


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


def test_roc_auc_by_hand():
    assert roc_auc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert roc_auc([0.1], [0.9]) == 0.0
    assert roc_auc([0.5, 0.9], [0.5, 0.1]) == 0.875  # pairs: (0.5,0.5) tie 1/2, (0.5,0.1) 1, (0.9,*) 2 -> 3.5 / 4
    assert roc_auc([], [0.3]) is None


def test_separation_counts_pair_windows_and_clip_maxima():
    clips = [_clip("fight1", ["fighting"]), _clip("fight2", ["fighting"]), _clip("quiet1", []), _clip("quiet2", [])]
    scores = {"fight1": [_w((1, 2), (0.9, 0.0, 0.1)), _w((3,), (0.99, 0.0, 0.01))],  # lone window: not a fight window
              "fight2": [_w((1, 2), (0.4, 0.0, 0.6))],
              "quiet1": [_w((1, 2), (0.5, 0.0, 0.5)), _w((1, 2), (0.3, 0.0, 0.7))],
              "quiet2": []}
    sep = separation(clips, scores, LABELS, EVENTS, ["normal"])
    assert set(sep) == {"fighting"}  # nobody expects hugging; normal is silent
    f = sep["fighting"]
    # windows: fight 0.9, 0.4 against quiet 0.5, 0.3 -> 0.9 wins twice, 0.4 beats 0.3 only: 3 / 4
    assert f["windows"] == [2, 2] and f["window_auc"] == 0.75
    # clips: fight maxima 0.9, 0.4 against quiet maxima 0.5, 0.0 (no window) -> 3 / 4
    assert f["clips"] == [2, 2] and f["clip_auc"] == 0.75
    assert "| fighting | 0.750 | 2 / 2 | 0.750 | 2 / 2 |" in "\n".join(render_separation(sep))


def test_cv_threshold_is_chosen_on_the_other_folds():
    # three folds of one fight and one quiet clip; single windows, so each clip's EMA is its score
    clips = {k: [_clip(f"fight{k}", ["fighting"]), _clip(f"quiet{k}", [])] for k in "abc"}
    ema = {"fighta": 0.9, "quieta": 0.7, "fightb": 0.65, "quietb": 0.5, "fightc": 0.8}
    scores = {cid: [_w((1, 2), (s, 0.0, 1.0 - s))] for cid, s in ema.items()} | {"quietc": []}
    cv = cv_threshold([clips[k] for k in "abc"], scores, LABELS, EVENTS, ["normal"], thresholds=[0.5, 0.6, 0.7, 0.8],
                      target_false_alarms=0.0)
    # fold a: b and c's quiet clips allow 0.6 (quietb 0.5 alerts at 0.5) -> fighta hit, quieta (0.7) alerts
    # fold b: quieta 0.7 forces 0.8 -> fightb (0.65) missed; fold c: 0.8 as well -> fightc (0.8) hit
    assert [f["threshold"] for f in cv["folds"]] == [0.6, 0.8, 0.8]
    assert [f["per_label"]["fighting"]["hits"] for f in cv["folds"]] == [1, 0, 1]
    assert [f["quiet_with_any_alert"] for f in cv["folds"]] == [1, 0, 0]
    assert cv["overall"]["per_label"]["fighting"] == {"hits": 2, "expected": 3, "recall": 2 / 3, "false_alarms": 1}
    assert cv["overall"]["quiet_with_any_alert"] == 1 and cv["overall"]["quiet_clips"] == 3
    assert "| all |  | 2/3 = 0.67 | 1/3 |" in "\n".join(render_cv_threshold(cv))
    with pytest.raises(ValueError):
        cv_threshold([clips["a"]], scores, LABELS, EVENTS, ["normal"])


def test_replay_rescores_a_stored_report(tmp_path):
    import json

    from pipeline.config import load_config_or_default
    from pipeline.video_eval import replay

    labels = ["fighting", "falling", "hugging", "shaking_hands", "exchanging", "approaching", "departing", "normal"]

    def w(fight):  # the default model's eight labels
        return [_w((1, 2), (fight, 0, 0, 0, 0, 0, 0, 1.0 - fight))]

    part = {"fold_groups": [["a"], ["b"]], "clips": {
        "fa": {"expected": ["fighting"], "group": "a", "window_scores": w(0.9)},
        "qa": {"expected": [], "group": "a", "window_scores": w(0.7)},
        "fb": {"expected": ["fighting"], "group": "b", "window_scores": w(0.65)},
        "qb": {"expected": [], "group": "b", "window_scores": []}}}
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"lists": {"cctv": part}, "labels": labels, "background": "normal"}))
    cfg = load_config_or_default(None)  # deployed threshold 0.6
    report = replay(path, cfg)
    curve = report["lists"]["cctv"]["operating_curve"]
    deployed = next(r for r in curve["rows"] if r["threshold"] == 0.6)
    assert deployed["per_label"]["fighting"]["hits"] == 2 and deployed["quiet_with_any_alert"] == 1
    # fold a is chosen on fold b (its quiet clip has no window: the lowest threshold), fold b on fold a
    assert [f["threshold"] for f in report["lists"]["cctv"]["cv_threshold"]["folds"]] == [0.3, 0.75]
    del part["clips"]["qb"]["window_scores"]
    path.write_text(json.dumps({"lists": {"cctv": part}, "labels": labels}))
    with pytest.raises(UserError, match="no recorded window scores"):
        replay(path, cfg)
