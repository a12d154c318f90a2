"""What the deployed daemon says about real footage, with the default config's thresholds and alert labels.

Every clip runs through the daemon's own path (reader processes -> stage -> events -> journal) via
``pipeline.video_eval.run_clips``; the default model is built the way ``sarde run`` builds it. These
tests fail when the product raises a wrong alert or misses the one it must raise:

* the NTU hug clip gives ``hugging``;
* street, vtest, basketball, tai chi, clean-and-jerk and the NTU drink clip give no alert;
* CCTV clips of the two sources the default recipe holds out (``configs/models/sarde-default.yaml``):
  fight clips give ``fighting`` (at least the share measured, see docs/REAL-VIDEO.md), their noFight
  clips stay quiet;
* GMDCSA24 falls give ``falling``; its daily-activity clips stay quiet.

Where the default model does not reach the target yet (the hug clip, vtest, basketball, two of the
three falls, one daily activity: docs/REAL-VIDEO.md) the target stays written as a test marked
``xfail``; the tests around it assert what the model does get right, at the measured level.
"""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("torch")

HELD_OUT_SOURCES = ("https://www.youtube.com/watch?v=Wwu20e9pfxg", "https://www.youtube.com/watch?v=d2xXLU4JKwI")


@pytest.fixture(scope="module")
def cfg(default_cfg):
    return default_cfg


def _clips(cfg, name: str):
    from pipeline.clips import load_clip_list

    return load_clip_list(REPO_ROOT / "configs" / "clips" / f"{name}.yaml", cfg.paths.data_dir)


@pytest.fixture(scope="module")
def results(cfg, default_model: Path):
    """Daemon results of every clip these tests look at, in one pass (clips run 8 at a time)."""
    from pipeline.video_eval import run_clips

    clips = _clips(cfg, "hug") + _clips(cfg, "quiet") + _clips(cfg, "gmdcsa24_s1")
    clips += [c for c in _clips(cfg, "fightsurv_dev") if c.group in HELD_OUT_SOURCES]
    res = run_clips(cfg, clips, default_model)
    for c in clips:
        print(f"{c.clip_id}: expected {c.alerts}, raised {res[c.clip_id]['alerts']}")
    return clips, res


def test_default_recipe_holds_out_the_test_sources(default_model):
    import json

    from pipeline.video_eval import heldout_groups

    manifest = json.loads(Path(default_model).read_text())
    split = manifest["splits"]["fightsurv"]
    assert sorted(split["test"]["subjects"]) == sorted(HELD_OUT_SOURCES)
    assert sorted(heldout_groups(default_model, "fightsurv")) == sorted(HELD_OUT_SOURCES)  # sarde eval video --heldout
    assert manifest["background"] == "normal" and "fighting" in manifest["labels"] and "falling" in manifest["labels"]


KNOWN = ("known defect of the default model, measured in docs/REAL-VIDEO.md; the test states the target "
         "(issue 13) and starts passing when the model does")


@pytest.mark.xfail(reason=KNOWN, strict=False)
def test_hug_clip_gives_hugging(results):
    clips, res = results
    hug = [c for c in clips if c.clip_id.startswith("hug/")]
    assert [res[c.clip_id]["alerts"] for c in hug] == [["hugging"]]


@pytest.mark.parametrize("stem", ["street", pytest.param("vtest", marks=pytest.mark.xfail(reason=KNOWN, strict=False)),
                                  pytest.param("basketball", marks=pytest.mark.xfail(reason=KNOWN, strict=False)),
                                  "ta_chi", "clean_and_jerk", "S001C001P001R001A001_rgb"])
def test_everyday_clips_stay_quiet(results, stem):
    clips, res = results
    clip = next(c for c in clips if c.clip_id.startswith("quiet/") and c.path.stem == stem)
    r = res[clip.clip_id]
    assert r["frames"] > 0 and r["windows"] > 0, r  # the daemon did look at people
    assert r["alerts"] == [], r


