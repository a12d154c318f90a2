"""The stage's two threads: end-of-stream arriving on the engine thread (real ``eos`` messages over
ZeroMQ) and dead readers ended from the main thread, many times at once; none may be lost."""
from __future__ import annotations

import threading
import time

import pytest
import zmq

from engines.detector import PoseDetector
from pipeline.metrics import Health, StageMetrics
from pipeline.stage import Stage, StageSettings
from pipeline.wire import FrameHeader, encode_status

N_EOS = 300      # cameras ended by an eos message (engine thread)
N_DEAD = 300     # cameras ended by end_camera_by_name (main thread, as the daemon does for dead readers)


def _pull_push(tmp_path):
    """A context, the stage's bound PULL and a connected PUSH on an ipc endpoint in ``tmp_path``."""
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.bind(f"ipc://{tmp_path}/frames.sock")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"ipc://{tmp_path}/frames.sock")
    return ctx, pull, push


@pytest.mark.parametrize("attempt", range(3))
def test_end_of_stream_from_both_threads_is_never_lost(tmp_path, detector_onnx, attempt):
    eos_names = [f"eos{i}" for i in range(N_EOS)]
    dead_names = [f"dead{i}" for i in range(N_DEAD)]
    names = eos_names + dead_names
    ctx, pull, push = _pull_push(tmp_path)
    metrics = StageMetrics()
    settings = StageSettings(cameras=names, end_when_all_eos=True, expected_cameras=names)
    stage = Stage(settings, pull, PoseDetector(detector_onnx, providers=["cpu"]), None, None, lambda e: None,
                  metrics, Health(metrics, names, 30.0))
    dead = iter(dead_names)

    def idle():  # the daemon's check_readers hook: runs on the main thread between batches
        for name in [next(dead, None) for _ in range(7)]:
            if name is not None:
                stage.end_camera_by_name(name)

    def send_eos():
        for i, name in enumerate(eos_names):
            push.send_multipart(encode_status(FrameHeader(kind="eos", camera=name, seq=0, capture_ts=time.time())))
            if i % 50 == 0:
                time.sleep(0.001)

    stop = threading.Event()
    sender = threading.Thread(target=send_eos)
    sender.start()
    timer = threading.Timer(60.0, stop.set)  # a lost end of stream would make run() wait for ever
    timer.start()
    try:
        stage.run(stop, idle=idle)
    finally:
        timer.cancel()
        sender.join()
        push.close(0)
        pull.close(0)
        ctx.term()
    assert not stop.is_set(), "run() did not end: an end of stream was lost"
    assert all(stage.cameras[n].ended for n in names)
    rejected = [m for m in metrics.registry.collect() if m.name == "sarde_messages_rejected"]
    assert not any(sample.value for m in rejected for sample in m.samples if sample.name.endswith("_total"))


def test_new_camera_names_are_bounded(tmp_path, detector_onnx):
    """Without a camera list, status messages with ever new names create at most max_cameras states."""
    ctx, pull, push = _pull_push(tmp_path)
    metrics = StageMetrics()
    stage = Stage(StageSettings(cameras=None, max_cameras=5), pull, PoseDetector(detector_onnx, providers=["cpu"]),
                  None, None, lambda e: None, metrics, Health(metrics, [], 30.0))
    try:
        for i in range(50):
            push.send_multipart(encode_status(FrameHeader(kind="status", camera=f"c{i}", seq=0, capture_ts=time.time())))
        deadline = time.time() + 20
        rejected = 0.0
        while time.time() < deadline:
            stage.step(50)
            rejected = metrics.registry.get_sample_value("sarde_messages_rejected_total", {"reason": "camera"}) or 0.0
            if len(stage.cameras) + rejected >= 50:
                break
    finally:
        push.close(0)
        pull.close(0)
        ctx.term()
    assert sorted(stage.cameras) == [f"c{i}" for i in range(5)]
    assert rejected == 45


def test_healthz_reports_a_stalled_stage_loop():
    """A stage loop that stops coming round turns /healthz to 503 (real HTTP server)."""
    import json
    import urllib.error
    import urllib.request

    from pipeline.metrics import serve

    metrics = StageMetrics()
    health = Health(metrics, [], 5.0, stall_s=2.0)
    server, port = serve(metrics, health, "127.0.0.1", 0)

    def get():
        try:
            r = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
            return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        now = time.time()
        health.beat("engine", now)
        health.beat("post", now)
        status, body = get()
        assert status == 200 and body["ok"] and not body["stage"]["post"]["stalled"]
        health.beat("post", now - 10)  # the post-processing thread is stuck
        status, body = get()
        assert status == 503 and not body["ok"] and body["stage"]["post"]["stalled"] and not body["stage"]["engine"]["stalled"]
    finally:
        server.shutdown()
