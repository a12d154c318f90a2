"""End to end on a real clip: reader process -> ZeroMQ -> stage -> events, journal, metrics.

Real parts only: the converted OpenPose-style detector, the default SARDE model, a reader process
decoding a real video from ../shared/data/videos, ipc/tcp loopback sockets, a live subscriber,
the sqlite journal and the Prometheus HTTP endpoint.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
import re
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path

import cv2
import pytest
import zmq

from pipeline.config import load_config
from pipeline.default_model import resolve_models
from pipeline.daemon import build_stage, reader_settings
from pipeline.journal import EventJournal
from pipeline.publish import subscribe
from pipeline.readers import reader_main

ROOT = Path(__file__).resolve().parents[1]


def _metric(text: str, name: str, **labels) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        if all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _config(tmp_path, shared_dir, artifact_cache, clip: str, camera: str, **events):
    pub_port = _free_port()
    overrides = {
        "paths": {"data_dir": str(shared_dir / "data"), "pose_model_dir": str(shared_dir / "models" / "pose"),
                  "artifact_dir": str(artifact_cache)},
        "sources": [{"name": camera, "url": clip, "max_fps": 240}],  # no decimation: every frame counts below
        "transport": {"frames_endpoint": f"ipc://{tmp_path}/frames.sock"},
        "recognizer": {"stride": 20, "min_frames": 10},
        "events": {"pub_endpoint": f"tcp://127.0.0.1:{pub_port}", "journal": str(tmp_path / "events.db"),
                   "stdout": False, **events},
        "metrics": {"port": 0},
        "web": {"enabled": False},
        "record_poses": str(tmp_path / "poses.jsonl"),
    }
    return resolve_models(load_config(ROOT / "configs" / "default.yaml", overrides), progress=False), pub_port


def _free_port() -> int:
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.PUB)
    port = s.bind_to_random_port("tcp://127.0.0.1")
    s.close(0)
    return port


@pytest.mark.usefixtures("default_model")
def test_real_clip_end_to_end(tmp_path, shared_dir, artifact_cache, caplog):
    clip = "videos/pyskl/ntu_hug.avi"  # two people, 72 frames
    n_frames = int(cv2.VideoCapture(str(shared_dir / "data" / clip)).get(cv2.CAP_PROP_FRAME_COUNT))
    # Low thresholds and no ignored label: every classified group raises an event, so the
    # counts below are deterministic functions of what the stage processed.
    cfg, pub_port = _config(tmp_path, shared_dir, artifact_cache, clip, "hug",
                            threshold=0.01, end_threshold=0.005, ignore_labels=[], debug_topk=3, debug_interval_s=0)
    received: list = []
    ctx = zmq.Context()
    with ExitStack() as stack:
        stack.callback(ctx.term)
        stage = build_stage(cfg, ctx, stack, expected_files=["hug"], progress=False)
        sub_stop = threading.Event()
        sub = threading.Thread(target=lambda: received.extend(
            subscribe(f"tcp://127.0.0.1:{pub_port}", "sarde.hug.", stop=sub_stop, context=ctx)), daemon=True)
        sub.start()
        time.sleep(0.5)  # PUB/SUB slow joiner: let the subscription reach the publisher
        proc = mp.get_context("spawn").Process(target=reader_main, args=(reader_settings(cfg, cfg.sources[0], stage.input_size),))
        proc.start()
        stop = threading.Event()
        timer = threading.Timer(240, stop.set)
        timer.start()
        with caplog.at_level(logging.INFO, logger="pipeline.scores"):
            stage.run(stop)
        timer.cancel()
        assert not stop.is_set(), "stage did not finish the clip in time"
        proc.join(10)
        assert proc.exitcode == 0
        port = stage.metrics.http_port
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).read())
        time.sleep(0.5)
        sub_stop.set()
        sub.join(5)

    # every frame of the clip was received and processed, none dropped (lossless file mode)
    assert _metric(text, "sarde_frames_received_total", camera="hug") == n_frames
    assert _metric(text, "sarde_frames_processed_total", camera="hug") == n_frames
    assert _metric(text, "sarde_frames_dropped_total", camera="hug") == 0
    assert _metric(text, "sarde_messages_rejected_total") == 0
    # two people in the clip: persons were detected and tracks formed and ended
    assert _metric(text, "sarde_persons_detected_total", camera="hug") >= n_frames
    assert _metric(text, "sarde_active_tracks", camera="hug") == 0
    # windows every 20 frames (72 frames -> at least 3 scheduling points) + the flush at the end
    windows = _metric(text, "sarde_windows_classified_total", camera="hug")
    assert windows == stage.windows_total >= 3
    # events.debug_topk: one line per classified window with the top-3 labels, scores descending
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.scores"]
    assert len(lines) == windows
    for line in lines:
        assert line.startswith("camera hug tracks [")
        top = [item.rsplit(" ", 1) for item in line.split(": ", 1)[1].split(", ")]
        values = [float(v) for _, v in top]
        assert len(top) == 3 and values == sorted(values, reverse=True) and sum(values) <= 1.001
        assert {name for name, _ in top} <= set(stage.recognizer.labels)
    assert _metric(text, "sarde_detector_latency_seconds_count") >= n_frames / cfg.detector.max_batch
    # events: journal == metrics == live subscriber; each action has one id with start ... end
    with EventJournal(tmp_path / "events.db", readonly=True) as journal:
        stored = [e for _, e in journal.read()]
    assert len(stored) == _metric(text, "sarde_events_total", camera="hug") == stage.events_total >= 2
    assert [e.event_id for e in received] == [e.event_id for e in stored]
    by_id: dict[str, list[str]] = {}
    for e in stored:
        by_id.setdefault(e.event_id, []).append(e.phase)
        assert e.camera == "hug" and e.track_ids and 0.0 <= e.score <= 1.0
        assert e.window.start_frame <= e.window.end_frame < n_frames
    for phases in by_id.values():
        assert phases[0] == "start" and phases[-1] == "end" and set(phases[1:-1]) <= {"update"}
    assert health["cameras"]["hug"]["ended"] is True
    # the recorded detector output has every frame and converts to the generic training format
    from engines.datasets.generic import jsonl_to_npz, load_npz
    lines = (tmp_path / "poses.jsonl").read_text().splitlines()
    assert len(lines) == n_frames
    assert sum(len(json.loads(l)["persons"]) for l in lines) == _metric(text, "sarde_persons_detected_total", camera="hug")
    jsonl_to_npz(tmp_path / "poses.jsonl", tmp_path / "poses.npz", label="hugging")
    assert len(load_npz(tmp_path / "poses.npz")) >= 1
    assert 'sarde_build_info{' in text


@pytest.mark.usefixtures("default_model")
def test_stage_survives_bad_messages(tmp_path, shared_dir, artifact_cache):
    """Malformed messages are counted by reason and dropped; real frames after them still work."""
    from engines.letterbox import letterbox
    from pipeline.wire import WIRE_VERSION, FrameHeader, encode_frame

    cfg, _ = _config(tmp_path, shared_dir, artifact_cache, "videos/stgcn/ta_chi.mp4", "cam")
    ctx = zmq.Context()
    with ExitStack() as stack:
        stack.callback(ctx.term)
        stage = build_stage(cfg, ctx, stack, expected_files=[], progress=False)
        push = ctx.socket(zmq.PUSH)
        push.setsockopt(zmq.LINGER, 0)
        push.connect(cfg.transport.frames_endpoint)
        stack.callback(push.close, 0)
        cap = cv2.VideoCapture(str(shared_dir / "data" / "videos/stgcn/ta_chi.mp4"))
        ok, frame = cap.read()
        assert ok
        img, scale, pad = letterbox(frame, stage.input_size)
        good = dict(kind="frame", camera="cam", seq=0, capture_ts=time.time(), shape=list(img.shape), orig_size=[frame.shape[1], frame.shape[0]],
                    scale=scale, pad=list(pad))
        push.send_multipart([b"{}", b"x", b"three parts"])
        push.send_multipart([b"{not json", b"x"])
        push.send_multipart([json.dumps({"v": WIRE_VERSION, "kind": "frame"}).encode(), b"x"])
        small, s2, p2 = letterbox(frame, (216, 184))
        push.send_multipart(encode_frame(FrameHeader(**{**good, "shape": list(small.shape), "scale": s2, "pad": list(p2)}), small))
        push.send_multipart([encode_frame(FrameHeader(**good), img)[0], img[:10].tobytes()])  # size mismatch
        # messages that each killed the stage once (issue 9): nesting, huge counters, null orig_size, seq >= 2^63
        obj = json.loads(encode_frame(FrameHeader(**good), img)[0])
        push.send_multipart([b"[" * 1000 + b"]" * 1000])
        push.send_multipart([json.dumps({**obj, "kind": "status", "shape": None, "dropped": 10**400}).encode()])
        push.send_multipart([json.dumps({**obj, "orig_size": None}).encode(), img.tobytes()])
        push.send_multipart([json.dumps({**obj, "seq": 2**63}).encode(), img.tobytes()])
        big = ctx.socket(zmq.PUSH)  # a 45 MB part: refused by libzmq before the stage allocates or decodes it
        big.setsockopt(zmq.LINGER, 0)
        big.connect(cfg.transport.frames_endpoint)
        stack.callback(big.close, 0)
        big.send_multipart([encode_frame(FrameHeader(**good), img)[0], bytes(45 << 20)])
        for _ in range(5):  # everything sent so far reaches the stage (or is refused) before the good frame
            stage.step(200)
        push.send_multipart(encode_frame(FrameHeader(**good), img))  # finally a good frame
        deadline = time.time() + 30
        while time.time() < deadline and stage.metrics.frames_processed.labels("cam")._value.get() < 1:
            stage.step(200)
        text = urllib.request.urlopen(f"http://127.0.0.1:{stage.metrics.http_port}/metrics", timeout=5).read().decode()
    assert _metric(text, "sarde_frames_processed_total", camera="cam") == 1
    assert _metric(text, "sarde_messages_rejected_total") == 9
    assert _metric(text, "sarde_messages_rejected_total", reason="parts") == 1
    assert _metric(text, "sarde_messages_rejected_total", reason="json") == 2
    assert _metric(text, "sarde_messages_rejected_total", reason="field") == 4
    assert _metric(text, "sarde_messages_rejected_total", reason="frame_size") == 1
    assert _metric(text, "sarde_messages_rejected_total", reason="size") == 1  # the short-pixels one, not the 45 MB one


@pytest.mark.usefixtures("default_model")
def test_cli_run_on_any_video_prints_json_events(tmp_path, shared_dir, artifact_cache):
    """`sarde run --source FILE` on a clip outside the default config exits 0 with JSON-line events."""
    src = tmp_path / "my clip.mp4"  # a copy under a user path and name with a space
    # basketball practice: the default model gives it non-background scores (docs/REAL-VIDEO.md), so a
    # near-zero threshold yields events (clean-and-jerk is confidently `normal`, the silent background)
    src.write_bytes((shared_dir / "data" / "videos" / "mmaction2" / "basketball.mp4").read_bytes())
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"paths: {{data_dir: '{shared_dir / 'data'}', pose_model_dir: '{shared_dir / 'models' / 'pose'}', artifact_dir: '{artifact_cache}'}}\n"
        f"transport: {{frames_endpoint: 'ipc://{tmp_path}/f.sock'}}\n"
        f"events: {{threshold: 0.01, end_threshold: 0.005, ignore_labels: [], pub_endpoint: null, journal: '{tmp_path}/ev.db'}}\n"
        "recognizer: {stride: 60}\nmetrics: {port: 0}\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config", str(cfg), "--source", str(src), "--no-progress"],
                          capture_output=True, text=True, cwd=ROOT, timeout=400)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(l) for l in proc.stdout.splitlines() if l.strip()]
    assert lines, proc.stderr[-2000:]
    assert all(l["schema"] == "sarde.event/3" and l["interrupted"] is False and l["camera"] == "my_clip" for l in lines)
    assert re.search(r"stage done: \d+ windows classified", proc.stderr)


@pytest.mark.usefixtures("default_model")
def test_reader_and_stage_as_separate_processes_over_tcp(tmp_path, shared_dir, artifact_cache):
    """`sarde stage` and `sarde reader` in two processes over tcp; `sarde events` reads journal and live topics."""
    import signal

    port, pub = _free_port(), _free_port()
    cfg = tmp_path / "stage.yaml"
    cfg.write_text(
        f"paths: {{data_dir: '{shared_dir / 'data'}', pose_model_dir: '{shared_dir / 'models' / 'pose'}', artifact_dir: '{artifact_cache}'}}\n"
        f"transport: {{frames_endpoint: 'tcp://127.0.0.1:{port}'}}\n"
        f"events: {{threshold: 0.01, end_threshold: 0.005, ignore_labels: [], pub_endpoint: 'tcp://127.0.0.1:{pub}', journal: '{tmp_path}/ev.db', stdout: false}}\n"
        "recognizer: {stride: 20, min_frames: 10}\nmetrics: {enabled: false}\n")
    stage = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "stage", "--config", str(cfg), "--no-progress"],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    live = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "events", "--connect", f"tcp://127.0.0.1:{pub}",
                             "--topic", "sarde.ntu_hug.", "--timeout", "15"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(3)  # stage loads its models and binds; subscriber connects
        reader = subprocess.run([sys.executable, "-m", "pipeline.cli", "reader", "--endpoint", f"tcp://127.0.0.1:{port}",
                                 "--source", str(shared_dir / "data" / "videos" / "pyskl" / "ntu_hug.avi")],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert reader.returncode == 0, reader.stderr[-2000:]
        deadline = time.time() + 120
        db = tmp_path / "ev.db"
        while time.time() < deadline:  # the stage ends the camera (eos) and emits every 'end'
            if db.exists():
                out = subprocess.run([sys.executable, "-m", "pipeline.cli", "events", "--journal", str(db)],
                                     cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
                phases = [json.loads(l)["phase"] for l in out.splitlines()]
                if phases and phases.count("start") == phases.count("end"):
                    break
            time.sleep(1)
        stage.send_signal(signal.SIGTERM)
        assert stage.wait(60) == 0, stage.stderr.read()[-2000:]
        live_out, _ = live.communicate(timeout=60)  # exits 15 s after the last event
    finally:
        for p in (stage, live):
            if p.poll() is None:
                p.kill()
    stored = [json.loads(l) for l in out.splitlines()]
    assert stored and all(e["camera"] == "ntu_hug" for e in stored)
    assert [json.loads(l)["event_id"] for l in live_out.splitlines()] == [e["event_id"] for e in stored]
