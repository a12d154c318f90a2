"""Reader supervision through the real ``sarde run``: a killed reader is restarted and its frames
resume (the watchdog); readers end with their stage (after ``kill -9`` of the stage none stays alive
to push frames into the next stage on the same endpoint)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_readers_exit_when_the_stage_is_killed(shared_dir, daemon_config):
    cfg = daemon_config()
    clip = shared_dir / "data" / "videos" / "openpose" / "street.avi"
    stage = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(cfg), "--no-progress",
                              "--source", str(clip), "--source", str(clip), "--loop"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        readers: list[int] = []
        while time.time() < deadline:
            readers = [p for p in _children(stage.pid)
                       if "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
            if len(readers) >= 2:
                break
            time.sleep(0.5)
        assert len(readers) >= 2, "the readers did not start"
        time.sleep(3)  # frames flowing
        stage.send_signal(signal.SIGKILL)
        stage.wait(10)
        deadline = time.time() + 15
        while time.time() < deadline and any(_alive(p) for p in readers):
            time.sleep(0.5)
        left = [p for p in readers if _alive(p)]
    finally:
        if stage.poll() is None:
            stage.kill()
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"reader processes {left} outlived their stage"


def _metric(port: int, name: str, camera: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and f'camera="{camera}"' in line)


def _rejected(port: int, reason: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sarde_messages_rejected_total{") and f'reason="{reason}"' in line)


def test_a_killed_reader_is_restarted_and_frames_resume(shared_dir, daemon_config, free_port):
    """... at once: the restarted reader keeps its camera's session token (none of its messages is a
    stranger's `peer`, no takeover timeout to wait out)."""
    port = free_port()
    cfg = daemon_config(f"{{host: 127.0.0.1, port: {port}}}")
    clip = shared_dir / "data" / "videos" / "openpose" / "street.avi"
    stage = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(cfg), "--no-progress",
                              "--source", str(clip), "--loop"],
                             cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if _metric(port, "sarde_frames_received_total", "street") >= 5:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        (reader,) = [p for p in _children(stage.pid)
                     if "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text(errors="replace")]
        os.kill(reader, signal.SIGKILL)
        at_kill = _metric(port, "sarde_frames_received_total", "street")
        deadline = time.time() + 60
        while time.time() < deadline:
            if (_metric(port, "sarde_reader_restarts_total", "street") == 1
                    and _metric(port, "sarde_frames_received_total", "street") >= at_kill + 5):
                break
            time.sleep(0.5)
        restarts = _metric(port, "sarde_reader_restarts_total", "street")
        frames = _metric(port, "sarde_frames_received_total", "street")
        peer = _rejected(port, "peer")
        assert stage.poll() is None, stage.stderr.read()[-2000:]
    finally:
        stage.send_signal(signal.SIGINT)
        try:
            stage.wait(20)
        except subprocess.TimeoutExpired:
            stage.kill()
    assert restarts == 1
    assert frames >= at_kill + 5, (at_kill, frames)
    assert peer == 0


def test_watchdog_rules_with_a_clock():
    """The supervision rules, step by step on a fake clock: a failed file reader's camera ends at once,
    a clean one's after EOS_GRACE_S unless its eos arrived, a dead live reader restarts with doubling
    backoff."""
    from pipeline.reader_settings import ReaderSettings
    from pipeline.watchdog import EOS_GRACE_S, RESTART_BACKOFF_S, ReaderWatchdog

    class Proc:
        def __init__(self, alive=True, exitcode=None):
            self.alive, self.exitcode = alive, exitcode

        def is_alive(self):
            return self.alive

    now = [0.0]
    settings = [ReaderSettings(camera=c, url=u, endpoint="ipc:///tmp/x") for c, u in
                (("failed", "/a.mp4"), ("clean", "/b.mp4"), ("done", "/c.mp4"), ("live", "rtsp://h/s"))]
    procs = [Proc(False, 1), Proc(False, 0), Proc(False, 0), Proc(False, -9)]
    ended, restarts, started = [], [], []
    dog = ReaderWatchdog(settings, procs, start=lambda s: started.append(s.camera) or Proc(),
                         end_camera=ended.append, camera_ended=lambda c: c == "done" or c in ended,
                         restarts=restarts.append, clock=lambda: now[0])
    dog.check()
    assert ended == ["failed"] and started == []
    now[0] = RESTART_BACKOFF_S + 0.1
    dog.check()
    assert started == ["live"] and restarts == ["live"] and procs[3].is_alive()
    procs[3] = Proc(False, -9)  # dies again: the next restart waits twice as long
    now[0] += 0.1
    dog.check()
    now[0] += 1.5 * RESTART_BACKOFF_S
    dog.check()
    assert started == ["live"]
    now[0] += RESTART_BACKOFF_S
    dog.check()
    assert started == ["live", "live"]
    now[0] = EOS_GRACE_S + 1
    dog.check()
    dog.check()
    assert ended == ["failed", "clean"]  # "done" had its eos: never ended by the watchdog
