"""The exported detector + PAF grouping on real frames from ``../shared/data``.

* NTU sample: detections mapped back to 1920x1080 against the Kinect colour-space joints.
* ``pyskl/ntu_hug.avi``: two clearly separated persons in frames 0-20 (checked by eye).
* ONNX vs TFLite parity, from the manifest and recomputed on one frame.
* Missing / corrupt manifests and model files raise ``ManifestError`` / ``ModelLoadError``.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from engines.datasets.ntu import read_ntu_skeleton
from engines.detector import ManifestError, ModelLoadError, PoseDetector
from export.detector import PARITY_TOLERANCE
from engines.letterbox import letterbox, unletterbox

NTU = "S001C001P001R001A001"
#: COCO-18 joints the Kinect skeleton also has with the same meaning: neck, shoulders, elbows,
#: wrists, hips, knees, ankles (not nose/eyes/ears, which all take Kinect's head centre).
BODY13 = list(range(1, 14))
#: COCO-18 index of the opposite side's joint (left <-> right).
MIRROR = [0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16]


def read_frames(path: Path, indices) -> list[np.ndarray]:
    """Frames ``indices`` (ascending) of a video, BGR, decoded sequentially (seeking is slow)."""
    wanted = set(indices)
    cap = cv2.VideoCapture(str(path))
    frames = []
    try:
        for i in range(max(indices) + 1):
            ok, frame = cap.read()
            if not ok:
                raise RuntimeError(f"cannot read frame {i} of {path}")
            if i in wanted:
                frames.append(frame)
    finally:
        cap.release()
    return frames


@pytest.fixture(scope="module")
def detector(detector_onnx) -> PoseDetector:
    return PoseDetector(detector_onnx, providers=("cpu",), intra_op_threads=2)


def test_detector_api(detector, shared_dir):
    assert detector.input_size == (432, 368)
    assert "CPUExecutionProvider" in detector.providers
    assert detector.channel_order == "BGR"
    frames = read_frames(shared_dir / "data/videos/pyskl/ntu_hug.avi", [0, 10, 20])
    batch = np.stack([letterbox(f, detector.input_size)[0] for f in frames])  # (3, 368, 432, 3)
    raw = detector.raw(batch)
    assert raw.shape == (3, 46, 54, 57) and raw.dtype == np.float32
    if detector.dynamic_batch:  # batched run must equal frame-by-frame runs
        single = np.concatenate([detector.raw(b[None]) for b in batch])
        assert np.abs(raw - single).max() < 1e-4
    persons = detector.infer(batch)
    assert len(persons) == 3 and all(p.shape[1:] == (18, 3) and p.dtype == np.float32 for p in persons)
    assert detector.infer(batch[:0]) == []
    with pytest.raises(ValueError):
        detector.infer(batch.astype(np.float32))
    with pytest.raises(ValueError):
        detector.infer(batch[:, :300])


def test_ntu_sample_against_kinect(detector, shared_dir):
    seq = read_ntu_skeleton(shared_dir / f"data/skeletons/ntu_sample/{NTU}.skeleton")
    assert seq.keypoints.shape == (103, 1, 18, 3) and seq.frame_size == (1920, 1080)
    assert seq.label == "drink water" and seq.fps == 30 and seq.subject == 1
    assert 3.0 < float(np.median(seq.depth[seq.depth > 0])) < 4.5  # metres from the camera
    indices = list(range(0, 103, 2))
    frames = read_frames(shared_dir / f"data/videos/ntu/{NTU}_rgb.avi", indices)
    boxed = [letterbox(f, detector.input_size) for f in frames]
    batch = np.stack([b[0] for b in boxed])
    t0 = time.perf_counter()
    raw = np.concatenate([detector.raw(batch[i:i + 4]) for i in range(0, len(batch), 4)])
    t1 = time.perf_counter()
    persons = [detector.decoder.decode(o) for o in raw]
    t2 = time.perf_counter()
    counts = np.array([len(p) for p in persons])
    errors, mirrored, found = [], [], 0
    for people, (_, scale, pad), t in zip(persons, boxed, indices):
        if len(people) == 0:
            continue
        kp = unletterbox(people[0], scale, pad)  # (18, 3) in 1920x1080 pixels
        gt = seq.keypoints[t, 0]
        ok = (kp[BODY13, 2] > 0) & (gt[BODY13, 2] > 0)
        found += int(ok.sum())
        joints = np.array(BODY13)[ok]
        errors.extend(np.linalg.norm(kp[joints, :2] - gt[joints, :2], axis=1))
        mirrored.extend(np.linalg.norm(kp[joints, :2] - gt[MIRROR][joints, :2], axis=1))
    median, mirrored_median = float(np.median(errors)), float(np.median(mirrored))
    height = float(np.ptp(seq.keypoints[0, 0, :14, 1]))
    print(f"\nNTU {NTU}: {len(indices)} frames, persons/frame {np.bincount(counts)}, {found} joints matched; "
          f"median error {median:.1f} px (person ~{height:.0f} px tall), with sides swapped {mirrored_median:.1f} px; "
          f"detector {1000 * (t1 - t0) / len(batch):.1f} ms/frame (batch 4), "
          f"decoder {1000 * (t2 - t1) / len(batch):.2f} ms/frame")
    assert (counts == 1).mean() >= 0.95, counts
    assert found >= 0.9 * 13 * len(indices)
    # Measured 15.4 px; part of it is Kinect's vs OpenPose's joint definitions (hips above all).
    assert median < 25.0
    # The COCO-18 table maps Kinect's sides the way the detector sees the image (engines.layouts).
    assert median < 0.6 * mirrored_median


def test_two_persons_in_hug_clip(detector, shared_dir):
    indices = [0, 5, 10, 15, 20]  # both persons standing apart, fully visible (see module docstring)
    frames = read_frames(shared_dir / "data/videos/pyskl/ntu_hug.avi", indices)
    batch = np.stack([letterbox(f, detector.input_size)[0] for f in frames])
    persons = detector.infer(batch)
    assert [len(p) for p in persons] == [2] * len(indices)
    for people in persons:
        necks = np.sort(people[:, 1, 0])
        assert (people[:, 1, 2] > 0).all() and necks[1] - necks[0] > 20  # two distinct necks
        assert ((people[:, :14, 2] > 0).sum(1) >= 12).all()  # nearly complete bodies


def test_parity_in_manifest(detector_onnx):
    m = json.loads(Path(detector_onnx).read_text())
    parity = m["parity"]
    print(f"\nONNX vs TFLite: max abs diff {parity['max_abs_diff']:.5f} over {parity['num_frames']} frames")
    assert parity["reference"] == "tflite interpreter" and parity["num_frames"] >= 2
    assert 0.0 <= parity["max_abs_diff"] <= PARITY_TOLERANCE
    assert m["input"]["layout"] == "NHWC" and m["input"]["channel_order"] == "BGR"
    assert m["output"]["paf_channels"] == [19, 57] and m["output"]["stride"] == 8
    assert set(m["versions"]) >= {"tf", "tf2onnx", "onnx", "onnxruntime"}


@pytest.mark.filterwarnings("ignore::UserWarning:tensorflow.lite.python.interpreter")
def test_parity_recomputed(detector, shared_dir):
    tf = pytest.importorskip("tensorflow")
    frame = letterbox(read_frames(shared_dir / f"data/videos/ntu/{NTU}_rgb.avi", [30])[0], detector.input_size)[0]
    interpreter = tf.lite.Interpreter(model_path=detector.manifest["source"], num_threads=2)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], frame[None].astype(np.float32))
    interpreter.invoke()
    reference = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    diff = float(np.abs(detector.raw(frame[None]) - reference).max())
    assert diff <= PARITY_TOLERANCE, diff


def _copy_export(detector_onnx: Path, dest: Path) -> tuple[Path, dict]:
    m = json.loads(Path(detector_onnx).read_text())
    shutil.copy(Path(detector_onnx).parent / m["onnx"], dest / m["onnx"])
    manifest = dest / "detector.json"
    manifest.write_text(json.dumps(m))
    return manifest, m


def test_missing_and_corrupt_files(detector_onnx, tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        PoseDetector(tmp_path / "nope.json", providers=("cpu",))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ManifestError, match="bad.json"):
        PoseDetector(bad, providers=("cpu",))
    bad.write_text(json.dumps({"onnx": "x.onnx"}))
    with pytest.raises(ManifestError, match="lacks required field"):
        PoseDetector(bad, providers=("cpu",))

    manifest, m = _copy_export(detector_onnx, tmp_path)
    onnx_path = tmp_path / m["onnx"]
    onnx_path.write_bytes(onnx_path.read_bytes()[:1000])  # truncated
    with pytest.raises(ModelLoadError, match="sha256"):
        PoseDetector(manifest, providers=("cpu",))
    with pytest.raises(ModelLoadError, match="cannot load"):
        PoseDetector(manifest, providers=("cpu",), verify_sha256=False)
    onnx_path.unlink()
    with pytest.raises(ModelLoadError, match="not found"):
        PoseDetector(manifest, providers=("cpu",))


def test_manifest_model_mismatch(detector_onnx, tmp_path):
    manifest, m = _copy_export(detector_onnx, tmp_path)
    m["input_size"] = {"width": 656, "height": 368}
    manifest.write_text(json.dumps(m))
    with pytest.raises(ModelLoadError, match="does not match"):
        PoseDetector(manifest, providers=("cpu",))


def test_export_rejects_missing_and_corrupt_weights(tmp_path):
    pytest.importorskip("tf2onnx")
    from export.detector import ExportError, export_detector

    with pytest.raises(FileNotFoundError):
        export_detector(tmp_path / "missing.tflite", tmp_path)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\x00" * 256)
    with pytest.raises(ExportError, match="cannot load TFLite model"):
        export_detector(junk, tmp_path)
    assert not list(tmp_path.glob("*.onnx"))


def test_ntu_reader_raw_and_errors(shared_dir, tmp_path):
    from engines.datasets.ntu import NtuFormatError, parse_ntu_skeleton

    path = shared_dir / f"data/skeletons/ntu_sample/{NTU}.skeleton"
    raw = parse_ntu_skeleton(path)
    assert raw.joints.shape == (103, 1, 25, 12) and raw.present.all() and raw.body_ids == ["72057594037931101"]
    # First joint of the first frame, as in the file: x y z depthX depthY colorX colorY ... state.
    np.testing.assert_allclose(raw.joints[0, 0, 0, [0, 2, 5, 6, 11]], [0.2181153, 3.785547, 1036.233, 519.1677, 2], rtol=1e-6)
    seq = read_ntu_skeleton(path)
    # COCO R-shoulder <- Kinect ShoulderLeft (joint 5), neck <- SpineShoulder (21): engines.layouts.
    np.testing.assert_allclose(seq.keypoints[0, 0, 2], [*raw.joints[0, 0, 4, 5:7], 1.0])
    np.testing.assert_allclose(seq.keypoints[0, 0, 1], [*raw.joints[0, 0, 20, 5:7], 1.0])
    assert seq.depth[0, 0, 1] == pytest.approx(raw.joints[0, 0, 20, 2])
    lines = path.read_text().splitlines()
    truncated = tmp_path / f"{NTU}.skeleton"
    truncated.write_text("\n".join(lines[:40]))
    with pytest.raises(NtuFormatError, match="unexpected end of file"):
        parse_ntu_skeleton(truncated)
    truncated.write_text("\n".join(lines[:5] + ["1 2 x"] + lines[6:]))
    with pytest.raises(NtuFormatError, match=":6:"):
        parse_ntu_skeleton(truncated)


def test_without_memory_arena_same_persons_on_real_frames(detector, detector_onnx, shared_dir):
    """`detector.cpu_memory_arena: false` (less resident memory, slower at batch 4) changes where
    onnxruntime's buffers live, not what the detector finds: the same persons on real frames."""
    lean = PoseDetector(detector_onnx, providers=("cpu",), intra_op_threads=2, memory_arena=False)
    assert lean.model.session.get_session_options().enable_cpu_mem_arena is False
    assert detector.model.session.get_session_options().enable_cpu_mem_arena is True
    frames = read_frames(shared_dir / "data/videos/pyskl/ntu_hug.avi", [0, 10, 20, 30])
    batch = np.stack([letterbox(f, detector.input_size)[0] for f in frames])
    for a, b in zip(detector.infer(batch), lean.infer(batch)):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-3



