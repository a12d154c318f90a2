"""Config reload without a restart (SIGHUP to ``sarde run``).

:class:`Reloader` re-reads the config file (the same loader as start-up: every key validated), and
applies what can change while the stage runs, between two batches, on the stage's post-processing
thread (``Stage.run``'s ``idle`` hook), so no window is classified half by the old and half by the
new settings:

* ``events``: thresholds, smoothing, ``min_windows``, ``ignore_labels`` / ``alert_labels`` /
  ``pair_labels`` (checked against the model's labels), ``pair_min_joints``. Open actions go on with their ``event_id``
  (:meth:`pipeline.events.EventLogic.retune`); an open action whose label may no longer alert gets its
  ``end``. ``debug_topk`` / ``debug_interval_s`` too.
* ``sources`` (``sarde run``): a source that is new (by name) gets a reader process and a session
  token; a source that is gone has its reader stopped and its camera ended (tracks flushed, open
  actions ended); a source whose URL or settings changed is both.
* ``recognizer.model``: the new manifest is loaded and checked against ``T``, ``M`` and fps first;
  then every open action of the old model gets its ``end`` and the new model and event logic take
  over (``Stage.swap_model``). Events are neither lost nor duplicated: each action has exactly one
  ``start`` and one ``end``.

Anything invalid (a bad key or value, a missing manifest, labels the model lacks) rejects the whole
reload: logged in one line, counted (``sarde_config_reloads_total{result="rejected"}``), and the
running config stays. Changes to other sections (paths, transport, detector, window geometry,
tracking, sources, outputs) need a restart: they are logged as not applied.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from engines.errors import UserError

log = logging.getLogger(__name__)

#: (section, key or None for the whole section) that a reload applies.
APPLIED = {("events", k) for k in ("threshold", "end_threshold", "smoothing", "min_windows", "ignore_labels",
                                   "alert_labels", "pair_labels", "pair_min_joints", "debug_topk", "debug_interval_s")} | {("recognizer", "model")}


def _flat(cfg) -> dict[tuple[str, str], object]:
    data = cfg.model_dump(mode="json")
    out = {}
    for section, value in data.items():
        if isinstance(value, dict):
            out.update({(section, k): v for k, v in value.items()})
        else:
            out[(section, "")] = value
    return out


def _source_key(s) -> str:
    return s.model_dump_json()


class Reloader:
    """Applies config reloads to a running stage (module docstring).

    Args:
        stage: the running :class:`pipeline.stage.Stage`.
        cfg: the config it runs with.
        load: returns the new config (validated; ``recognizer.model: default`` resolved); raises
            ``UserError`` (config errors) when it cannot.
        make_logic: ``(cfg, recognizer) -> EventLogic`` (:func:`pipeline.daemon.event_logic`).
        load_recognizer: ``cfg -> Recognizer`` (:func:`pipeline.daemon.load_recognizer`).
        wanted: set by the SIGHUP handler to request a reload (default: a new event, see :meth:`request`).
        add_source, remove_source: ``(cfg, SourceConfig)`` / ``(name)`` callables that start or stop a
            reader (``sarde run``); None: sources need a restart.
    """

    def __init__(self, stage, cfg, load: Callable, make_logic: Callable, load_recognizer: Callable,
                 wanted: threading.Event | None = None, add_source: Callable | None = None,
                 remove_source: Callable | None = None):
        self.stage, self.cfg = stage, cfg
        self._load, self._make_logic, self._load_recognizer = load, make_logic, load_recognizer
        self._add_source, self._remove_source = add_source, remove_source
        self._pending: list = []  # sources to start once their old camera (same name) has ended
        self._wanted = wanted if wanted is not None else threading.Event()

    def request(self) -> None:
        """Ask for a reload (safe from a signal handler); it happens at the next :meth:`check`."""
        self._wanted.set()

    def check(self) -> None:
        """Reload now if one was requested (call between batches, on the stage's post thread)."""
        if self._pending:
            waiting = []
            for src in self._pending:
                if self.stage.forget_camera(src.name):
                    self._add_source(src)
                else:
                    waiting.append(src)
            self._pending = waiting
        if not self._wanted.is_set():
            return
        self._wanted.clear()
        metrics = self.stage.metrics
        try:
            new = self._load()
            before, after = _flat(self.cfg), _flat(new)
            changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
            recognizer = self.stage.recognizer
            if ("recognizer", "model") in changed:
                recognizer = self._load_recognizer(new)
            logic = self._make_logic(new, recognizer) if recognizer is not None else None
        except (UserError, ValueError, OSError) as exc:
            metrics.config_reloads.labels("rejected").inc()
            log.error("config reload rejected, the running config stays: %s", str(exc).splitlines()[0] if str(exc) else exc)
            return
        sources_changed = ("sources", "") in changed and self._add_source is not None
        ignored = [".".join(k).strip(".") for k in changed if k not in APPLIED and not (sources_changed and k[0] == "sources")]
        if ignored:
            log.warning("config reload: %s change(s) need a restart and were not applied", ", ".join(ignored))
        if recognizer is not self.stage.recognizer:
            self.stage.swap_model(recognizer, logic)
        elif logic is not None and self.stage.logic is not None:
            self.stage.emit_events(self.stage.logic.retune(logic))
        self.stage.s.debug_topk, self.stage.s.debug_interval_s = new.events.debug_topk, new.events.debug_interval_s
        applied = [".".join(k) for k in changed if k in APPLIED]
        if sources_changed:
            applied.append(self._apply_sources(self.cfg.sources, new.sources))
        # what was not applied stays as it runs, so the next reload compares against the running state
        kept = {k[0] for k in changed if k not in APPLIED} - {"events", "recognizer"} - ({"sources"} if sources_changed else set())
        self.cfg = new.model_copy(update={s: getattr(self.cfg, s) for s in kept})
        metrics.config_reloads.labels("applied").inc()
        log.info("config reloaded: %s", ", ".join(applied) if applied else "nothing to apply")

    def _apply_sources(self, old: list, new: list) -> str:
        """Stop the readers of removed or changed sources, start those of new or changed ones."""
        before = {s.name: _source_key(s) for s in old}
        after = {s.name: s for s in new}
        gone = [n for n in before if n not in after or _source_key(after[n]) != before[n]]
        added = [s for s in new if s.name not in before or before[s.name] != _source_key(s)]
        for name in gone:
            self._remove_source(name)
        self._pending.extend(added)  # started at the next check, once an old camera of the name has ended
        return f"sources (+{[s.name for s in added]}, -{gone})"
