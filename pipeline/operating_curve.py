"""Operating curve of the deployed event logic: the alerts each clip raises at other start thresholds,
replayed from the window scores the daemon recorded.

An operator chooses ``events.threshold`` by a trade-off: a higher one misses more fights, a lower one
raises more false alarms. This module measures that trade-off on labelled clips without re-running
the detector or the recogniser. During ``sarde eval video`` the stage records every classified window
with its ``(K,)`` scores (``pipeline.recorder``, ``<run>.windows.jsonl``). Replaying one clip's windows,
in the order the stage classified them, through a fresh :class:`pipeline.events.EventLogic` with the
deployed smoothing, ``min_windows``, silent labels and pair rule but another ``threshold`` gives the
``start`` events the daemon would have emitted with that threshold: the logic is deterministic given
the scores, and the state it drops when a track ends is keyed by track ids that never come back. At the
deployed threshold the replay gives the journal's own alerts (``tests/test_recognition_real.py``).

Which labels *start* on a clip does not depend on ``end_threshold`` (an open action of label ``a``
only blocks a start of ``a`` itself), so the replay keeps the deployed one, capped at the threshold.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from pipeline.events import EventLogic, pair_persons

#: Start thresholds of the curve (the deployed one is added).
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.30, 0.951, 0.05))


@dataclass(frozen=True)
class _Window:
    """What :meth:`EventLogic.update` reads, rebuilt from one recorded window line."""

    camera: str
    track_ids: tuple[int, ...]
    start_ts: float
    end_ts: float
    start_frame: int
    end_frame: int
    joints: tuple[float, ...] = ()


def replay_alerts(windows: Sequence[dict], labels: Sequence[str], *, threshold: float, end_threshold: float,
                  smoothing: float, min_windows: int, silent: Iterable[str], pair_labels: Iterable[str],
                  pair_min_joints: int = 0) -> list[str]:
    """Labels that start on one clip when its recorded windows are replayed through the event logic.

    Args:
        windows: the clip's recorded windows in classification order, each with ``track_ids``,
            ``start_frame``, ``end_frame`` and ``scores`` (``(K,)`` probabilities, label order of
            ``labels``); ``camera`` and ``joints`` (per person, for ``pair_min_joints``) optional.
        labels: the model's ``K`` labels.
        threshold: start threshold of the replay (0..1].
        end_threshold: the deployed end threshold (capped at ``threshold``).
        smoothing, min_windows, silent, pair_labels, pair_min_joints: as deployed (``events.*``,
            ``silent_labels``; :func:`pipeline.events.pair_persons`).

    Returns:
        Sorted labels with at least one ``start`` event.

    Raises:
        KeyError: a window has no ``scores`` (recorded in record-only mode).
        ValueError: scores of the wrong length, or invalid thresholds (as :class:`EventLogic`).
    """
    logic = EventLogic(labels, threshold=threshold, end_threshold=min(end_threshold, threshold), smoothing=smoothing,
                       min_windows=min_windows, ignore_labels=tuple(silent), pair_labels=tuple(pair_labels),
                       pair_min_joints=pair_min_joints)
    started: set[str] = set()
    for w in windows:
        info = _Window(camera=str(w.get("camera", "")), track_ids=tuple(int(t) for t in w["track_ids"]),
                       start_ts=float(w["start_frame"]), end_ts=float(w["end_frame"]),
                       start_frame=int(w["start_frame"]), end_frame=int(w["end_frame"]),
                       joints=tuple(float(j) for j in w.get("joints") or ()))
        for ev in logic.update(info, np.asarray(w["scores"], dtype=np.float64)):
            if ev.phase == "start":
                started.add(ev.label)
    return sorted(started)


def operating_curve(clips: Sequence, window_scores: dict[str, list[dict]], labels: Sequence[str], events,
                    silent: Iterable[str], thresholds: Iterable[float] = THRESHOLDS, target_false_alarms: float = 0.10) -> dict:
    """Clip recall and false alarms per alert label over a sweep of start thresholds.

    Args:
        clips: ``pipeline.clips.Clip`` objects (``clip_id``, ``alerts``: expected labels, empty = quiet).
        window_scores: ``{clip_id: recorded windows}`` (``run_clips``' ``window_scores``); every clip
            of ``clips`` must be present (a clip without windows has ``[]``).
        labels: the model's labels; ``events``: the deployed ``cfg.events``; ``silent``: labels that
            never alert (``pipeline.daemon.silent_labels``).
        thresholds: start thresholds to replay; ``events.threshold`` is always added.
        target_false_alarms: the share of quiet clips with any alert an operator accepts; the result's
            ``at_target`` is the lowest threshold of the sweep that stays within it.

    Returns:
        ``{"thresholds": [t ...], "deployed": t, "quiet_clips": n, "rows": [{"threshold", "quiet_with_any_alert",
        "false_alarm_rate_any", "per_label": {label: {"hits", "expected", "recall", "false_alarms"}}}],
        "at_target": row or None, "target_false_alarms": f}``; recall is ``None`` for a label no clip expects.
    """
    silent = set(silent)
    alert_labels = [label for label in labels if label not in silent]
    grid = sorted({round(float(t), 4) for t in thresholds} | {round(float(events.threshold), 4)})
    quiet = [c for c in clips if not c.alerts]
    rows = []
    for t in grid:
        raised = {c.clip_id: replay_alerts(window_scores[c.clip_id], labels, threshold=t,
                                           end_threshold=events.end_threshold, smoothing=events.smoothing,
                                           min_windows=events.min_windows, silent=silent,
                                           pair_labels=events.pair_labels,
                                           pair_min_joints=events.pair_min_joints) for c in clips}
        per_label = {}
        for label in alert_labels:
            expect = [c for c in clips if label in c.alerts]
            hits = sum(1 for c in expect if label in raised[c.clip_id])
            per_label[label] = {"expected": len(expect), "hits": hits, "recall": hits / len(expect) if expect else None,
                                "false_alarms": sum(1 for c in quiet if label in raised[c.clip_id])}
        any_alarm = sum(1 for c in quiet if raised[c.clip_id])
        rows.append({"threshold": t, "quiet_with_any_alert": any_alarm,
                     "false_alarm_rate_any": any_alarm / len(quiet) if quiet else None, "per_label": per_label})
    within = [r for r in rows if r["false_alarm_rate_any"] is not None and r["false_alarm_rate_any"] <= target_false_alarms]
    return {"thresholds": grid, "deployed": round(float(events.threshold), 4), "quiet_clips": len(quiet), "rows": rows,
            "target_false_alarms": target_false_alarms, "at_target": within[0] if within else None}


def cv_threshold(folds: Sequence[Sequence], window_scores: dict[str, list[dict]], labels: Sequence[str], events,
                 silent: Iterable[str], thresholds: Iterable[float] = THRESHOLDS, target_false_alarms: float = 0.10) -> dict:
    """The start threshold chosen by cross-validation, and what it gives on clips it was not chosen on.

    For each fold ``k`` the threshold is chosen on the *other* folds' clips (each scored by its own
    fold's model): the lowest of the sweep whose share of quiet clips with any alert is at most
    ``target_false_alarms`` (the highest of the sweep when none is). Fold ``k``'s clips are then
    replayed at that threshold. The pooled figures therefore never use a threshold picked on the clips
    they count, unlike reading the operating curve at its best point.

    Args:
        folds: the clips of each fold (``pipeline.clips.Clip``), as cross-validated.
        window_scores, labels, events, silent, thresholds, target_false_alarms: as :func:`operating_curve`.

    Returns:
        ``{"target_false_alarms": f, "folds": [{"threshold", "quiet_clips", "quiet_with_any_alert",
        "per_label": {label: {"hits", "expected", "recall", "false_alarms"}}}], "overall": {the same,
        pooled, without "threshold"}}``.

    Raises:
        ValueError: fewer than two folds.
    """
    if len(folds) < 2:
        raise ValueError(f"cv_threshold needs at least two folds, got {len(folds)}")
    grid = sorted({round(float(t), 4) for t in thresholds})
    silent = set(silent)
    per_fold = []
    for k, held in enumerate(folds):
        rest = [c for j, f in enumerate(folds) if j != k for c in f]
        chosen = operating_curve(rest, window_scores, labels, events, silent, grid, target_false_alarms)["at_target"]
        t = chosen["threshold"] if chosen else grid[-1]
        row = next(r for r in operating_curve(held, window_scores, labels, events, silent, [t])["rows"] if r["threshold"] == t)
        per_fold.append({"threshold": t, "quiet_clips": sum(1 for c in held if not c.alerts),
                         "quiet_with_any_alert": row["quiet_with_any_alert"], "per_label": row["per_label"]})
    overall = {"quiet_clips": sum(f["quiet_clips"] for f in per_fold),
               "quiet_with_any_alert": sum(f["quiet_with_any_alert"] for f in per_fold), "per_label": {}}
    for label in per_fold[0]["per_label"]:
        hits = sum(f["per_label"][label]["hits"] for f in per_fold)
        expected = sum(f["per_label"][label]["expected"] for f in per_fold)
        overall["per_label"][label] = {"hits": hits, "expected": expected, "recall": hits / expected if expected else None,
                                       "false_alarms": sum(f["per_label"][label]["false_alarms"] for f in per_fold)}
    return {"target_false_alarms": target_false_alarms, "folds": per_fold, "overall": overall}


def roc_auc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """Area under the ROC curve: the probability that a random positive scores above a random
    negative, ties counting one half (the Mann-Whitney U statistic over ``len(positive) x
    len(negative)``); ``None`` when either side is empty."""
    pos, neg = np.asarray(positive, np.float64), np.asarray(negative, np.float64)
    if not len(pos) or not len(neg):
        return None
    diff = pos[:, None] - neg[None, :]  # (P, N): a few hundred clips or windows a side
    return float((diff > 0).mean() + 0.5 * (diff == 0).mean())


def separation(clips: Sequence, window_scores: dict[str, list[dict]], labels: Sequence[str], events,
               silent: Iterable[str]) -> dict:
    """How well each alert label's score separates the clips that expect it from the quiet clips,
    independent of any threshold: ROC AUC (:func:`roc_auc`) at two levels.

    * **window**: the label's score of every window of the clips expecting it against every window of
      the quiet clips; for a label of ``events.pair_labels`` only windows of two or more persons count
      (:func:`pipeline.events.pair_persons`; the others cannot raise it);
    * **clip**: per clip the highest such window score (0 for a clip without one), expecting clips
      against quiet clips, the level at which the alerts are counted.

    Labels no clip expects are left out. 0.5 is chance, 1.0 a threshold that makes no error.

    Returns:
        ``{label: {"window_auc", "windows": [positive, negative], "clip_auc", "clips": [positive, negative]}}``.
    """
    silent, pair = set(silent), set(events.pair_labels)
    quiet = [c for c in clips if not c.alerts]
    out = {}
    for k, label in enumerate(labels):
        expect = [c for c in clips if label in c.alerts]
        if label in silent or not expect:
            continue

        def scores(clip) -> list[float]:
            need = 2 if label in pair else 1
            return [float(w["scores"][k]) for w in window_scores[clip.clip_id]
                    if pair_persons(w["track_ids"], w.get("joints"), events.pair_min_joints) >= need]

        pos_w = [s for c in expect for s in scores(c)]
        neg_w = [s for c in quiet for s in scores(c)]
        pos_c = [max(scores(c), default=0.0) for c in expect]
        neg_c = [max(scores(c), default=0.0) for c in quiet]
        out[label] = {"window_auc": roc_auc(pos_w, neg_w), "windows": [len(pos_w), len(neg_w)],
                      "clip_auc": roc_auc(pos_c, neg_c), "clips": [len(pos_c), len(neg_c)]}
    return out


def render_separation(sep: dict) -> list[str]:
    """Markdown lines of :func:`separation`."""
    if not sep:
        return []
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["Separation of expecting and quiet clips by the label's score, any threshold (ROC AUC; 0.5 = chance):", "",
             "| label | window AUC | windows (expecting / quiet) | clip AUC (highest window) | clips (expecting / quiet) |",
             "|---|---|---|---|---|"]
    for label, m in sep.items():
        lines.append(f"| {label} | {fmt(m['window_auc'])} | {m['windows'][0]} / {m['windows'][1]} | {fmt(m['clip_auc'])} | "
                     f"{m['clips'][0]} / {m['clips'][1]} |")
    return lines + [""]


def render_cv_threshold(cv: dict) -> list[str]:
    """Markdown lines of :func:`cv_threshold`: per fold the threshold chosen on the other folds, and its figures."""
    expected = [label for label, m in cv["overall"]["per_label"].items() if m["expected"]]
    head = "".join(f" {label} recall |" for label in expected)
    lines = [f"Start threshold chosen by cross-validation (per fold: the lowest threshold whose false alarms on the "
             f"other folds' quiet clips are at most {cv['target_false_alarms']:.2f}):", "",
             f"| fold | chosen threshold |{head} quiet clips with any alert |", "|---|---|" + "---|" * (len(expected) + 1)]
    rows = [(str(k + 1), f"{f['threshold']:.2f}", f) for k, f in enumerate(cv["folds"])] + [("all", "", cv["overall"])]
    for tag, t, f in rows:
        cells = "".join(f" {f['per_label'][lb]['hits']}/{f['per_label'][lb]['expected']}"
                        + ("" if f["per_label"][lb]["recall"] is None else f" = {f['per_label'][lb]['recall']:.2f}") + " |"
                        for lb in expected)
        lines.append(f"| {tag} | {t} |{cells} {f['quiet_with_any_alert']}/{f['quiet_clips']} |")
    return lines + [""]


def render_curve(curve: dict) -> list[str]:
    """Markdown lines: one row per threshold with the recall of every label some clip expects and the
    quiet clips' false alarms (any alert)."""
    expected = [label for label, m in curve["rows"][0]["per_label"].items() if m["expected"]] if curve["rows"] else []
    head = "".join(f" {label} recall |" for label in expected)
    lines = [f"Operating curve (replayed from the recorded window scores; deployed threshold {curve['deployed']:.2f} "
             f"marked *):", "", f"| start threshold |{head} quiet clips with any alert (of {curve['quiet_clips']}) |",
             "|---|" + "---|" * (len(expected) + 1)]
    for r in curve["rows"]:
        cells = "".join(f" {r['per_label'][label]['hits']}/{r['per_label'][label]['expected']} = "
                        f"{r['per_label'][label]['recall']:.2f} |" for label in expected)
        far = "-" if r["false_alarm_rate_any"] is None else f"{r['quiet_with_any_alert']} = {r['false_alarm_rate_any']:.2f}"
        mark = "*" if r["threshold"] == curve["deployed"] else ""
        lines.append(f"| {r['threshold']:.2f}{mark} |{cells} {far} |")
    at = curve["at_target"]
    if curve["quiet_clips"]:
        lines += ["", f"Lowest threshold with at most {curve['target_false_alarms']:.2f} of the quiet clips alerting: "
                  + (f"{at['threshold']:.2f}." if at else "none of the sweep.")]
    return lines + [""]
