"""Every start-up failure through the real ``sarde`` command: exit status 2, one line on stderr that
says what to fix, no traceback, and no hang (each run has a time limit)."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sarde(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-3000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("sarde: error: ")]
    assert len(errors) == 1, proc.stderr[-3000:]
    for needle in needles:
        assert needle in errors[0], errors[0]


@pytest.fixture()
def run_config(tmp_path, shared_dir, artifact_cache, default_model):
    """Write a `sarde run` config (real models, one real clip, free ports) with ``overrides`` and return its path."""

    def write(**overrides) -> Path:
        cfg = {
            "paths": {"data_dir": str(shared_dir / "data"), "pose_model_dir": str(shared_dir / "models" / "pose"),
                      "artifact_dir": str(artifact_cache)},
            "sources": [{"name": "hug", "url": "videos/pyskl/ntu_hug.avi"}],
            "transport": {"frames_endpoint": f"ipc://{tmp_path}/frames.sock"},
            "recognizer": {"model": str(default_model)},
            "events": {"pub_endpoint": f"tcp://127.0.0.1:{_free_port()}", "journal": str(tmp_path / "ev.db"),
                       "stdout": False},
            "metrics": {"port": 0},
        }
        for section, values in overrides.items():
            if isinstance(values, dict):
                cfg.setdefault(section, {}).update(values)
            else:
                cfg[section] = values
        path = tmp_path / "cfg.json"  # JSON is YAML
        path.write_text(json.dumps(cfg))
        return path

    return write


def test_unknown_config_key(run_config):
    _assert_user_error(_sarde("run", "--config", str(run_config(detector={"max_bacth": 4}))), "detector.max_bacth", "unknown key")


def test_missing_recogniser_manifest(run_config, tmp_path):
    _assert_user_error(_sarde("run", "--config", str(run_config(recognizer={"model": str(tmp_path / "none.json")}))),
                       "recogniser manifest not found")


def test_replaced_onnx_beside_a_valid_manifest(run_config, tmp_path, default_model):
    """A model file that is not the one the manifest's sha256 names (e.g. randomised weights) does not start."""
    copy = tmp_path / "model"
    shutil.copytree(Path(default_model).parent, copy, ignore=shutil.ignore_patterns("train"))
    manifest = copy / Path(default_model).name
    onnx = copy / json.loads(manifest.read_text())["onnx"]
    data = bytearray(onnx.read_bytes())
    data[-100:] = bytes(100)  # weights changed, graph still loadable
    onnx.write_bytes(bytes(data))
    _assert_user_error(_sarde("run", "--config", str(run_config(recognizer={"model": str(manifest)}))), "sha256")


def test_missing_detector_weights(run_config):
    _assert_user_error(_sarde("run", "--config", str(run_config(detector={"weights": "nope/missing.tflite"}))),
                       "detector weights not found")


def test_events_port_busy(run_config):
    ctx = zmq.Context()
    busy = ctx.socket(zmq.PUB)
    port = busy.bind_to_random_port("tcp://127.0.0.1")
    try:
        _assert_user_error(_sarde("run", "--config", str(run_config(events={"pub_endpoint": f"tcp://127.0.0.1:{port}"}))),
                           "events endpoint", "pub_endpoint")
    finally:
        busy.close(0)
        ctx.term()


def test_frames_port_busy_exits_instead_of_hanging(run_config):
    ctx = zmq.Context()
    busy = ctx.socket(zmq.PULL)
    port = busy.bind_to_random_port("tcp://127.0.0.1")
    try:
        proc = _sarde("run", "--config", str(run_config(transport={"frames_endpoint": f"tcp://127.0.0.1:{port}"})), timeout=90)
        _assert_user_error(proc, "frames endpoint")
    finally:
        busy.close(0)
        ctx.term()


def test_metrics_port_busy(run_config):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        _assert_user_error(_sarde("run", "--config", str(run_config(metrics={"port": port, "host": "127.0.0.1"}))),
                           "metrics")


def test_web_port_busy(run_config):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        port = s.getsockname()[1]
        _assert_user_error(_sarde("run", "--config", str(run_config(web={"enabled": True, "port": port}))), "web.port")


def test_journal_is_a_directory(run_config, tmp_path):
    (tmp_path / "journal.d").mkdir()
    _assert_user_error(_sarde("run", "--config", str(run_config(events={"journal": str(tmp_path / "journal.d")}))),
                       "journal")


def test_journal_is_a_foreign_sqlite_file(run_config, tmp_path):
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE events (x TEXT)")
        db.execute("INSERT INTO events VALUES ('not ours')")
    _assert_user_error(_sarde("run", "--config", str(run_config(events={"journal": str(path)}))), "journal")


def test_source_file_missing(run_config, tmp_path):
    _assert_user_error(_sarde("run", "--config", str(run_config()), "--source", str(tmp_path / "missing.mp4")),
                       "does not exist")


def test_source_file_that_cannot_be_decoded(run_config, tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x01not a video" * 9)
    _assert_user_error(_sarde("run", "--config", str(run_config()), "--source", str(bad)), "cannot decode")


def test_train_recipe_with_a_typo(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text((ROOT / "configs" / "models" / "sarde-default.yaml").read_text() + "\nextra_section: {epoch: 60}\n")
    _assert_user_error(_sarde("train", "--recipe", str(recipe), "--out", str(tmp_path / "out"), "--no-progress"),
                       "extra_section")


def test_train_without_its_data(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("labels: [a, b]\nbackground: b\ndatasets:\n  - {name: sbu, reader: sbu, label_map: {'*': a}}\n")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"paths: {{data_dir: '{tmp_path / 'no-data'}', artifact_dir: '{tmp_path / 'art'}'}}\n")
    _assert_user_error(_sarde("train", "--config", str(cfg), "--recipe", str(recipe), "--no-progress"), "SBU")


def test_export_missing_checkpoint(tmp_path):
    _assert_user_error(_sarde("export", "recognizer", "--checkpoint", str(tmp_path / "model.pt")), "--checkpoint")


def test_eval_video_missing_clip_list(tmp_path):
    _assert_user_error(_sarde("eval", "video", "--clips", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")),
                       "none.yaml")


def test_recogniser_manifest_that_is_not_json(run_config, tmp_path):
    bad = tmp_path / "sarde.json"
    bad.write_text("{ not json")
    _assert_user_error(_sarde("run", "--config", str(run_config(recognizer={"model": str(bad)}))), "manifest")


def test_optimise_a_manifest_without_its_model(tmp_path, default_model):
    """`sarde export recognizer --fp16` on a manifest whose ONNX file is gone: ManifestError / OptimizeError, exit 2."""
    m = json.loads(Path(default_model).read_text())
    (tmp_path / "sarde.json").write_text(json.dumps({**m, "onnx": "gone.onnx"}))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"recognizer: {{model: '{tmp_path / 'sarde.json'}'}}\n")
    _assert_user_error(_sarde("export", "recognizer", "--config", str(cfg), "--fp16", "--no-progress"))
