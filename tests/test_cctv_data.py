"""Clip lists, daemon recordings, the windows they turn into, recipe datasets and their validation."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_fightsurv_clip_list_groups_by_source(shared_dir):
    from pipeline.clips import load_clip_list

    clips = load_clip_list(REPO_ROOT / "configs/clips/fightsurv_dev.yaml", shared_dir / "data")
    assert len(clips) == 181
    assert sum(c.alerts == ["fighting"] for c in clips) == 88 and sum(c.alerts == [] for c in clips) == 93
    sources = json.loads((shared_dir / "data/videos/fightsurv_dev/sources.json").read_text())
    assert all(c.group == sources[c.path.stem] for c in clips)
    assert len({c.group for c in clips}) == 25
    by_id = {c.clip_id: c for c in clips}
    assert by_id["fightsurv_dev/fight/fi001"].group == "https://www.youtube.com/watch?v=7q6KJoSgxmY"
    assert by_id["fightsurv_dev/noFight/nofi001"].label == "normal"


def test_clip_list_errors_are_one_line(tmp_path, shared_dir):
    from pipeline.clips import load_clip_list
    from pipeline.config import ConfigError

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nclips:\n  - {path: videos/vtest/vtest.avi, alert: [fighting]}\n")
    with pytest.raises(ConfigError, match="alert"):
        load_clip_list(bad, shared_dir / "data")
    bad.write_text("name: x\nclips:\n  - {path: videos/nope.mp4}\n")
    with pytest.raises(ConfigError, match="not found"):
        load_clip_list(bad, shared_dir / "data")
    bad.write_text("name: x\ninclude:\n  - {glob: videos/none/*.mp4}\n")
    with pytest.raises(ConfigError, match="matches no file"):
        load_clip_list(bad, shared_dir / "data")


def test_group_folds_never_split_a_source(shared_dir):
    from pipeline.clips import load_clip_list
    from engines.datasets.splits import group_folds

    clips = load_clip_list(REPO_ROOT / "configs/clips/fightsurv_dev.yaml", shared_dir / "data")
    folds = group_folds([c.group for c in clips], 5)
    groups = [g for f in folds for g in f]
    assert sorted(groups) == sorted({c.group for c in clips}) and len(groups) == len(set(groups))
    sizes = [sum(c.group in set(f) for c in clips) for f in folds]
    assert sum(sizes) == 181 and max(sizes) - min(sizes) <= 12, sizes
    assert group_folds([c.group for c in clips], 5) == folds  # deterministic


def _write_recording(tmp_path: Path) -> tuple[Path, Path]:
    """Five frames of two tracks (ids 3 and 7) in a 640x480 image, and the two windows built on them."""
    poses = tmp_path / "rec.poses.jsonl"
    lines = []
    for f in range(5):
        a = np.zeros((18, 3)); a[1] = (100 + f, 200, 0.9)  # neck of track 3 moves right
        b = np.zeros((18, 3)); b[1] = (300, 220 - f, 0.8)
        lines.append(json.dumps({"camera": "c0", "frame": f, "ts": 1000.0 + f / 15, "width": 640, "height": 480,
                                 "persons": [a.tolist(), b.tolist()], "track_ids": [3, 7]}))
    poses.write_text("\n".join(lines) + "\n")
    windows = tmp_path / "rec.windows.jsonl"
    windows.write_text(json.dumps({"camera": "c0", "track_ids": [3, 7], "start_frame": 0, "end_frame": 4, "valid_frames": 5})
                       + "\n" + json.dumps({"camera": "c0", "track_ids": [7], "start_frame": 1, "end_frame": 4, "valid_frames": 4}) + "\n")
    return poses, windows


def test_recording_windows_inherit_the_clip_label(tmp_path):
    from engines.sarde.datasets import recording_sequences

    poses, windows = _write_recording(tmp_path)
    seqs = recording_sequences(poses, windows, "fighting", "src1", "fight/fi1", num_frames=150)
    assert [s.label for s in seqs] == ["fighting", None]  # a single person in a fight clip: no label
    pair, single = seqs
    assert pair.keypoints.shape == (5, 2, 18, 3) and single.keypoints.shape == (4, 1, 18, 3)
    assert pair.frame_size == (640, 480) and pair.subject == "src1" and abs(pair.fps - 15.0) < 1e-6
    np.testing.assert_allclose(pair.keypoints[2, 0, 1], (102, 200, 0.9), rtol=1e-6)  # track 3 in slot 0
    np.testing.assert_allclose(single.keypoints[0, 0, 1], (300, 219, 0.8), rtol=1e-6)  # frame 1 of track 7
    quiet = recording_sequences(poses, windows, "normal", "src1", "noFight/n1")
    assert [s.label for s in quiet] == ["normal", "normal"]


def test_recipe_dataset_validation():
    from engines.sarde.datasets import RecipeError, map_label, validate_entry

    with pytest.raises(RecipeError, match="unknown key"):
        validate_entry({"name": "sbu", "reader": "sbu", "repeats": 2}, 0)
    with pytest.raises(RecipeError, match="reader"):
        validate_entry({"name": "x", "reader": "kinetics"}, 0)
    with pytest.raises(RecipeError, match="sbu_fold"):
        validate_entry({"name": "m", "reader": "msr", "test": {"sbu_fold": 1}}, 0)
    labels = ["fighting", "normal"]
    entry = {"label_map": {"kicking": "fighting", "*": "normal"}, "drop_labels": ["side_kick"]}
    assert map_label("kicking", entry, labels) == "fighting"
    assert map_label("high_arm_wave", entry, labels) == "normal"
    assert map_label("side_kick", entry, labels) is None
    assert map_label("hugging", {}, labels) is None  # not a class of the model


def test_recipe_unknown_keys_rejected():
    import yaml

    from engines.sarde.datasets import RecipeError
    from engines.sarde.recipes import check_recipe_keys

    recipe = yaml.safe_load((REPO_ROOT / "configs/models/sarde-default.yaml").read_text())
    check_recipe_keys(recipe)
    for section, key in (("train", "epoch"), ("window", "mask"), (None, "dataset")):
        bad = json.loads(json.dumps(recipe))
        (bad if section is None else bad[section])[key] = 1
        with pytest.raises(RecipeError, match=key):
            check_recipe_keys(bad)


def test_default_recipe_datasets_and_splits(shared_dir):
    """Label maps of the real datasets: SBU strikes -> fighting, MSR/UTD -> normal minus strikes, URFD."""
    import yaml

    from engines.sarde.datasets import load_datasets

    recipe = yaml.safe_load((REPO_ROOT / "configs/models/sarde-default.yaml").read_text())
    recipe["datasets"] = [d for d in recipe["datasets"] if d["reader"] != "recordings"]
    parts = {p.name: p for p in load_datasets(recipe, shared_dir / "data")}
    sbu = parts["sbu"]
    assert {s.label for s in sbu.train} == {"fighting", "hugging", "shaking_hands", "exchanging", "approaching", "departing"}
    assert not {s.subject for s in sbu.train} & {s.subject for s in sbu.test}
    msr = parts["msr"]
    assert {s.label for s in msr.train} == {"normal", None}
    assert sum(s.label is None for s in msr.train) == sum(s.meta["action"] in (5, 12, 14, 15) for s in msr.train)
    assert {int(s.subject) for s in msr.test} == {2, 4, 6, 8, 10}
    urfd = parts["urfd"]
    assert {s.label for s in urfd.train} == {"falling", "normal"}
    assert {s.subject for s in urfd.test} == {f"fall-{i}" for i in range(26, 31)}


def test_recordings_are_cached_and_made_by_the_daemon(default_cfg, artifact_cache, default_model):
    """The default model's build recorded fightsurv_dev with the daemon; asking again records nothing."""
    import cv2

    from pipeline.clips import load_clip_list
    from pipeline.recordings import ensure_recordings

    cfg = default_cfg
    clips = [c for c in load_clip_list(REPO_ROOT / "configs/clips/fightsurv_dev.yaml", cfg.paths.data_dir)
             if c.path.stem in ("fi001", "nofi001")]
    before = {p: p.stat().st_mtime for p in artifact_cache.glob("recordings/*/*.done")}
    bases = ensure_recordings(cfg, clips, progress=False)
    after = {p: p.stat().st_mtime for p in artifact_cache.glob("recordings/*/*.done")}
    assert before == after  # nothing re-recorded
    for clip in clips:
        done = json.loads(bases[clip.clip_id].with_suffix(".done").read_text())
        cap = cv2.VideoCapture(str(clip.path))
        n, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS)
        cap.release()
        expected = n if fps <= 15.5 else int(np.ceil(n * 15.0 / fps))
        assert abs(done["frames"] - expected) <= 1, (clip.clip_id, done, n, fps)  # decimated to 15 fps


