"""Action events: the versioned event schema and the event logic that turns window scores into events.

Schema ``sarde.event/3`` (one JSON object, compact, sorted keys)::

    {"camera": str, "clip": str | null, "emitted_ts": float (Unix s), "event_id": str (32 hex, uuid4),
     "interrupted": bool, "label": str, "label_index": int >= 0, "model_id": str,
     "phase": "start" | "update" | "end", "schema": "sarde.event/3",
     "score": float in [0, 1] (smoothed), "snapshot": str | null,
     "track_ids": [int, ...] (ascending, >= 1 entry),
     "window": {"start_ts": float, "end_ts": float, "start_frame": int, "end_frame": int}}

One continuing action of one group of tracks is one ``event_id`` over its ``start``, any number of
``update`` and one ``end`` event. ``interrupted`` is true only on an ``end`` that the stage did not
observe: the stage that ran the action was killed (``kill -9``, power loss) and the next one closed
it at start-up from the journal (:meth:`pipeline.journal.EventJournal.open_actions`); every other
event has ``false``, an ordinary ``end`` included (the action's score fell, its track ended, or the
stream or the daemon stopped). ``snapshot`` is the path of the JPEG the stage saved when the action
started (the frame with the overlay, :mod:`pipeline.snapshots`; ``media.snapshot_dir``), only on
``start`` events and only when snapshots are on; ``null`` otherwise. ``clip`` is the path of the
short video of the action's start (pre-roll before the start event, post-roll after it, with the
overlay; :mod:`pipeline.event_clips`, ``media.clip_pre_s`` / ``clip_post_s``), only on ``start``
events and only when clips are on: the file appears there, whole (written, then renamed), once the
post-roll has been seen (at most ``clip_post_s`` seconds of the stream later, sooner if the stream
ends). Unknown keys are rejected: a change of the fields is a new schema version.

Older versions are still read and validated as they were written (``schema`` stays as stored, the
absent fields read as their defaults and ``to_json`` reproduces the stored text); new events are
always :data:`SCHEMA`. ``sarde.event/2`` is ``/3`` without ``clip``; ``sarde.event/1`` is ``/2``
without ``interrupted`` and ``snapshot``.
"""
from __future__ import annotations

import json
import logging
import math
import re
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Literal, Protocol, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: The schema of the events this code writes.
SCHEMA = "sarde.event/3"
#: Older schemas, still accepted when reading: ``/2`` has no ``clip``, ``/1`` neither ``interrupted`` nor ``snapshot``.
SCHEMA_V2 = "sarde.event/2"
SCHEMA_V1 = "sarde.event/1"
#: Every schema :meth:`ActionEvent.from_json` accepts.
SCHEMAS: tuple[str, ...] = (SCHEMA_V1, SCHEMA_V2, SCHEMA)
PHASES: tuple[str, ...] = ("start", "update", "end")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")


class EventSchemaError(ValueError):
    """A serialised event does not follow the schema it names (:data:`SCHEMAS`)."""


@dataclass(frozen=True)
class EventWindow:
    """Time span an event refers to: capture timestamps (Unix s) and camera frame numbers."""

    start_ts: float
    end_ts: float
    start_frame: int
    end_frame: int


