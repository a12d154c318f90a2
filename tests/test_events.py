"""Tests of pipeline.events: the event schema and the start / update / end logic."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest

from pipeline.events import SCHEMA, SCHEMA_V1, SCHEMA_V2, ActionEvent, EventLogic, EventSchemaError, EventWindow

LABELS = ("punch", "hug", "other")


@dataclass
class Win:
    """The window fields EventLogic reads (pipeline.windows.Window has the same)."""

    camera: str
    track_ids: tuple[int, ...]
    start_frame: int
    end_frame: int
    start_ts: float
    end_ts: float


def win(i: int, camera: str = "cam1", tracks: tuple[int, ...] = (1, 2)) -> Win:
    """The i-th window of a stride-30, T=150 stream at 30 fps."""
    end = 149 + 30 * i
    return Win(camera, tracks, end - 149, end, 1000.0 + (end - 149) / 30, 1000.0 + end / 30)


def run(logic: EventLogic, punch_scores, hug=0.0, **kw) -> list[list[ActionEvent]]:
    out = []
    for i, p in enumerate(punch_scores):
        h = hug[i] if isinstance(hug, (list, tuple)) else hug
        out.append(logic.update(win(i, **kw), np.array([p, h, max(0.0, 1 - p - h)])))
    return out


def phases(batches) -> list[str]:
    return ["/".join(e.phase for e in b) or "-" for b in batches]


def test_start_update_end_with_one_event_id():
    logic = EventLogic(LABELS, threshold=0.6, end_threshold=0.4, smoothing=1.0, model_id="m1", clock=lambda: 42.0)
    batches = run(logic, [0.2, 0.7, 0.65, 0.5, 0.45, 0.3, 0.2])
    assert phases(batches) == ["-", "start", "update", "update", "update", "end", "-"]
    events = [e for b in batches for e in b]
    assert len({e.event_id for e in events}) == 1 and len(events[0].event_id) == 32
    assert all(e.label == "punch" and e.label_index == 0 and e.camera == "cam1" for e in events)
    assert all(e.track_ids == [1, 2] and e.model_id == "m1" and e.emitted_ts == 42.0 for e in events)
    start, end = events[0], events[-1]
    assert start.score == pytest.approx(0.7)
    assert start.window == EventWindow(win(1).start_ts, win(1).end_ts, win(1).start_frame, win(1).end_frame)
    # the end event spans the whole action: first window's start .. last active window's end (window 4)
    assert (end.window.start_frame, end.window.end_frame) == (win(1).start_frame, win(4).end_frame)
    assert end.score == pytest.approx(0.3)


def test_hysteresis_and_new_action_gets_new_id():
    logic = EventLogic(LABELS, threshold=0.6, end_threshold=0.4, smoothing=1.0)
    batches = run(logic, [0.7, 0.5, 0.41, 0.35, 0.55, 0.59, 0.61, 0.8])
    assert phases(batches) == ["start", "update", "update", "end", "-", "-", "start", "update"]
    first, second = batches[0][0].event_id, batches[6][0].event_id
    assert first != second and batches[3][0].event_id == first and batches[7][0].event_id == second


def test_ema_smoothing_of_scores():
    logic = EventLogic(LABELS, threshold=0.6, end_threshold=0.4, smoothing=0.5)
    batches = run(logic, [0.9, 0.1, 0.1, 0.9])
    # ema: 0.9 (first window initialises) -> 0.5 -> 0.3 -> 0.6
    assert phases(batches) == ["start", "update", "end", "start"]
    assert [b[0].score for b in batches] == pytest.approx([0.9, 0.5, 0.3, 0.6])
    # a single spike is smoothed away
    spiky = EventLogic(LABELS, threshold=0.6, end_threshold=0.4, smoothing=0.5)
    assert phases(run(spiky, [0.1, 0.1, 0.95, 0.1])) == ["-", "-", "-", "-"]


def test_top_label_change_ends_and_may_start_another():
    logic = EventLogic(LABELS, threshold=0.6, end_threshold=0.4, smoothing=1.0)
    batches = run(logic, [0.7, 0.45, 0.2, 0.1], hug=[0.1, 0.5, 0.7, 0.8])
    assert phases(batches) == ["start", "end", "start", "update"]
    assert batches[1][0].label == "punch" and batches[2][0].label == "hug"
    assert batches[2][0].event_id == batches[3][0].event_id != batches[0][0].event_id
    direct = EventLogic(LABELS, threshold=0.6, end_threshold=0.4, smoothing=1.0)
    b = run(direct, [0.7, 0.1], hug=[0.1, 0.8])
    assert phases(b) == ["start", "end/start"] and [e.label for e in b[1]] == ["punch", "hug"]


def test_ignored_labels_never_raise_events():
    logic = EventLogic(LABELS, threshold=0.6, end_threshold=0.4, smoothing=1.0, ignore_labels=("other",))
    assert phases(run(logic, [0.0, 0.05, 0.1])) == ["-", "-", "-"]  # "other" scores 1.0 .. 0.9
    scores = np.array([0.0, 0.0, 1.0])
    assert logic.update(win(5), scores) == []
    everything = EventLogic(LABELS, threshold=0.6, end_threshold=0.4, smoothing=1.0, ignore_labels=())
    events = everything.update(win(0), scores)
    assert [(e.phase, e.label) for e in events] == [("start", "other")]
    with pytest.raises(ValueError):
        EventLogic(LABELS, ignore_labels=LABELS)


def test_min_windows_requires_consecutive_windows():
    logic = EventLogic(LABELS, threshold=0.6, end_threshold=0.4, smoothing=1.0, min_windows=2)
    assert phases(run(logic, [0.7, 0.3, 0.7, 0.7, 0.7])) == ["-", "-", "-", "start", "update"]


def test_groups_and_cameras_are_independent():
    logic = EventLogic(LABELS, threshold=0.6, end_threshold=0.4, smoothing=1.0)
    a = logic.update(win(0, tracks=(2, 1)), np.array([0.9, 0.0, 0.1]))
    b = logic.update(win(0, tracks=(3,)), np.array([0.9, 0.0, 0.1]))
    c = logic.update(win(0, camera="cam2", tracks=(1, 2)), np.array([0.9, 0.0, 0.1]))
    ids = {a[0].event_id, b[0].event_id, c[0].event_id}
    assert len(ids) == 3 and a[0].track_ids == [1, 2]
    assert sorted(logic.groups("cam1")) == [(1, 2), (3,)] and logic.groups("cam2") == [(1, 2)]
    assert logic.update(win(1, tracks=(1, 2)), np.array([0.9, 0.0, 0.1]))[0].event_id == a[0].event_id


def test_end_group_end_track_and_flush_close_open_actions():
    logic = EventLogic(LABELS, threshold=0.6, end_threshold=0.4, smoothing=1.0)
    for tracks, cam in (((1, 2), "cam1"), ((3,), "cam1"), ((1,), "cam2"), ((4,), "cam1")):
        logic.update(win(0, camera=cam, tracks=tracks), np.array([0.9 if tracks != (4,) else 0.1, 0.0, 0.1]))
    assert len(logic.open_actions) == 3
    ended = logic.end_group("cam1", [2, 1])
    assert [(e.phase, e.track_ids) for e in ended] == [("end", [1, 2])]
    assert logic.end_group("cam1", [2, 1]) == []  # already closed and forgotten
    assert logic.end_track("cam1", 4) == [] and logic.groups("cam1") == [(3,)]  # state dropped, nothing open
    flushed = logic.flush()
    assert sorted((e.camera, e.phase) for e in flushed) == [("cam1", "end"), ("cam2", "end")]
    assert logic.open_actions == [] and logic.flush() == []


def test_bad_scores_raise():
    logic = EventLogic(LABELS)
    with pytest.raises(ValueError):
        logic.update(win(0), np.array([0.5, 0.5]))
    with pytest.raises(ValueError):
        logic.update(win(0), np.array([np.nan, 0.5, 0.5]))
    with pytest.raises(ValueError):
        EventLogic(LABELS, threshold=0.4, end_threshold=0.6)


# ---------------------------------------------------------------- schema

def sample_event(**overrides) -> ActionEvent:
    fields = dict(event_id="0123456789abcdef0123456789abcdef", phase="update", camera="cam1", track_ids=[3, 7],
                  label="punch", label_index=0, score=0.75, window=EventWindow(1.5, 6.5, 10, 159),
                  model_id="sarde-x", emitted_ts=1700000000.25)
    fields.update(overrides)
    return ActionEvent(**fields)


def test_schema_round_trip_is_compact_and_sorted():
    event = sample_event()
    text = event.to_json()
    assert " " not in text and "\n" not in text
    obj = json.loads(text)
    assert obj["schema"] == SCHEMA and list(obj) == sorted(obj) and list(obj["window"]) == sorted(obj["window"])
    assert ActionEvent.from_json(text) == event
    assert ActionEvent.from_json(text.encode()) == event
    assert ActionEvent.from_json(text).to_json() == text


@pytest.mark.parametrize("mutate", [
    lambda o: o.update(schema="sarde.event/4"),
    lambda o: o.update(schema=None),
    lambda o: o.update(schema=SCHEMA_V2),  # a v2 event has no clip key
    lambda o: o.pop("clip"),  # ... and a v3 event needs it
    lambda o: o.update(clip=3),
    lambda o: o.update(schema=SCHEMA_V1),  # a v1 event has no interrupted key
    lambda o: o.pop("interrupted"),  # ... and a v2 event needs it
    lambda o: o.update(interrupted=1),
    lambda o: o.update(interrupted=None),
    lambda o: o.update(interrupted=True),  # an update event: only ends can be interrupted
    lambda o: o.pop("label"),
    lambda o: o.update(extra=1),
    lambda o: o.update(phase="middle"),
    lambda o: o.update(score=1.5),
    lambda o: o.update(score="0.5"),
    lambda o: o.update(track_ids=[]),
    lambda o: o.update(track_ids=[True]),
    lambda o: o.update(label_index=-1),
    lambda o: o.update(event_id="not-a-uuid"),
    lambda o: o.update(camera=""),
    lambda o: o["window"].pop("end_ts"),
    lambda o: o["window"].update(start_frame=1.5),
    lambda o: o.update(window=[1, 2, 3, 4]),
])
def test_schema_rejects_malformed_objects(mutate):
    obj = json.loads(sample_event().to_json())
    mutate(obj)
    with pytest.raises(EventSchemaError):
        ActionEvent.from_json(json.dumps(obj))


def test_interrupted_is_false_unless_an_end_says_so():
    logic = EventLogic(LABELS, threshold=0.6, end_threshold=0.4, smoothing=1.0)
    events = [e for batch in run(logic, [0.9, 0.9, 0.1]) for e in batch]
    assert [e.phase for e in events] == ["start", "update", "end"]
    assert not any(e.interrupted for e in events) and all(e.schema == SCHEMA == "sarde.event/3" for e in events)
    assert all(json.loads(e.to_json())["interrupted"] is False for e in events)
    end = sample_event(phase="end", interrupted=True)
    assert json.loads(end.to_json())["interrupted"] is True and ActionEvent.from_json(end.to_json()) == end
    for phase in ("start", "update"):
        with pytest.raises(EventSchemaError, match="only end events"):
            sample_event(phase=phase, interrupted=True)


def test_version_1_events_are_still_read_as_written():
    """A journal row of the previous schema (no ``interrupted``) reads back as it was stored."""
    obj = json.loads(sample_event(phase="end").to_json())
    del obj["interrupted"], obj["snapshot"], obj["clip"]
    obj["schema"] = SCHEMA_V1
    text = json.dumps(obj, separators=(",", ":"), sort_keys=True)
    event = ActionEvent.from_json(text)
    assert event.schema == SCHEMA_V1 and event.interrupted is False and event.phase == "end"
    assert event.to_json() == text  # byte for byte: no interrupted key added to an old event
    with pytest.raises(EventSchemaError):
        sample_event(schema=SCHEMA_V1, phase="end", interrupted=True)


def test_version_2_events_are_still_read_as_written():
    """A journal row of ``sarde.event/2`` (no ``clip``) reads back as stored, its clip None."""
    obj = json.loads(sample_event(phase="start", snapshot="/media/cam/x.jpg").to_json())
    del obj["clip"]
    obj["schema"] = SCHEMA_V2
    text = json.dumps(obj, separators=(",", ":"), sort_keys=True)
    event = ActionEvent.from_json(text)
    assert event.schema == SCHEMA_V2 and event.clip is None and event.snapshot == "/media/cam/x.jpg"
    assert event.to_json() == text
    with pytest.raises(EventSchemaError, match="clip"):
        sample_event(schema=SCHEMA_V2, phase="start", clip="/media/cam/x.mp4")


def test_clip_only_on_start_events():
    assert json.loads(sample_event(phase="start", clip="/media/cam/x.mp4").to_json())["clip"] == "/media/cam/x.mp4"
    for phase in ("update", "end"):
        with pytest.raises(EventSchemaError, match="clip"):
            sample_event(phase=phase, clip="/media/cam/x.mp4")


def test_snapshot_only_on_start_events():
    assert json.loads(sample_event(phase="start", snapshot="/media/cam/x.jpg").to_json())["snapshot"] == "/media/cam/x.jpg"
    assert json.loads(sample_event(phase="end").to_json())["snapshot"] is None
    for phase in ("update", "end"):
        with pytest.raises(EventSchemaError, match="snapshot"):
            sample_event(phase=phase, snapshot="/media/cam/x.jpg")
    with pytest.raises(EventSchemaError):
        sample_event(phase="start", snapshot=3)


@pytest.mark.parametrize("text", ["", "{", "[]", "null", '"x"', b"\xff\xfe", '{"score": NaN}'])
def test_schema_rejects_non_events(text):
    with pytest.raises(EventSchemaError):
        ActionEvent.from_json(text)


def test_nan_score_rejected_and_constructor_validates():
    obj = json.loads(sample_event().to_json())
    text = json.dumps(obj).replace('"score": 0.75', '"score": NaN')
    with pytest.raises(EventSchemaError):
        ActionEvent.from_json(text)
    with pytest.raises(EventSchemaError):
        sample_event(phase="begin")


def test_pair_labels_need_two_tracks():
    from types import SimpleNamespace

    from pipeline.events import EventLogic

    logic = EventLogic(["fighting", "falling", "normal"], threshold=0.6, ignore_labels=["normal"],
                       pair_labels=["fighting"])
    one = SimpleNamespace(camera="c", track_ids=(4,), start_ts=0.0, end_ts=1.0, start_frame=0, end_frame=10)
    two = SimpleNamespace(camera="c", track_ids=(4, 9), start_ts=0.0, end_ts=1.0, start_frame=0, end_frame=10)
    assert logic.update(one, np.array([0.9, 0.05, 0.05])) == []  # one person cannot fight
    assert [e.label for e in logic.update(one, np.array([0.1, 0.85, 0.05]))] == []  # EMA of falling still < 0.6
    assert [e.label for e in logic.update(one, np.array([0.1, 0.9, 0.0]))] == ["falling"]  # single-person label
    assert [(e.phase, e.label) for e in logic.update(two, np.array([0.9, 0.05, 0.05]))] == [("start", "fighting")]


def test_pair_partner_needs_enough_joints():
    """events.pair_min_joints: a partner of 3-4 joints (a leftover of the other's body, a ghost) is not a person."""
    from types import SimpleNamespace

    from pipeline.events import EventLogic, pair_persons

    assert pair_persons((4, 9), (14.0, 3.0), 5) == 1
    assert pair_persons((4, 9), (14.0, 5.0), 5) == 2
    assert pair_persons((4, 9), (), 5) == 2 and pair_persons((4, 9), None, 5) == 2  # recorded before joints: tracks count
    assert pair_persons((4, 9), (14.0, 3.0), 0) == 2  # rule off

    def window(joints):
        return SimpleNamespace(camera="c", track_ids=(4, 9), start_ts=0.0, end_ts=1.0, start_frame=0, end_frame=10,
                               joints=joints)

    logic = EventLogic(["fighting", "normal"], threshold=0.6, ignore_labels=["normal"], pair_labels=["fighting"],
                       pair_min_joints=5)
    assert logic.update(window((14.0, 4.0)), np.array([0.95, 0.05])) == []  # the ghost partner: no fight
    ghost = logic._states[("c", (4, 9))].ema
    assert ghost[0] == 0.0  # zeroed before smoothing, as for a lone person
    assert [e.label for e in logic.update(window((14.0, 7.5)), np.array([0.95, 0.05]))] == []  # EMA 0.475
    assert [e.label for e in logic.update(window((14.0, 7.5)), np.array([0.95, 0.05]))] == ["fighting"]  # 0.71
    with pytest.raises(ValueError):
        EventLogic(["fighting", "normal"], pair_min_joints=19)
