"""Tests of pipeline.journal (real sqlite files) and pipeline.publish (real PUB/SUB on loopback tcp)."""
from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import zmq

from pipeline.events import SCHEMA, SCHEMA_V1, ActionEvent, EventWindow
from pipeline.journal import EventJournal, JournalError
from pipeline.publish import EventPublisher, EventSubscriber, event_topic, subscribe

ROOT = Path(__file__).resolve().parents[1]


def make_event(camera: str = "cam1", label: str = "punch", phase: str = "start", i: int = 0) -> ActionEvent:
    return ActionEvent(event_id=uuid.uuid4().hex, phase=phase, camera=camera, track_ids=[1, 2], label=label,
                       label_index=0, score=0.5 + (i % 500) / 1000, window=EventWindow(10.0 + i, 15.0 + i, i, i + 149),
                       model_id="test", emitted_ts=1700000000.0 + i)


def run_py(code: str, timeout: float = 60) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


# ---------------------------------------------------------------- journal

def test_append_read_since_camera_limit(tmp_path):
    with EventJournal(tmp_path / "j" / "events.db") as journal:
        assert journal.last_seq() == 0 and list(journal.read()) == []
        events = [make_event(camera=f"cam{i % 2}", i=i) for i in range(120)]
        seqs = [journal.append(e) for e in events]
        assert seqs == list(range(1, 121)) and journal.last_seq() == 120
        assert [e for _, e in journal.read(batch=50)] == events  # several read batches
        assert [s for s, _ in journal.read(since_seq=115)] == [116, 117, 118, 119, 120]
        cam1 = list(journal.read(camera="cam1", batch=7))
        assert len(cam1) == 60 and all(e.camera == "cam1" for _, e in cam1) and cam1[0][0] == 2
        assert [s for s, _ in journal.read(since_seq=10, limit=3)] == [11, 12, 13]
        assert [s for s, _ in journal.read(since_seq=10, limit=60, batch=25)] == list(range(11, 71))
        raw = journal._db
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_durable_across_reopen_and_seq_never_reused(tmp_path):
    path = tmp_path / "events.db"
    first = [make_event(i=i) for i in range(3)]
    with EventJournal(path) as journal:
        for e in first:
            journal.append(e)
    with EventJournal(path) as journal:
        assert [e for _, e in journal.read()] == first
        assert journal.append(make_event(i=9)) == 4


def test_retention_prunes_by_age_and_count_and_seq_keeps_rising(tmp_path):
    with EventJournal(tmp_path / "events.db") as journal:
        for i in range(10):  # emitted_ts 1700000000 + i
            journal.append(make_event(i=i))
        assert journal.prune(max_age_s=5.5, now=1700000000.0 + 10) == 5  # ts < ...004.5 go
        assert [s for s, _ in journal.read()] == [6, 7, 8, 9, 10]
        assert journal.prune(max_events=3) == 2
        assert [s for s, _ in journal.read()] == [8, 9, 10]
        assert journal.prune(max_age_s=1e9, max_events=3) == 0
        assert journal.append(make_event(i=11)) == 11  # numbers are never reused
        assert [s for s, _ in journal.read(since_seq=2)] == [8, 9, 10, 11]  # catch-up from a pruned seq
    with EventJournal(tmp_path / "events.db", readonly=True) as ro, pytest.raises(JournalError):
        ro.prune(max_events=1)


def test_daemon_outputs_apply_retention(tmp_path):
    from prometheus_client import CollectorRegistry

    from pipeline.config import Config
    from pipeline.daemon import Outputs
    from pipeline.metrics import StageMetrics

    path = tmp_path / "events.db"
    with EventJournal(path) as journal:
        for i in range(5):
            journal.append(make_event(i=i))  # year-2023 timestamps: older than any retention
    cfg = Config.model_validate({"sources": [], "events": {"journal": str(path), "pub_endpoint": None, "stdout": False,
                                                         "journal_max_events": 4, "journal_prune_every": 3}})
    metrics = StageMetrics(CollectorRegistry())
    outputs = Outputs(cfg, zmq.Context.instance(), metrics)
    try:
        assert list(outputs.journal.read()) == []  # the default 30-day retention ran at start-up
        for i in range(6):
            outputs(dataclasses.replace(make_event(i=i), emitted_ts=time.time()))
        assert [s for s, _ in outputs.journal.read()] == [8, 9, 10, 11]  # pruned to 4 after the 3rd and 6th
        assert metrics.journal_pruned._value.get() == 5 + 2
    finally:
        outputs.close()