@dataclass(frozen=True)
class ActionEvent:
    """One phase of one recognised action of one group of tracks on one camera.

    Attributes:
        event_id: uuid4 hex (32 chars), the same for all phases of one action.
        phase: ``"start"``, ``"update"`` or ``"end"``.
        camera: camera id.
        track_ids: the tracks of the window (ascending).
        label: class name; label_index: its index in the model's label list.
        score: smoothed score of the label, in ``[0, 1]``.
        window: span of the window that produced a start/update event; for an end event the span of
            the whole action (start of its first window to the end of its last active window).
        model_id: id of the model that produced the scores.
        emitted_ts: Unix time the event was created, seconds.
        interrupted: an ``end`` the next stage emitted for an action its killed predecessor left
            open (module docstring); false for every other event. Only ``end`` events may be
            interrupted, and only in :data:`SCHEMA`.
        snapshot: path of the start event's JPEG snapshot (module docstring), else None.
        clip: path of the start event's video clip (module docstring), else None.
        schema: :data:`SCHEMA` for new events; an older one of :data:`SCHEMAS` for events read from an old journal.

    Raises:
        EventSchemaError: on construction, if a field breaks the schema.
    """

    event_id: str
    phase: Literal["start", "update", "end"]
    camera: str
    track_ids: list[int]
    label: str
    label_index: int
    score: float
    window: EventWindow
    model_id: str
    emitted_ts: float
    interrupted: bool = False
    snapshot: str | None = None
    clip: str | None = None
    schema: str = field(default=SCHEMA)

    def __post_init__(self) -> None:
        absent = _ABSENT.get(self.schema, {})
        wrong = sorted(k for k, default in absent.items() if getattr(self, k) != default)
        if wrong:
            raise EventSchemaError(f"{self.schema} events have no {wrong} (use {SCHEMA})")
        _validate(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of the JSON form of its own ``schema`` (an older schema's event lacks the
        fields added after it)."""
        obj = asdict(self)
        for key in _ABSENT.get(self.schema, {}):
            del obj[key]
        return obj

    def to_json(self) -> str:
        """Compact JSON, sorted keys (byte-stable for equal events)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True, allow_nan=False)

    @classmethod
    def from_dict(cls, obj: Any) -> "ActionEvent":
        """Validate a decoded JSON object and build the event. Raises :class:`EventSchemaError`."""
        _validate(obj)
        w = obj["window"]
        return cls(event_id=obj["event_id"], phase=obj["phase"], camera=obj["camera"],
                   track_ids=list(obj["track_ids"]), label=obj["label"], label_index=obj["label_index"],
                   score=float(obj["score"]), model_id=obj["model_id"], emitted_ts=float(obj["emitted_ts"]),
                   window=EventWindow(start_ts=float(w["start_ts"]), end_ts=float(w["end_ts"]),
                                      start_frame=w["start_frame"], end_frame=w["end_frame"]),
                   interrupted=obj.get("interrupted", False), snapshot=obj.get("snapshot"), clip=obj.get("clip"),
                   schema=obj["schema"])

    @classmethod
    def from_json(cls, text: str | bytes) -> "ActionEvent":
        """Parse and validate one serialised event. Raises :class:`EventSchemaError`."""
        try:
            obj = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError is a ValueError
            raise EventSchemaError(f"not JSON: {exc}") from exc
        return cls.from_dict(obj)


_FIELDS: dict[str, tuple[type, ...]] = {
    "event_id": (str,), "phase": (str,), "camera": (str,), "track_ids": (list,), "label": (str,),
    "label_index": (int,), "score": (int, float), "window": (dict,), "model_id": (str,),
    "emitted_ts": (int, float), "schema": (str,), "interrupted": (bool,), "snapshot": (str, type(None)),
    "clip": (str, type(None)),
}
#: Per older schema, the fields it lacks and the value they read as.
_ABSENT: dict[str, dict[str, Any]] = {
    SCHEMA_V2: {"clip": None},
    SCHEMA_V1: {"interrupted": False, "snapshot": None, "clip": None},
}
_WINDOW_FIELDS: dict[str, tuple[type, ...]] = {
    "start_ts": (int, float), "end_ts": (int, float), "start_frame": (int,), "end_frame": (int,),
}


def _check_fields(obj: Any, fields: dict[str, tuple[type, ...]], where: str) -> None:
    if not isinstance(obj, dict):
        raise EventSchemaError(f"{where} must be an object, got {type(obj).__name__}")
    missing = fields.keys() - obj.keys()
    extra = obj.keys() - fields.keys()
    if missing or extra:
        raise EventSchemaError(f"{where}: missing keys {sorted(missing)}, unknown keys {sorted(extra)}")
    for key, types in fields.items():
        value = obj[key]
        if isinstance(value, bool) != (bool in types) or not isinstance(value, types):
            raise EventSchemaError(f"{where}.{key} has type {type(value).__name__}")
        if isinstance(value, float) and not math.isfinite(value):
            raise EventSchemaError(f"{where}.{key} is not finite")


