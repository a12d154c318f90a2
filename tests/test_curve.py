"""CURVE on the tcp frames endpoint with real reader processes: a reader whose key the stage
authorised streams; one with another key is refused (none of its frames reaches the stage); a key
never appears in a log line or a repr."""
from __future__ import annotations

import logging
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import zmq

from pipeline.config import load_config
from pipeline.daemon import _stop_processes, build_stage, reader_settings, start_readers

ROOT = Path(__file__).resolve().parents[1]


def _keys(folder: Path, name: str) -> tuple[Path, Path]:
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "keys", "--out", str(folder), "--name", name],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    public, secret = (Path(line) for line in out.stdout.split())
    assert public.name == f"{name}.key" and secret.name == f"{name}.key_secret"
    return public, secret


def test_curve_admits_the_authorised_reader_only(tmp_path, shared_dir, artifact_cache, default_model, caplog):
    stage_pub, stage_secret = _keys(tmp_path / "stage", "stage")
    reader_pub, reader_secret = _keys(tmp_path / "readers", "cam-good")
    _mallory_pub, mallory_secret = _keys(tmp_path / "readers", "mallory")  # authorised too, for another camera
    _evil_pub, evil_secret = _keys(tmp_path / "elsewhere", "cam-evil")
    with zmq.Context() as probe:
        sock = probe.socket(zmq.PULL)
        port = sock.bind_to_random_port("tcp://127.0.0.1")
        sock.close(0)

    def cfg(client_secret: Path):
        return load_config(ROOT / "configs" / "default.yaml", {
            "paths": {"data_dir": str(shared_dir / "data"), "pose_model_dir": str(shared_dir / "models" / "pose"),
                      "artifact_dir": str(artifact_cache)},
            "sources": [{"name": "good", "url": "videos/pyskl/ntu_hug.avi"}, {"name": "evil", "url": "videos/pyskl/ntu_hug.avi"}],
            "transport": {"frames_endpoint": f"tcp://127.0.0.1:{port}",
                          "curve": {"server_key": str(stage_secret), "authorized_keys": str(reader_pub.parent),
                                    "server_public_key": str(stage_pub), "client_key": str(client_secret)}},
            "recognizer": {"model": str(default_model)},
            "events": {"pub_endpoint": None, "journal": str(tmp_path / "ev.db"), "stdout": False},
            "metrics": {"enabled": False},
            "web": {"enabled": False},
        })

    good_cfg, evil_cfg = cfg(reader_secret), cfg(evil_secret)
    ctx = zmq.Context()
    with caplog.at_level(logging.DEBUG), ExitStack() as stack:
        stack.callback(ctx.term)
        stage = build_stage(good_cfg, ctx, stack, expected_files=[], progress=False)
        settings = [reader_settings(good_cfg, good_cfg.sources[0], stage.input_size),
                    reader_settings(evil_cfg, evil_cfg.sources[1], stage.input_size)]
        assert settings[0].curve is not None and "curve" not in repr(settings[0])
        procs = start_readers(settings)
        stack.callback(_stop_processes, procs)
        deadline = time.time() + 90
        received = stage.metrics.frames_received
        spoofed = False
        while time.time() < deadline and not (stage.cameras.get("good") and stage.cameras["good"].ended):
            stage.step(200)
            if not spoofed and received.labels("good")._value.get() >= 5:
                _spoof(ctx, port, stage_pub, mallory_secret, stage.input_size)  # a jump to 2^62 and a fake eos
                spoofed = True
        rejected = {r: stage.metrics.registry.get_sample_value("sarde_messages_rejected_total", {"reason": r}) or 0
                    for r in ("peer", "seq", "after_eos")}
        good = received.labels("good")._value.get()
        evil = received.labels("evil")._value.get()
    assert good >= 30 and stage.cameras["good"].ended  # the whole clip, then its eos
    assert evil == 0 and "evil" not in stage.cameras
    assert spoofed and rejected == {"peer": 2, "seq": 0, "after_eos": 0}  # the genuine reader's frames all went on
    secrets = [line.split('"')[1] for path in (stage_secret, reader_secret, evil_secret)
               for line in path.read_text().splitlines() if "secret-key" in line]
    assert len(secrets) == 3 and not any(s in caplog.text for s in secrets)


def _spoof(ctx, port, stage_pub: Path, secret: Path, size) -> None:
    """Another authorised client sends for camera ``good``: a frame with seq 2^62, then an eos."""
    import numpy as np

    from pipeline.curve import load_keypair, load_public_key, make_client
    from pipeline.wire import FrameHeader, encode_frame, encode_status

    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 2000)
    make_client(sock, load_public_key(stage_pub), load_keypair(secret))
    sock.connect(f"tcp://127.0.0.1:{port}")
    image = np.zeros((size[1], size[0], 3), np.uint8)
    header = FrameHeader(kind="frame", camera="good", seq=2**62, capture_ts=time.time(), shape=image.shape,
                         orig_size=(size[0], size[1]), scale=1.0, pad=(0, 0))
    sock.send_multipart(encode_frame(header, image))
    sock.send_multipart(encode_status(FrameHeader(kind="eos", camera="good", seq=2**62, capture_ts=time.time())))
    sock.close()


def test_exposed_endpoint_without_keys_does_not_start(tmp_path, shared_dir, artifact_cache, default_model):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"paths: {{data_dir: '{shared_dir / 'data'}', pose_model_dir: '{shared_dir / 'models' / 'pose'}', artifact_dir: '{artifact_cache}'}}\n"
        "transport: {frames_endpoint: 'tcp://0.0.0.0:0'}\n"
        f"recognizer: {{model: '{default_model}'}}\n"
        f"events: {{pub_endpoint: null, journal: '{tmp_path}/ev.db'}}\nmetrics: {{enabled: false}}\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "stage", "--config", str(cfg), "--no-progress"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "without CURVE keys" in proc.stderr and "transport.insecure" in proc.stderr


@pytest.mark.parametrize("bad", ["missing", "public_only"])
def test_bad_key_files_are_one_line_errors(tmp_path, bad):
    from pipeline.curve import CurveError, load_keypair

    public, _secret = _keys(tmp_path, "k")
    path = tmp_path / "nope.key_secret" if bad == "missing" else public
    with pytest.raises(CurveError, match=str(path.name)):
        load_keypair(path)