def test_actions_left_open_by_a_killed_stage_are_ended_at_the_next_start(tmp_path):
    """A stage killed mid-action leaves a start (and updates) without an end; the next start ends it once."""
    from prometheus_client import CollectorRegistry

    from pipeline.config import Config
    from pipeline.daemon import Outputs
    from pipeline.metrics import StageMetrics

    path = tmp_path / "events.db"
    now = time.time()
    start = dataclasses.replace(make_event(label="fighting", i=0), emitted_ts=now - 60)
    update = dataclasses.replace(start, phase="update", score=0.9, window=EventWindow(40.0, 45.0, 30, 179), emitted_ts=now - 50)
    done = dataclasses.replace(make_event(camera="cam2", i=3), emitted_ts=now - 40)
    # an action an older build (schema sarde.event/1) started and never ended
    old = dataclasses.replace(make_event(camera="cam3", label="falling", i=5), emitted_ts=now - 20, schema=SCHEMA_V1)
    # a start whose snapshot and clip were written, killed before any update
    shot = dataclasses.replace(make_event(camera="cam4", i=6), emitted_ts=now - 10, snapshot="/m/a.jpg", clip="/m/a.mp4")
    with EventJournal(path) as journal:
        for e in (start, update, done, dataclasses.replace(done, phase="end", emitted_ts=now - 30), old, shot):
            journal.append(e)
    cfg = Config.model_validate({"sources": [], "events": {"journal": str(path), "pub_endpoint": None, "stdout": False}})
    for _ in range(2):  # the second start finds nothing left open
        Outputs(cfg, zmq.Context.instance(), StageMetrics(CollectorRegistry())).close()
    with EventJournal(path, readonly=True) as journal:
        events = [e for _, e in journal.read()]
        assert journal.open_actions() == []
        stored = [json.loads(text) for (text,) in journal._db.execute("SELECT json FROM events ORDER BY seq")]
    assert len(events) == 9
    end, old_end, shot_end = events[-3:]
    assert (shot_end.event_id, shot_end.phase, shot_end.snapshot, shot_end.clip) == (shot.event_id, "end", None, None)
    assert (end.event_id, end.phase, end.camera, end.label, end.track_ids) == (start.event_id, "end", "cam1", "fighting", [1, 2])
    assert end.score == 0.9 and end.emitted_ts >= now
    assert (end.window.start_ts, end.window.end_ts, end.window.start_frame, end.window.end_frame) == (10.0, 45.0, 0, 179)
    # the ends the next start emitted are marked interrupted, in the current schema; the ordinary end is not
    assert end.interrupted and end.schema == SCHEMA and stored[-3]["interrupted"] is True
    assert (old_end.event_id, old_end.phase, old_end.interrupted, old_end.schema) == (old.event_id, "end", True, SCHEMA)
    assert events[3].phase == "end" and events[3].interrupted is False and stored[3]["interrupted"] is False
    assert not any(e.interrupted for e in events[:5])
    assert events[4] == old and "interrupted" not in stored[4]  # the old row reads back as it was written


def test_events_survive_a_killed_writer(tmp_path):
    """A writer SIGKILLed right after append (no close, no checkpoint) loses nothing."""
    path = tmp_path / "events.db"
    code = f"""
import os, signal, sys
sys.path.insert(0, {str(ROOT)!r})
from tests.test_journal_publish import make_event
from pipeline.journal import EventJournal
j = EventJournal({str(path)!r})
for i in range(50):
    j.append(make_event(i=i))
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = run_py(code)
    assert proc.returncode == -9, proc.stderr
    with EventJournal(path, readonly=True) as journal:
        assert journal.last_seq() == 50
        assert [e.score for _, e in journal.read()] == pytest.approx([0.5 + i / 1000 for i in range(50)])


def test_read_only_from_another_process_while_writing(tmp_path):
    path = tmp_path / "events.db"
    reader = f"""