def test_masked_joints_do_not_change_scores(default_model):
    from engines.recognizer import Recognizer

    rec = Recognizer(default_model, providers=["cpu"])
    assert rec.masked_joints == [14, 15, 16, 17]
    rng = np.random.default_rng(0)
    x = np.zeros((2, 3, 150, 18, 2), np.float32)
    x[:, :2, 100:] = rng.normal(0, 0.2, (2, 2, 50, 18, 2))
    x[:, 2, 100:] = 0.9
    zeroed = x.copy()
    zeroed[:, :, :, 14:18] = 0
    np.testing.assert_allclose(rec.classify(x)[0], rec.classify(zeroed)[0], atol=1e-6)


def test_video_scores_hand_checked():
    """Recall, false alarms, precision and time to alert of `sarde eval video` on hand-made outcomes."""
    from pipeline.clips import Clip, Segment
    from pipeline.video_eval import score

    def clip(cid, alerts, segments=()):
        return Clip(clip_id=cid, path=Path("/x.mp4"), alerts=alerts, label=None, segments=list(segments), group="g")

    clips = [clip("f1", ["fighting"]), clip("f2", ["fighting"]), clip("f3", ["fighting"]),
             clip("fall", ["falling"], [Segment(label="falling", start=1.0, end=3.0)]),
             clip("q1", []), clip("q2", []), clip("q3", []), clip("q4", [])]
    res = {c.clip_id: {"alerts": [], "first_start_s": {}} for c in clips}
    res["f1"] = {"alerts": ["fighting"], "first_start_s": {"fighting": 2.0}}
    res["f2"] = {"alerts": ["fighting"], "first_start_s": {"fighting": 4.0}}
    res["fall"] = {"alerts": ["falling"], "first_start_s": {"falling": 2.5}}
    res["q1"] = {"alerts": ["fighting"], "first_start_s": {"fighting": 1.0}}
    s = score(clips, res, ["fighting", "falling", "hugging"])
    f = s["per_label"]["fighting"]
    assert (f["clips_expected"], f["recall"], f["false_alarm_clips"], f["false_alarm_rate"]) == (3, 2 / 3, 1, 0.25)
    assert f["precision"] == 2 / 3 and f["time_to_alert_s_median"] == 3.0
    assert s["per_label"]["falling"]["time_to_alert_s_median"] == 1.5  # from the segment start, not the clip start
    assert "hugging" not in s["per_label"] and s["quiet_with_any_alert"] == 1
    assert s["clip_accuracy"] == 6 / 8  # f3 missed, q1 false alarm