@pytest.mark.parametrize("clip, before_min, after_max", [
    ("gmdcsa24_s1/Fall/13.mp4", 12, 5),   # one person at home; measured 15 -> 3 of 65 frames
    ("stgcn/ta_chi.mp4", 65, 42),          # one person; measured 74 -> 33 of 150 frames
    ("fightsurv_dev/fight/fi004.mp4", 45, None),  # real CCTV fight: two people or more in 47 of 47, kept
])
def test_duplicate_persons_on_real_frames(detector, shared_dir, clip, before_min, after_max):
    """Ghost partners of a lone person (a mirrored leg or arm grouped on its own) go; real people stay.

    Frames with two or more persons, without and with ``duplicate_distance`` 0.15 (the config default), on the
    frames the daemon sees; the persons with six joints or more (real bodies) must be the same in both."""
    from engines.pose import PoseDecoder
    from pipeline.detector_eval import sample_frames

    off = PoseDecoder(min_parts=3, min_person_score=0.25)
    on = PoseDecoder(min_parts=3, min_person_score=0.25, duplicate_distance=0.15)
    before = after = 0
    for frame in sample_frames(shared_dir / "data/videos" / clip, 15.0, 1):  # as the readers decimate
        raw = detector.raw(letterbox(frame, detector.input_size)[0][None])[0]
        a, b = off.decode(raw), on.decode(raw)
        before, after = before + (len(a) >= 2), after + (len(b) >= 2)
        big = (a[..., 2] > 0).sum(1) >= 6
        np.testing.assert_array_equal(b[(b[..., 2] > 0).sum(1) >= 6], a[big])
    assert before >= before_min
    assert after <= (after_max if after_max is not None else before) and (after_max is not None or after == before)