def test_held_out_cctv_fights_give_fighting(results):
    clips, res = results
    fights = [c for c in clips if c.clip_id.startswith("fightsurv_dev/fight/")]
    quiet = [c for c in clips if c.clip_id.startswith("fightsurv_dev/noFight/")]
    assert len(fights) == 12 and len(quiet) == 4
    hits = [c.clip_id for c in fights if "fighting" in res[c.clip_id]["alerts"]]
    alarms = [c.clip_id for c in quiet if res[c.clip_id]["alerts"]]
    print(f"\nheld-out CCTV: fighting on {len(hits)}/{len(fights)} fight clips; alerts on {alarms} of {len(quiet)} noFight clips")
    # measured with the default model on the 2-core AMD EPYC VM (leftover persons dropped, pair partners
    # of 5 joints or more): 4 of 12 (fi005, fi009, fi010, fi135; two clips give no window at all: the
    # detector finds nobody in most frames), false alarms on 0 of 4 (before the pair rule: 6 of 12 and
    # 2 of 4). A model retrained on another CPU differs in its floating point; the bounds leave one clip
    # of room each way and still fail a model that calls every clip a fight, or none
    assert len(hits) >= 3, hits
    assert len(alarms) <= 1, alarms
    assert not any(a not in ("fighting",) for c in fights + quiet for a in res[c.clip_id]["alerts"])


def test_falls_are_never_called_another_alert(results):
    clips, res = results
    falls = [c for c in clips if c.clip_id.startswith("gmdcsa24_s1/Fall/")]
    raised = [res[c.clip_id]["alerts"] for c in falls]
    assert all(set(r) <= {"falling"} for r in raised), raised  # a fall is never a fight or a hug


def test_held_out_urfd_falls_are_recognised(default_model):
    """Window level, real falls of held-out URFD videos (26-30): the manifest's held-out figures."""
    import json

    urfd = json.loads(Path(default_model).read_text())["heldout_metrics"]["urfd"]
    assert urfd["per_class"]["falling"]["n"] == 5 and urfd["per_class"]["falling"]["recall"] >= 0.6, urfd


@pytest.mark.xfail(reason=KNOWN, strict=False)
def test_every_fall_gives_falling_and_daily_activities_stay_quiet(results):
    # measured: falling on Fall/14 only, `fighting` on ADL/16 (docs/REAL-VIDEO.md)
    clips, res = results
    falls = [c for c in clips if c.clip_id.startswith("gmdcsa24_s1/Fall/")]
    adl = [c for c in clips if c.clip_id.startswith("gmdcsa24_s1/ADL/")]
    assert [("falling" in res[c.clip_id]["alerts"]) for c in falls] == [True, True, True]
    assert [res[c.clip_id]["alerts"] for c in adl] == [[], []]


def test_replayed_event_logic_gives_the_journal_alerts(cfg, results, default_model):
    """The operating curve replays the recorded window scores through the event logic: at the deployed
    threshold it must give exactly the alerts the daemon's journal holds, clip by clip, and a higher
    threshold can only lose alerts."""
    from engines.recognizer import Recognizer
    from pipeline.daemon import silent_labels
    from pipeline.operating_curve import operating_curve, replay_alerts, separation

    clips, res = results
    recognizer = Recognizer(default_model, providers=["cpu"])
    silent = silent_labels(cfg, recognizer)
    ev = cfg.events
    for c in clips:
        r = res[c.clip_id]
        assert len(r["window_scores"]) == r["windows"], c.clip_id  # every classified window carries its scores
        replayed = replay_alerts(r["window_scores"], recognizer.labels, threshold=ev.threshold, end_threshold=ev.end_threshold,
                                 smoothing=ev.smoothing, min_windows=ev.min_windows, silent=silent, pair_labels=ev.pair_labels,
                                 pair_min_joints=ev.pair_min_joints)
        assert replayed == r["alerts"], (c.clip_id, replayed, r["alerts"])
        assert all(len(w["joints"]) == len(w["track_ids"]) for w in r["window_scores"]), c.clip_id
    curve = operating_curve(clips, {c.clip_id: res[c.clip_id]["window_scores"] for c in clips}, recognizer.labels, ev, silent)
    deployed = next(row for row in curve["rows"] if row["threshold"] == curve["deployed"])
    assert deployed["quiet_with_any_alert"] == sum(1 for c in clips if not c.alerts and res[c.clip_id]["alerts"])
    falls = [c for c in clips if c.clip_id.startswith("gmdcsa24_s1/")]  # 3 falls against 2 daily activities
    sep = separation(falls, {c.clip_id: res[c.clip_id]["window_scores"] for c in falls}, recognizer.labels, ev, silent)
    assert sep["falling"]["clips"] == [3, 2] and sep["falling"]["clip_auc"] >= 0.8, sep  # measured 1.000 (AUC)
    hits = [row["per_label"]["fighting"]["hits"] for row in curve["rows"]]
    alarms = [row["quiet_with_any_alert"] for row in curve["rows"]]
    assert hits == sorted(hits, reverse=True) and alarms == sorted(alarms, reverse=True), (hits, alarms)
