"""Config validation: defaults load, unknown keys and out-of-range values are rejected in one line."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]


def test_default_config_is_valid():
    cfg = load_config(ROOT / "configs" / "default.yaml")
    assert cfg.recognizer.num_frames == 150
    assert [s.name for s in cfg.sources] == ["cctv-fight", "cctv-street", "hug", "street"]
    assert cfg.events.alert_labels == ["fighting", "falling", "hugging", "shaking_hands", "exchanging"]
    assert "dm10" in cfg.detector.weights and cfg.detector.min_parts == 3
    assert all(Path(cfg.resolve_source_url(s.url)).is_file() for s in cfg.sources)


def test_example_camera_config_is_valid():
    cfg = load_config(ROOT / "configs" / "cameras.example.yaml")
    assert [s.name for s in cfg.sources] == ["gate-north", "lobby", "desk-usb"]


@pytest.mark.parametrize("body, where", [
    ("detector:\n  max_bacth: 4\n", "detector.max_bacth: unknown key"),
    ("recognizer:\n  stride: 0\n", "recognizer.stride"),
    ("events:\n  threshold: 0.3\n  end_threshold: 0.5\n", "end_threshold must not exceed threshold"),
    ("sources:\n  - name: 'bad name!'\n    url: x.mp4\n", "sources.0.name"),
    ("sources:\n  - {name: a, url: x.mp4}\n  - {name: a, url: y.mp4}\n", "duplicate camera names"),
    ("detector:\n  providers: [vulkan]\n", "detector.providers.0"),
    ("transport:\n  session_takeover_s: 0\n", "transport.session_takeover_s"),
    ("- just\n- a list\n", "top level must be a mapping"),
    ("detector: [unclosed\n", "invalid YAML at line"),
])
def test_bad_config_is_one_clear_line(tmp_path, body, where):
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert where in msg
    assert "\n" not in msg and str(path) in msg


def test_every_field_is_described():
    from pipeline.config import Config

    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            ann = field.annotation
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann)
    walk(Config)


def test_cli_bad_config_exits_2_with_one_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("recognizer:\n  num_frames: 2\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config", str(path)],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("sarde: error:") and "recognizer.num_frames" in lines[0]


def test_cli_missing_weights_exits_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"paths:\n  pose_model_dir: {tmp_path}/nothing\n  artifact_dir: {tmp_path}/a\n"
                   "sources:\n  - {name: a, url: x.mp4}\nmetrics: {enabled: false}\nevents: {pub_endpoint: null, journal: null}\n")
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config", str(cfg)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "detector weights not found" in proc.stderr and proc.stderr.count("\n") == 1