from pipeline.journal import EventJournal
j = EventJournal({str(path)!r}, readonly=True)
print(sum(1 for _ in j.read()), j.last_seq())
"""
    with EventJournal(path) as journal:
        for i in range(5):
            journal.append(make_event(i=i))
        proc = run_py(reader)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.split() == ["5", "5"]
        journal.append(make_event(i=5))  # the writer is not blocked by the reader
        assert run_py(reader).stdout.split() == ["6", "6"]
    proc = run_py(reader)  # after the writer closed (WAL checkpointed and removed)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["6", "6"]
    with EventJournal(path, readonly=True) as ro, pytest.raises(JournalError, match="read-only"):
        ro.append(make_event())


def test_bad_paths_raise_journal_error(tmp_path):
    with pytest.raises(JournalError, match="does not exist"):
        EventJournal(tmp_path / "missing.db", readonly=True)
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    with pytest.raises(JournalError):
        EventJournal(garbage)
    with pytest.raises(JournalError):
        EventJournal(garbage, readonly=True)
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE t (x)")
    con.commit()
    con.close()
    with pytest.raises(JournalError, match="not a sarde event journal"):
        EventJournal(other)
    with pytest.raises(JournalError):
        EventJournal(tmp_path)  # a directory


def test_corrupt_row_is_a_journal_error(tmp_path):
    path = tmp_path / "events.db"
    with EventJournal(path) as journal:
        journal.append(make_event())
    con = sqlite3.connect(path)
    con.execute("UPDATE events SET json = '{\"schema\": 1}'")
    con.commit()
    con.close()
    with EventJournal(path, readonly=True) as journal, pytest.raises(JournalError, match="row 1"):
        list(journal.read())


# ---------------------------------------------------------------- publish / subscribe

def wait_subscribed(send_probe, receivers, timeout_s: float = 5.0) -> None:
    """Send probes until every receiver got one (ZeroMQ's slow-joiner: subscriptions propagate async)."""
    deadline = time.monotonic() + timeout_s
    pending = list(receivers)
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError("subscribers did not join")
        send_probe()
        pending = [r for r in pending if not r()]


def test_publisher_to_subscribers_topics_and_prefix_filter(tmp_path):
    ctx = zmq.Context()
    journal = EventJournal(tmp_path / "events.db")
    pub = EventPublisher("tcp://127.0.0.1:*", topic_prefix="sarde", journal=journal, context=ctx)
    assert pub.endpoint.startswith("tcp://127.0.0.1:") and not pub.endpoint.endswith(":*")
    cam1 = EventSubscriber(pub.endpoint, "sarde.cam1.", context=ctx)
    everything = EventSubscriber(pub.endpoint, "", context=ctx)
    raw = ctx.socket(zmq.SUB)
    raw.setsockopt(zmq.SUBSCRIBE, b"")
    raw.connect(pub.endpoint)
    got: dict[str, list] = {"cam1": [], "all": [], "raw": []}
    try:
        def drain() -> None:
            got["cam1"].extend(cam1.events(timeout_s=0.05))
            got["all"].extend(everything.events(timeout_s=0.01))
            while raw.poll(10):
                got["raw"].append(raw.recv_multipart())

        wait_subscribed(lambda: (pub.publish(make_event(label="probe")), drain()),
                        [lambda: got["cam1"], lambda: got["all"], lambda: got["raw"]])
        probes = journal.last_seq()
        for store in got.values():
            store.clear()
        events = [make_event("cam1", "punch", i=1), make_event("cam10", "punch", i=2),
                  make_event("cam2", "hug", i=3), make_event("cam1", "hug", "end", i=4)]
        seqs = [pub.publish(e) for e in events]
        assert seqs == [probes + 1, probes + 2, probes + 3, probes + 4]
        deadline = time.monotonic() + 5
        while len(got["all"]) + len(got["raw"]) < 8 and time.monotonic() < deadline:
            drain()
        drain()
        got = {k: [x for x in v if not (isinstance(x, ActionEvent) and x.label == "probe")] for k, v in got.items()}
        got["raw"] = [m for m in got["raw"] if not m[0].endswith(b".probe")]
        assert got["all"] == events
        assert got["cam1"] == [events[0], events[3]]  # not cam10: the trailing dot matters
        assert [m[0] for m in got["raw"]] == [b"sarde.cam1.punch", b"sarde.cam10.punch", b"sarde.cam2.hug", b"sarde.cam1.hug"]
        assert [ActionEvent.from_json(m[1]) for m in got["raw"]] == events
        assert pub.published == probes + 4 and pub.publish_failed == 0
        assert [e for _, e in journal.read(since_seq=probes)] == events
    finally:
        raw.close(linger=0)
        cam1.close()
        everything.close()
        pub.close()
        journal.close()
        ctx.term()


def test_journal_catches_up_when_nobody_listened(tmp_path):
    path = tmp_path / "events.db"
    ctx = zmq.Context()
    journal = EventJournal(path)
    pub = EventPublisher("tcp://127.0.0.1:0", journal=journal, context=ctx)  # port 0: a free port
    try:
        events = [make_event(i=i) for i in range(5)]
        for e in events:  # no subscriber: PUB drops, never blocks
            pub.publish(e)
        assert pub.published == 5 and pub.publish_failed == 0
        late = list(subscribe(pub.endpoint, timeout_s=0.3, context=ctx))
        assert late == []  # nothing was kept for a late subscriber ...
        with EventJournal(path, readonly=True) as reader:  # ... but the journal has everything
            assert [e for _, e in reader.read()] == events
            assert [e for _, e in reader.read(since_seq=3)] == events[3:]
    finally:
        pub.close()
        journal.close()
        ctx.term()


def test_journal_is_written_before_sending(tmp_path):
    """A failing journal write raises and the event is not sent."""
    path = tmp_path / "events.db"
    EventJournal(path).close()
    ctx = zmq.Context()
    readonly = EventJournal(path, readonly=True)
    pub = EventPublisher("tcp://127.0.0.1:*", journal=readonly, context=ctx)
    try:
        with pytest.raises(JournalError):
            pub.publish(make_event())
        assert pub.published == 0
    finally:
        pub.close()
        readonly.close()
        ctx.term()


def test_subscriber_skips_malformed_messages(caplog):
    ctx = zmq.Context()
    raw_pub = ctx.socket(zmq.PUB)
    port = raw_pub.bind_to_random_port("tcp://127.0.0.1")
    sub = EventSubscriber(f"tcp://127.0.0.1:{port}", "sarde.", context=ctx)
    got: list[ActionEvent] = []
    try:
        good = make_event(label="probe")
        wait_subscribed(lambda: (raw_pub.send_multipart([b"sarde.cam1.probe", good.to_json().encode()]),
                                 got.extend(sub.events(timeout_s=0.05))), [lambda: got])
        got.clear()
        bad_schema = json.loads(good.to_json())
        bad_schema["schema"] = "other/9"
        raw_pub.send_multipart([b"sarde.cam1.x", b"not json"])
        raw_pub.send(b"sarde.single-frame")
        raw_pub.send_multipart([b"sarde.cam1.x", b"{}", b"extra"])
        raw_pub.send_multipart([b"sarde.cam1.x", json.dumps(bad_schema).encode()])
        raw_pub.send_multipart([b"other.cam1.punch", make_event().to_json().encode()])  # filtered out
        final = make_event(label="punch")
        raw_pub.send_multipart([b"sarde.cam1.punch", final.to_json().encode()])
        with caplog.at_level("WARNING", logger="pipeline.publish"):
            got.extend(e for e in sub.events(timeout_s=0.5) if e.label != "probe")
        assert got == [final]
        assert sub.malformed == 4
        assert sum("malformed" in r.getMessage() for r in caplog.records) == 4
    finally:
        sub.close()
        raw_pub.close(linger=0)
        ctx.term()


def test_subscribe_generator_stops_on_event_and_closes():
    ctx = zmq.Context()
    pub = EventPublisher("tcp://127.0.0.1:*", journal=None, context=ctx)
    stop = threading.Event()
    received: list[ActionEvent] = []

    def consume() -> None:
        for event in subscribe(pub.endpoint, "sarde.cam1.", stop=stop, context=ctx):
            received.append(event)

    thread = threading.Thread(target=consume, name="test-subscriber")
    thread.start()
    try:
        deadline = time.monotonic() + 5
        while not received and time.monotonic() < deadline:
            assert pub.publish(make_event()) is None  # no journal: no seq
            time.sleep(0.02)
        assert received and received[0].camera == "cam1"
        assert event_topic("sarde", "cam1", "punch") == "sarde.cam1.punch"
        assert event_topic("", "cam1", "punch") == "cam1.punch"
    finally:
        stop.set()
        thread.join(timeout=5)
        pub.close()
        assert not thread.is_alive()
        ctx.term()  # would hang if the generator left its socket open
