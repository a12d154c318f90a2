"""No credential of any camera URL form reaches a log line, a metric label or ``/healthz`` (issue 9):
a real ``sarde run`` with unreachable RTSP cameras whose URLs carry a password and a token."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECRET = "S3cr3tPW"
URLS = [
    f"rtsp://admin:{SECRET}@127.0.0.1:9",                     # no path: the camera name once held the password
    f"rtsp://admin:{SECRET}@127.0.0.1:9/stream1",
    f"rtsp://127.0.0.1:9/live?token={SECRET}",
    f"http://viewer:{SECRET}@127.0.0.1:9/video.mjpg",
    f"rtmp://user:{SECRET}@127.0.0.1:9/app/key",
]


def _get(url: str) -> str:
    try:
        return urllib.request.urlopen(url, timeout=5).read().decode()
    except urllib.error.HTTPError as exc:  # /healthz is 503 while a live camera is down
        return exc.read().decode()


def test_credentials_never_leave_the_url(daemon_config, free_port):
    port = free_port()
    cfg = daemon_config(f"{{host: 127.0.0.1, port: {port}}}", "log_level: DEBUG\n")
    args = [a for u in URLS for a in ("--source", u)]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(cfg), "--no-progress", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = health = ""
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                metrics = _get(f"http://127.0.0.1:{port}/metrics")
                health = _get(f"http://127.0.0.1:{port}/healthz")
                if metrics.count('sarde_camera_up{camera=') >= len(URLS) and "reconnect" in metrics:
                    time.sleep(4)  # a few reconnect attempts and their log lines
                    metrics = _get(f"http://127.0.0.1:{port}/metrics")
                    health = _get(f"http://127.0.0.1:{port}/healthz")
                    break
            except OSError:
                pass
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert metrics.count('sarde_camera_up{camera=') >= len(URLS), err[-3000:]
    assert "127.0.0.1" in err  # the readers did log their (masked) URLs
    for text, where in ((err, "logs"), (out, "stdout"), (metrics, "/metrics"), (health, "/healthz")):
        assert SECRET not in text, f"password in {where}"
