"""Soak check (``slow``): ``sarde run`` on 4 looped real clips for ``SARDE_SOAK_S`` seconds (default 300).

Asserts: the daemon stays up; the stage's and the readers' RSS grow by less than 10 % over the last two
thirds of the run;
every frame the readers sent was processed, rejected or counted as dropped, up to what the queues
can hold at the moment of SIGTERM; SIGTERM ends the daemon with exit 0 within 5 s.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
CLIPS = ["videos/openpose/street.avi", "videos/pyskl/ntu_hug.avi", "videos/vtest/vtest.avi",
         "videos/fightsurv_dev/fight/fi004.mp4"]


def _metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") or line.startswith(name + " "))


@pytest.mark.slow
def test_soak_four_looped_cameras(tmp_path, shared_dir, artifact_cache, default_model):
    duration = float(os.environ.get("SARDE_SOAK_S", "300"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sources = "".join(f"  - {{name: cam{i}, url: '{c}', loop: true}}\n" for i, c in enumerate(CLIPS))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"paths: {{data_dir: '{shared_dir / 'data'}', pose_model_dir: '{shared_dir / 'models' / 'pose'}', artifact_dir: '{artifact_cache}'}}\n"
        f"sources:\n{sources}"
        f"transport: {{frames_endpoint: 'ipc://{tmp_path}/f.sock'}}\n"
        f"recognizer: {{model: '{default_model}'}}\n"
        f"events: {{pub_endpoint: null, journal: '{tmp_path}/ev.db', stdout: false}}\n"
        f"metrics: {{host: 127.0.0.1, port: {port}}}\n")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(cfg), "--no-progress"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stage = psutil.Process(proc.pid)
    samples: list[tuple[float, float]] = []
    try:
        t0 = time.time()
        while time.time() - t0 < duration:
            time.sleep(10)
            assert proc.poll() is None, proc.stderr.read()[-3000:]
            readers = [c for c in stage.children() if "resource_tracker" not in " ".join(c.cmdline())]
            samples.append((stage.memory_info().rss, sum(r.memory_info().rss for r in readers)))
        processed = _metric(port, "sarde_frames_processed_total")
        rejected = _metric(port, "sarde_messages_rejected_total")
        dropped = _metric(port, "sarde_frames_dropped_total")
        t_term = time.time()
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
        stop_s = time.time() - t_term
    finally:
        if proc.poll() is None:
            proc.kill()
    sent = sum(int(m) for m in re.findall(r"reader stopped \(sent (\d+),", err))
    warm = samples[len(samples) // 3]  # after warm-up: tracks, ring buffers and onnxruntime arenas exist
    print(f"soak {duration:.0f} s: sent {sent}, processed {processed:.0f}, rejected {rejected:.0f}, dropped {dropped:.0f}; "
          f"stage RSS {warm[0] / 2**20:.0f} -> {samples[-1][0] / 2**20:.0f} MiB, readers {warm[1] / 2**20:.0f} -> "
          f"{samples[-1][1] / 2**20:.0f} MiB; stopped in {stop_s:.1f} s")
    assert proc.returncode == 0 and stop_s < 5.0
    assert processed > 0 and 0 <= sent - processed - rejected - dropped <= len(CLIPS) * (4 + 8 + 8)
    assert samples[-1][0] < 1.10 * warm[0] and samples[-1][1] < 1.10 * warm[1]