def _validate(obj: Any) -> None:
    """Check a dict against the schema it names (:data:`SCHEMAS`); raises :class:`EventSchemaError`."""
    if not isinstance(obj, dict):
        raise EventSchemaError(f"event must be an object, got {type(obj).__name__}")
    schema = obj.get("schema")
    if not isinstance(schema, str) or schema not in SCHEMAS:
        raise EventSchemaError(f"unsupported schema {str(schema)[:40]!r}, expected one of {SCHEMAS}")
    _check_fields(obj, {k: v for k, v in _FIELDS.items() if k not in _ABSENT.get(schema, {})}, "event")
    if obj.get("interrupted") and obj["phase"] != "end":
        raise EventSchemaError(f"only end events can be interrupted, got a {str(obj['phase'])[:20]!r} event")
    for media in ("snapshot", "clip"):
        if obj.get(media) is not None and (obj["phase"] != "start" or not obj[media]):
            raise EventSchemaError(f"only start events carry a {media} path, got a {str(obj['phase'])[:20]!r} event")
    if not _HEX32.match(obj["event_id"]):
        raise EventSchemaError(f"event_id must be 32 lowercase hex chars, got {obj['event_id']!r}")
    if obj["phase"] not in PHASES:
        raise EventSchemaError(f"phase must be one of {PHASES}, got {obj['phase']!r}")
    if not obj["camera"] or not obj["label"]:
        raise EventSchemaError("camera and label must be non-empty")
    ids = obj["track_ids"]
    if not ids or any(isinstance(t, bool) or not isinstance(t, int) for t in ids):
        raise EventSchemaError(f"track_ids must be a non-empty list of ints, got {ids!r}")
    if obj["label_index"] < 0:
        raise EventSchemaError(f"label_index must be >= 0, got {obj['label_index']}")
    if not 0.0 <= obj["score"] <= 1.0:
        raise EventSchemaError(f"score must be in [0, 1], got {obj['score']}")
    _check_fields(obj["window"], _WINDOW_FIELDS, "event.window")


class WindowInfo(Protocol):
    """What :meth:`EventLogic.update` reads of a window (``pipeline.windows.Window`` has it)."""

    camera: str
    track_ids: Sequence[int]
    start_ts: float
    end_ts: float
    start_frame: int
    end_frame: int
    # optional: ``joints`` (per person, median joints found; ``pipeline.windows.Window``), read by
    # :func:`pair_persons` where present


def pair_persons(track_ids: Sequence[int], joints: Sequence[float] | None, min_joints: int) -> int:
    """Persons of a window that count for the pair rule (``events.pair_labels``): its tracks whose
    median number of joints found (``joints``, order of ``track_ids``) is at least ``min_joints``; every
    track when ``joints`` is missing or empty (a window recorded before they were) or ``min_joints``
    is 0. A partner of 3-4 joints is mostly a leftover of the other person's body, a blur ghost or a
    fragment the tracker kept (``docs/REAL-VIDEO.md``), and two people are what a fight or a hug needs."""
    if not joints or min_joints <= 0:
        return len(tuple(track_ids))
    return sum(1 for j in joints if float(j) >= min_joints)


GroupKey = tuple[int, ...]


@dataclass
class _GroupState:
    ema: np.ndarray  # (K,) smoothed scores
    track_ids: list[int]
    active: int | None = None  # label index of the open action
    event_id: str = ""
    action_start: EventWindow | None = None  # window that started the open action
    last_active: EventWindow | None = None  # latest window in which it was still active
    pending: int | None = None  # label over threshold, not yet min_windows long
    pending_count: int = 0


