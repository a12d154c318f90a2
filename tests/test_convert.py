"""The public converters (engines.datasets.convert, `sarde data`): joint maps as data, pinhole projection,
irregular timestamps, labelled segments, daemon recordings; checked by hand and against the built-in readers."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engines.datasets.convert import (ConvertError, Pinhole, cut_segments, read_recording, read_segments,
                                      read_skeleton_jsonl, resample_to_rate, to_opencv_frame)
from engines.datasets.generic import load_npz
from engines.layouts import COCO18_NAMES, JointMap, load_joint_map

ROOT = Path(__file__).resolve().parents[1]
MAPS = ROOT / "configs" / "joint_maps"


def _sarde(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd or ROOT)


def test_coco17_map_synthesises_the_neck_only_where_both_shoulders_are():
    jm = load_joint_map(MAPS / "coco17.yaml")
    joints = np.zeros((2, 17, 3), np.float32)
    joints[:, 5] = [100, 50, 0.9]   # l_shoulder
    joints[:, 6] = [60, 54, 0.8]    # r_shoulder
    joints[:, 0] = [80, 20, 1.0]    # nose
    valid = joints[..., 2] > 0
    valid[1, 6] = False             # frame 1: right shoulder not detected
    out, ok = jm.apply(joints, valid)
    neck = COCO18_NAMES.index("neck")
    assert out[0, neck].tolist() == pytest.approx([80, 52, 0.85]) and ok[0, neck]
    assert not ok[1, neck] and out[1, neck].tolist() == [0, 0, 0]
    assert out[0, COCO18_NAMES.index("r_shoulder")].tolist() == pytest.approx([60, 54, 0.8])
    assert not ok[0, COCO18_NAMES.index("r_ankle")]  # not observed in the source


@pytest.mark.parametrize("mapping, needle", [
    ({"coco18": {"noze": 0}}, "noze"), ({"source": ["a"], "coco18": {"nose": "b"}}, "'b'"),
    ({"coco18": {}}, "coco18"), ({"coco18": {"nose": 0}, "src": []}, "src"),
])
def test_joint_map_errors_name_the_entry(mapping, needle):
    with pytest.raises(ValueError, match=needle):
        JointMap(mapping)


def test_pinhole_and_axes_by_hand():
    cam = Pinhole(500.0, 400.0, 320.0, 240.0, 640, 480)
    # Kinect skeleton space (x to the sensor's left, y up) -> OpenCV: X = -x, Y = -y
    p = to_opencv_frame(np.array([[0.2, 0.5, 2.0]]), "-x,-y,z")
    assert p[0].tolist() == pytest.approx([-0.2, -0.5, 2.0])
    assert cam.project(p)[0].tolist() == pytest.approx([320 - 500 * 0.1, 240 - 400 * 0.25])
    with pytest.raises(ConvertError, match="permutation"):
        to_opencv_frame(p, "x,x,z")


def test_irregular_timestamps_resampled_by_hand():
    t = np.array([0.0, 0.05, 0.2, 0.9, 1.0])
    x = np.array([0.0, 10.0, 40.0, 100.0, 120.0])[:, None, None]  # (T, 1 joint, 1 channel)
    valid = np.ones((5, 1), bool)
    t_new, v, ok = resample_to_rate(t, x, valid, fps=10.0, max_gap_s=0.25)
    assert t_new.tolist() == pytest.approx([0.1 * k for k in range(11)])
    assert v[:3, 0, 0].tolist() == pytest.approx([0.0, 20.0, 40.0])  # 0.1 s: between 10 @0.05 and 40 @0.2
    assert not ok[3:9, 0].any() and (v[3:9] == 0).all()  # 0.2 .. 0.9 s is a 0.7 s gap: stays a gap
    assert ok[9:, 0].all() and v[10, 0, 0] == pytest.approx(120.0)
    with pytest.raises(ConvertError, match="non-decreasing"):
        resample_to_rate(t[::-1], x, valid, 10.0)


def _utd_records(shared_dir, names):
    from scipy.io import loadmat

    root = shared_dir / "data" / "skeletons" / "utd_mhad" / "skeleton"
    recs = []
    for name in names:
        xyz = loadmat(root / f"{name}_skeleton.mat")["d_skel"].transpose(2, 0, 1)  # (T, 20, 3)
        recs.append({"name": name, "label": name.split("_")[0], "subject": name.split("_")[1], "fps": 30,
                     "joints": xyz[:, None].tolist()})
    return recs


def test_kinect_skeletons_through_the_converter_equal_the_builtin_reader(shared_dir, tmp_path):
    """UTD-MHAD as a user's own data: the joint map, axes and pinhole given as data reproduce the
    project's own UTD reader, and one joint checked by hand against the raw file."""
    from scipy.io import loadmat

    from engines.datasets.utd import read_sequence

    names = ["a1_s1_t1", "a23_s2_t3", "a27_s8_t3"]
    src = tmp_path / "utd.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _utd_records(shared_dir, names)))
    seqs = read_skeleton_jsonl(src, load_joint_map(MAPS / "kinect_v1_20.yaml"), coords="camera",
                               camera=Pinhole(285.7, 285.7, 160, 120, 320, 240), axes="-x,-y,z")
    root = shared_dir / "data" / "skeletons" / "utd_mhad" / "skeleton"
    for seq, name in zip(seqs, names):
        ref = read_sequence(root / f"{name}_skeleton.mat")
        np.testing.assert_allclose(seq.keypoints, ref.keypoints, atol=1e-3)
        np.testing.assert_allclose(seq.depth, ref.depth, atol=1e-5)
        np.testing.assert_allclose(seq.points3d, ref.points3d, atol=1e-5)
        assert (seq.fps, seq.frame_size, seq.label, seq.subject) == (30.0, (320, 240), name.split("_")[0], name.split("_")[1])
    # by hand: frame 0 of a1_s1_t1, Kinect joint 11 (right wrist) -> COCO-18 joint 4
    x, y, z = loadmat(root / "a1_s1_t1_skeleton.mat")["d_skel"][10, :, 0]
    assert seqs[0].keypoints[0, 0, 4].tolist() == pytest.approx([160 - 285.7 * x / z, 120 - 285.7 * y / z, 1.0], abs=1e-3)
    assert seqs[0].meta["t"][:3].tolist() == pytest.approx([0, 1 / 30, 2 / 30])


