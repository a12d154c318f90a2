"""Config reload on SIGHUP against a running daemon on a looped real CCTV clip: thresholds applied,
an invalid file rejected with the old config kept, a new model manifest swapped in; every action
keeps exactly one start and one end across the swaps."""
from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _metric(port: int, name: str) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read().decode()
    except OSError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _wait(pred, timeout: float = 60.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.2)
    return False


def test_sighup_applies_rejects_and_swaps_without_losing_events(daemon_config, default_model, shared_dir, tmp_path,
                                                                  free_port):
    from pipeline.journal import EventJournal

    port = free_port()
    cctv = "sources:\n  - {name: cctv, url: videos/fightsurv_dev/fight/fi005.mp4, loop: true}\n"
    street = "  - {name: street, url: videos/fightsurv_dev/noFight/nofi005.mp4, loop: true}\n"
    cfg = daemon_config(metrics=f"{{host: 127.0.0.1, port: {port}}}", extra=cctv)
    base = cfg.read_text()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", "run", "--config", str(cfg), "--no-progress"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        assert _wait(lambda: _metric(port, 'sarde_windows_classified_total{') >= 2, 120), "daemon did not run"
        # 1. thresholds: applied in place
        cfg.write_text(base.replace("events: {", "events: {threshold: 0.9, end_threshold: 0.5, "))
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: _metric(port, 'sarde_config_reloads_total{result="applied"}') == 1)
        # 2. a typo: rejected, the daemon goes on with the running config
        cfg.write_text(base.replace("events: {", "events: {treshold: 0.9, "))
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: _metric(port, 'sarde_config_reloads_total{result="rejected"}') == 1)
        frames = _metric(port, "sarde_frames_processed_total{")
        assert _wait(lambda: _metric(port, "sarde_frames_processed_total{") > frames + 10)
        # 3. another model manifest (a copy of the default model): open actions end, the new one takes over
        other = tmp_path / "model"
        shutil.copytree(Path(default_model).parent, other, ignore=shutil.ignore_patterns("train", "*.lock"))
        cfg.write_text(base.replace(str(default_model), str(other / Path(default_model).name)))
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: _metric(port, 'sarde_config_reloads_total{result="applied"}') == 2)
        frames = _metric(port, "sarde_frames_processed_total{")
        assert _wait(lambda: _metric(port, "sarde_frames_processed_total{") > frames + 30)
        # 4. a camera added, 5. the first one removed: readers started and stopped, the stage goes on
        swapped = cfg.read_text()
        cfg.write_text(swapped.replace(cctv, cctv + street))
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: _metric(port, 'sarde_frames_processed_total{camera="street"}') > 10)
        cfg.write_text(swapped.replace(cctv, "sources:\n" + street))
        proc.send_signal(signal.SIGHUP)
        assert _wait(lambda: _metric(port, 'sarde_config_reloads_total{result="applied"}') == 4)
        time.sleep(1.0)
        gone = _metric(port, 'sarde_frames_processed_total{camera="cctv"}')
        street_frames = _metric(port, 'sarde_frames_processed_total{camera="street"}')
        assert _wait(lambda: _metric(port, 'sarde_frames_processed_total{camera="street"}') > street_frames + 20)
        assert _metric(port, 'sarde_frames_processed_total{camera="cctv"}') == gone
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    assert "config reloaded: events.end_threshold, events.threshold" in err
    assert "config reload rejected, the running config stays" in err and "treshold" in err
    assert "recogniser swapped" in err
    assert "camera street: added by a config reload" in err and "camera cctv: removed by a config reload" in err
    phases = collections.defaultdict(list)
    for _, e in EventJournal(tmp_path / "ev.db").read():
        phases[e.event_id].append(e.phase)
    assert phases, "no event at all on a looped fight clip"
    for event_id, ps in phases.items():  # neither lost nor duplicated across the reloads
        assert ps.count("start") == 1 and ps.count("end") == 1 and ps[0] == "start" and ps[-1] == "end", (event_id, ps)