class EventLogic:
    """Turns per-window class scores into start / update / end events, per camera and track group.

    Per group of tracks (key: camera + ascending track ids) the score vector is smoothed with an EMA
    (``ema = smoothing * scores + (1 - smoothing) * ema``; the first window initialises it). Let
    ``top`` be the non-ignored label with the highest smoothed score.

    * No open action: when ``ema[top] >= threshold`` for ``min_windows`` consecutive windows (same
      ``top``), a ``start`` event opens an action with a new ``event_id``.
    * Open action of label ``a``: if ``top == a`` and ``ema[a] >= end_threshold`` (hysteresis) an
      ``update`` event is emitted for the window; otherwise an ``end`` event closes it, and the same
      window may start a new action.

    Args:
        labels: the model's class names, ``K`` of them.
        threshold: smoothed score that starts an action (0..1].
        end_threshold: smoothed score below which an open action ends; ``<= threshold``.
        smoothing: EMA weight of the newest window (0..1]; 1 = no smoothing.
        min_windows: consecutive windows over ``threshold`` needed to start.
        ignore_labels: labels that never raise events (e.g. the negative class).
        pair_labels: interaction labels a single-person window cannot have: their scores are zeroed
            (before smoothing) for windows of fewer than two persons (:func:`pair_persons`). A hug, a
            handshake or a fight needs two people in view; without the rule a lone walker's window
            can raise `hugging`.
        pair_min_joints: the median joints a track needs in the window to count as one of those
            persons (:func:`pair_persons`; 0 = every track counts).
        model_id: stamped on every event.
        clock: source of ``emitted_ts`` (Unix seconds).

    Raises:
        ValueError: on inconsistent arguments.
    """

    def __init__(self, labels: Sequence[str], threshold: float = 0.6, end_threshold: float = 0.4,
                 smoothing: float = 0.5, min_windows: int = 1, ignore_labels: Iterable[str] = ("other",),
                 *, model_id: str = "", clock: Callable[[], float] = time.time, pair_labels: Iterable[str] = (),
                 pair_min_joints: int = 0):
        self.labels = [str(label) for label in labels]
        if not self.labels:
            raise ValueError("labels must not be empty")
        if not 0 < end_threshold <= threshold <= 1:
            raise ValueError(f"need 0 < end_threshold <= threshold <= 1, got {end_threshold}, {threshold}")
        if not 0 < smoothing <= 1:
            raise ValueError(f"smoothing must be in (0, 1], got {smoothing}")
        if min_windows < 1:
            raise ValueError(f"min_windows must be >= 1, got {min_windows}")
        if not 0 <= pair_min_joints <= 18:
            raise ValueError(f"pair_min_joints must be in [0, 18], got {pair_min_joints}")
        self.pair_min_joints = int(pair_min_joints)
        ignored = set(ignore_labels)
        self._allowed = np.array([label not in ignored for label in self.labels])  # (K,)
        pairs = set(pair_labels)
        self._pair = np.array([label in pairs for label in self.labels])  # (K,)
        if not self._allowed.any():
            raise ValueError("every label is ignored")
        self.threshold = float(threshold)
        self.end_threshold = float(end_threshold)
        self.smoothing = float(smoothing)
        self.min_windows = int(min_windows)
        self.model_id = model_id
        self._clock = clock
        self._states: dict[tuple[str, GroupKey], _GroupState] = {}

    @property
    def open_actions(self) -> list[tuple[str, GroupKey, str]]:
        """``(camera, track group, label)`` of every open action."""
        return [(cam, key, self.labels[st.active]) for (cam, key), st in self._states.items() if st.active is not None]

    def groups(self, camera: str) -> list[GroupKey]:
        """Track groups of ``camera`` with state (open action or smoothed scores)."""
        return [key for cam, key in self._states if cam == camera]

    def update(self, window: WindowInfo, scores: np.ndarray) -> list[ActionEvent]:
        """Fold one classified window into its group's state.

        Args:
            window: the classified window (camera, track ids, span).
            scores: ``(K,)`` class probabilities of the window (clipped to ``[0, 1]``).

        Returns:
            The events caused by this window, in order (at most an ``end`` then a ``start``).

        Raises:
            ValueError: on a wrongly shaped or non-finite score vector.
        """
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        if s.shape != (len(self.labels),):
            raise ValueError(f"scores must have shape ({len(self.labels)},), got {np.shape(scores)}")
        if not np.isfinite(s).all():
            raise ValueError("scores must be finite")
        s = np.clip(s, 0.0, 1.0)
        if self._pair.any() and pair_persons(window.track_ids, getattr(window, "joints", None), self.pair_min_joints) < 2:
            s = np.where(self._pair, 0.0, s)
        key = _key(window.track_ids)
        span = EventWindow(start_ts=float(window.start_ts), end_ts=float(window.end_ts),
                           start_frame=int(window.start_frame), end_frame=int(window.end_frame))
        st = self._states.get((window.camera, key))
        if st is None:
            st = self._states[(window.camera, key)] = _GroupState(ema=s.copy(), track_ids=list(key))
        else:
            st.ema = self.smoothing * s + (1.0 - self.smoothing) * st.ema
        top = int(np.argmax(np.where(self._allowed, st.ema, -np.inf)))
        events: list[ActionEvent] = []
        if st.active is not None:
            if top == st.active and st.ema[top] >= self.end_threshold:
                st.last_active = span
                return [self._event(st, window.camera, "update", span)]
            events.append(self._end(st, window.camera))
        if st.ema[top] >= self.threshold:
            st.pending_count = st.pending_count + 1 if st.pending == top else 1
            st.pending = top
            if st.pending_count >= self.min_windows:
                st.active, st.event_id = top, uuid.uuid4().hex
                st.action_start = st.last_active = span
                st.pending, st.pending_count = None, 0
                events.append(self._event(st, window.camera, "start", span))
        else:
            st.pending, st.pending_count = None, 0
        return events

    def end_group(self, camera: str, key: Iterable[int]) -> list[ActionEvent]:
        """Close the group's open action (if any) and forget the group, e.g. when a track ends."""
        st = self._states.pop((camera, _key(key)), None)
        return [self._end(st, camera)] if st is not None and st.active is not None else []

    def end_track(self, camera: str, track_id: int) -> list[ActionEvent]:
        """:meth:`end_group` for every group of ``camera`` that contains ``track_id``."""
        events: list[ActionEvent] = []
        for cam, key in [k for k in self._states if k[0] == camera and track_id in k[1]]:
            events.extend(self.end_group(cam, key))
        return events

    def retune(self, other: "EventLogic") -> list[ActionEvent]:
        """Take ``other``'s thresholds, smoothing, ``min_windows``, ignored and pair labels and
        ``pair_min_joints`` (a config reload; the labels must be the same), keeping every group's
        state: open actions go on with their ``event_id``. Returns the ``end`` events of open actions
        whose label may no longer raise events.

        Raises:
            ValueError: ``other`` has other labels (a new model: end and replace the logic instead).
        """
        if other.labels != self.labels:
            raise ValueError("retune needs the same labels; a new model gets a new EventLogic")
        self.threshold, self.end_threshold = other.threshold, other.end_threshold
        self.smoothing, self.min_windows = other.smoothing, other.min_windows
        self._allowed, self._pair = other._allowed.copy(), other._pair.copy()
        self.pair_min_joints = other.pair_min_joints
        return [self._end(st, cam) for (cam, _), st in self._states.items()
                if st.active is not None and not self._allowed[st.active]]

    def flush(self) -> list[ActionEvent]:
        """Close every open action and forget all state (shutdown)."""
        events = [self._end(st, cam) for (cam, _), st in self._states.items() if st.active is not None]
        self._states.clear()
        return events

    def _end(self, st: _GroupState, camera: str) -> ActionEvent:
        span = EventWindow(start_ts=st.action_start.start_ts, end_ts=st.last_active.end_ts,
                           start_frame=st.action_start.start_frame, end_frame=st.last_active.end_frame)
        event = self._event(st, camera, "end", span)
        st.active, st.event_id, st.action_start, st.last_active = None, "", None, None
        return event

    def _event(self, st: _GroupState, camera: str, phase: str, span: EventWindow) -> ActionEvent:
        idx = st.active
        return ActionEvent(event_id=st.event_id, phase=phase, camera=camera, track_ids=list(st.track_ids),
                           label=self.labels[idx], label_index=idx, score=float(st.ema[idx]), window=span,
                           model_id=self.model_id, emitted_ts=float(self._clock()))


def _key(track_ids: Iterable[int]) -> GroupKey:
    return tuple(sorted(int(t) for t in track_ids))