def test_gmdcsa_segments_csv_parsed(shared_dir):
    segs = read_segments(shared_dir / "data" / "videos" / "gmdcsa24_s1" / "Fall.csv")
    by_clip = {}
    for s in segs:
        by_clip.setdefault(s.clip, []).append((s.label, s.start, s.end))
    assert by_clip["14.mp4"] == [("falling", 0.3, 5.0), ("standing", 0.0, 0.2)]
    assert by_clip["15.mp4"] == [("falling", 1.8, 6.0), ("sitting", 0.0, 2.0)]


def test_recording_with_irregular_timestamps_cut_into_labelled_segments(tmp_path):
    """A daemon recording written by the real PoseRecorder (a 25 fps file decimated to 15 fps: uneven
    steps), two tracked persons, cut by a clip,label,start,end CSV."""
    from pipeline.recorder import PoseRecorder

    rec = PoseRecorder(tmp_path / "poses.jsonl")
    ts0, kept = 1.7e9, [f for f in range(75) if int(f * 15 / 25) != int((f - 1) * 15 / 25) or f == 0]
    for f in kept:  # 3 s at 25 fps, 45 frames kept
        people = np.zeros((2, 18, 3), np.float32)
        people[0, :, :2], people[0, :, 2] = [100 + f, 50], 0.9
        people[1, :, :2], people[1, :, 2] = [300 - f, 60], 0.8
        rec.write("cam7", f, ts0 + f / 25, (640, 360), people, [(3, 0), (9, 1)])
    rec.close()
    seqs = read_recording(tmp_path / "poses.jsonl", subject="site-a")
    assert len(seqs) == 1 and seqs[0].name == "cam7" and seqs[0].fps == 15.0
    assert len(seqs[0].keypoints) == 45 and seqs[0].meta["t"][-1] == pytest.approx(44 / 15)
    # frame k of the 15 fps sequence lies at k/15 s: person 0's x there is 100 + 25 k/15 (linear in time)
    assert seqs[0].keypoints[9, 0, 0, 0] == pytest.approx(100 + 25 * 9 / 15, abs=1e-3)
    assert seqs[0].keypoints[9, 1, 0, 0] == pytest.approx(300 - 25 * 9 / 15, abs=1e-3)
    csv = tmp_path / "labels.csv"
    csv.write_text("clip,label,start,end\ncam7,fighting,1.0,2.0\ncam7,normal,2.5,3.0\nother,normal,0,1\n")
    cuts = cut_segments(seqs, read_segments(csv))
    assert [(c.label, len(c.keypoints), c.subject) for c in cuts] == [("fighting", 16, "site-a"), ("normal", 7, "site-a")]
    with pytest.raises(ConvertError, match="matches"):
        cut_segments(seqs, read_segments(csv)[2:])


