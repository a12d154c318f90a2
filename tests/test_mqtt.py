"""MQTT sink against a real Mosquitto broker started by the test: topics, QoS 1, retained
availability, and a broker restart in the middle with no event lost (re-sent from the journal)."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

mqtt = pytest.importorskip("paho.mqtt.client")

from pipeline.events import ActionEvent, EventWindow  # noqa: E402
from pipeline.journal import EventJournal  # noqa: E402
from pipeline.mqtt import MqttSink  # noqa: E402

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
if not Path(MOSQUITTO).exists() and os.environ.get("SARDE_REQUIRE_RTSP") == "1":  # CI installs the test servers
    raise RuntimeError("mosquitto is not installed although CI installs it (.ci/install-rtsp.sh)")
pytestmark = pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto not installed (make test installs it)")


class Broker:
    """Mosquitto on 127.0.0.1:port with persistence in ``folder`` (sessions and queued QoS 1 messages
    survive a restart)."""

    def __init__(self, folder: Path, port: int):
        self.port, self.folder = port, folder
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
                             f"persistence_location {folder}/\nautosave_interval 1\n")
        self.proc = None

    def start(self) -> None:
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()  # SIGTERM: mosquitto saves its sessions and exits
        self.proc.wait(10)


class Subscriber:
    """A persistent-session QoS 1 subscriber to ``sarde/#`` that keeps what it receives."""

    def __init__(self, port: int):
        self.got: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub", clean_session=False)
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe("sarde/#", qos=1)
        self.c.on_message = self._msg
        self.c.reconnect_delay_set(1, 2)
        self.c.connect("127.0.0.1", port)
        self.c.loop_start()

    def _msg(self, c, u, m) -> None:
        with self.lock:
            self.got.append((m.topic, m.payload, m.retain))

    def events(self) -> list[ActionEvent]:
        with self.lock:
            return [ActionEvent.from_json(p) for t, p, _ in self.got if not t.endswith("/availability")]

    def wait(self, n: int, timeout: float = 20.0) -> list[ActionEvent]:
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.events()) < n:
            time.sleep(0.05)
        return self.events()


def _event(k: int, camera: str = "cam1", label: str = "fighting") -> ActionEvent:
    return ActionEvent(event_id=f"{k:032x}", phase="start", camera=camera, track_ids=[1, 2], label=label,
                       label_index=0, score=0.9, window=EventWindow(0.0, 1.0, 0, 14), model_id="m", emitted_ts=1.7e9 + k)


def test_broker_restart_mid_run_loses_no_event(tmp_path, free_port):
    port = free_port()
    broker = Broker(tmp_path, port)
    broker.start()
    sub = Subscriber(port)
    time.sleep(0.5)
    journal = EventJournal(tmp_path / "events.db")
    sink = MqttSink("127.0.0.1", port, tmp_path / "events.db", client_id="sarde-test", reconnect_max_s=1)
    try:
        assert sink.connected.wait(10)
        for k in range(1, 11):
            sink.publish(journal.append(_event(k)), _event(k))
        assert sink.wait_acknowledged(10, 10)
        assert len(sub.wait(10)) == 10
        broker.stop()  # the broker goes away in the middle of the run ...
        end = time.monotonic() + 10
        while sink.connected.is_set() and time.monotonic() < end:
            time.sleep(0.05)
        assert not sink.connected.is_set()
        for k in range(11, 31):  # ... while the stage goes on producing events
            sink.publish(journal.append(_event(k, label="falling")), _event(k, label="falling"))
        broker.start()
        assert sink.wait_acknowledged(30, 30), sink.acked_upto
        got = sub.wait(30)
        assert {e.event_id for e in got} == {f"{k:032x}" for k in range(1, 31)}  # every journal event arrived
        topics = {t for t, _, _ in sub.got}
        assert {"sarde/cam1/fighting", "sarde/cam1/falling", "sarde/availability"} <= topics
        assert sink.resent >= 20 and json_mark(tmp_path) == 30
    finally:
        sink.close()
        sub.c.loop_stop()
        journal.close()
        broker.stop()


def test_unacknowledged_events_of_a_previous_run_are_sent_at_start(tmp_path, free_port):
    port = free_port()
    broker = Broker(tmp_path, port)
    journal = EventJournal(tmp_path / "events.db")
    for k in range(1, 6):  # a run whose broker was down the whole time: all in the journal, none sent
        journal.append(_event(k))
    (tmp_path / "events.db.mqtt.json").write_text('{"acked_upto": 2}')
    broker.start()
    sub = Subscriber(port)
    time.sleep(0.5)
    sink = MqttSink("127.0.0.1", port, tmp_path / "events.db", client_id="sarde-test")
    try:
        assert sink.wait_acknowledged(5, 15)
        assert sorted(e.event_id for e in sub.wait(3)) == [f"{k:032x}" for k in (3, 4, 5)]
    finally:
        sink.close()
        time.sleep(0.3)
        sub.c.loop_stop()
        journal.close()
        broker.stop()
    retained = [(t, p) for t, p, r in sub.got if t == "sarde/availability"]
    assert retained[-1][1] == b"offline"  # clean stop: availability says so


def json_mark(folder: Path) -> int:
    import json

    return json.loads((folder / "events.db.mqtt.json").read_text())["acked_upto"]


def test_daemon_publishes_a_real_clip_s_events_to_mqtt(daemon_config, shared_dir, tmp_path, free_port):
    """`sarde run` with events.mqtt on a real CCTV fight: the broker's subscriber gets exactly the
    journal's events, on <prefix>/<camera>/<label>."""
    import sys

    port = free_port()
    broker = Broker(tmp_path, port)
    broker.start()
    sub = Subscriber(port)
    time.sleep(0.5)
    try:
        cfg = daemon_config()
        text = cfg.read_text().replace("events: {", f"events: {{mqtt: {{host: 127.0.0.1, port: {port}}}, ")
        cfg.write_text(text)
        clip = shared_dir / "data" / "videos" / "fightsurv_dev" / "fight" / "fi005.mp4"
        r = subprocess.run([sys.executable, "-m", "pipeline.cli", "run", "--config", str(cfg), "--source", str(clip),
                            "--no-progress"], capture_output=True, text=True, timeout=600,
                           cwd=Path(__file__).resolve().parents[1])
        assert r.returncode == 0, r.stderr[-2000:]
        stored = [e for _, e in EventJournal(tmp_path / "ev.db").read()]
        assert stored
        got = sub.wait(len(stored))
        assert sorted((e.event_id, e.phase) for e in got) == sorted((e.event_id, e.phase) for e in stored)
        assert {t for t, _, _ in sub.got if not t.endswith("availability")} == {f"sarde/fi005/{e.label}" for e in stored}
    finally:
        sub.c.loop_stop()
        broker.stop()