def test_cli_convert_then_info(shared_dir, tmp_path):
    src = tmp_path / "utd.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in _utd_records(shared_dir, ["a1_s1_t1", "a2_s2_t1"])))
    out = tmp_path / "own.npz"
    r = _sarde("data", "convert", "skeletons", src, "--joint-map", MAPS / "kinect_v1_20.yaml", "--coords", "camera",
               "--intrinsics", "285.7,285.7,160,120", "--frame-size", "320x240", "--axes=-x,-y,z", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "2 sequences" in r.stdout and "labels: a1 1, a2 1" in r.stdout and "groups: s1 1, s2 1" in r.stdout
    seqs = load_npz(out)
    assert [s.name for s in seqs] == ["a1_s1_t1", "a2_s2_t1"] and seqs[0].points3d is not None
    r = _sarde("data", "info", out)
    assert r.returncode == 0 and "depth yes, 3D yes" in r.stdout


@pytest.mark.parametrize("args, needle", [
    (["skeletons", "{src}", "--out", "{out}"], "--joint-map"),
    (["skeletons", "{src}", "--joint-map", "{maps}/coco17.yaml", "--frame-size", "320x240", "--out", "{out}"],
     "joint map expects 17"),
    (["skeletons", "{src}", "--joint-map", "{maps}/kinect_v1_20.yaml", "--coords", "camera", "--out", "{out}"],
     "--intrinsics"),
    (["skeletons", "{src}", "--joint-map", "{maps}/kinect_v1_20.yaml", "--coords", "camera", "--intrinsics",
      "285.7,285.7,160,120", "--frame-size", "320x240", "--axes=x,y,-z", "--out", "{out}"], "behind the camera"),
    (["skeletons", "{tmp}/missing.jsonl", "--joint-map", "{maps}/coco17.yaml", "--out", "{out}"], "no such file"),
    (["recording", "{src}", "--out", "{out}"], "not a daemon recording"),
])
def test_cli_convert_errors_exit_2_with_one_line(shared_dir, tmp_path, args, needle):
    src = tmp_path / "utd.jsonl"
    src.write_text(json.dumps(_utd_records(shared_dir, ["a1_s1_t1"])[0]) + "\n")
    fill = {"src": src, "out": tmp_path / "o.npz", "maps": MAPS, "tmp": tmp_path}
    r = _sarde("data", "convert", *[a.format(**fill) for a in args])
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith("sarde: error:") and needle in err[-1], r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "o.npz").exists()


def test_labelling_loop_on_a_real_fall_recorded_by_the_daemon(shared_dir, detector_onnx, artifact_cache, tmp_path):
    """Record (the daemon itself, record-only), cut and label (GMDCSA24's own Fall.csv), convert: the
    real fall clip 14 becomes a `falling` sequence of the person the detector tracked, at 15 fps."""
    videos = shared_dir / "data" / "videos" / "gmdcsa24_s1"
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"paths: {{data_dir: '{shared_dir / 'data'}', pose_model_dir: '{shared_dir / 'models' / 'pose'}', "
        f"artifact_dir: '{artifact_cache}'}}\n"
        f"transport: {{frames_endpoint: 'ipc://{tmp_path}/f.sock'}}\n"
        "recognizer: {model: none}\n"
        "events: {pub_endpoint: null, journal: null, stdout: false}\n"
        "metrics: {enabled: false}\n"
        f"record_poses: '{tmp_path}/poses.jsonl'\n")
    r = _sarde("run", "--config", cfg, "--source", videos / "Fall" / "14.mp4", "--no-progress")
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "fall.npz"
    r = _sarde("data", "convert", "recording", tmp_path / "poses.jsonl", "--segments", videos / "Fall.csv",
               "--subject", "gmdcsa24-s1", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    seqs = load_npz(out)
    # Fall.csv, clip 14: Falling (BW)[0.3 to 5]; Standing[0 to 0.2] (3 frames at 15 fps: below --min-frames 5)
    assert [(s.name, s.label, s.subject) for s in seqs] == [("14@0.3-5", "falling", "gmdcsa24-s1")]
    kp = seqs[0].keypoints  # (T, M, 18, 3)
    assert seqs[0].fps == 15.0 and 60 <= len(kp) <= 72  # 4.7 s of a 5 s clip
    seen = (kp[..., 2] > 0).any(-1)
    assert seen[:, 0].mean() > 0.5  # the subject is tracked in most frames of the fall
