"""``sarde eval video``: what the deployed daemon says about labelled real clips, measured.

Every clip goes through the daemon's own path: reader processes (decode, decimate, letterbox) ->
stage (batched detector, PAF grouping, tracking, windows, the fused SARDE graph) -> event logic with
the config's thresholds, smoothing and alert labels -> journal. Nothing is shortcut: the events
counted are the ones the journal holds after the run. Clips run a few at a time as parallel cameras.

Per alert label ``L`` (labels of ``start`` events; the model's background and silent labels never
count):

* **clip recall**: clips expecting ``L`` (``alerts`` of the clip list) on which ``L`` started;
* **false alarms**: clips expecting no alert at all on which ``L`` started (share of those clips);
* **precision**: clips expecting ``L`` among the clips on which ``L`` started;
* **time to alert**: from the start of the action (the first segment labelled ``L``, else the clip
  start) to the end of the first window that started ``L``, seconds of clip time.

``--folds K`` cross-validates the first clip list by its groups (source videos): for each fold the
default recipe is trained without that fold's groups in its recordings dataset (``--cv-dataset``),
and the fold's clips are run with that model. ``--heldout`` instead runs only the first list's clips
of the groups the model's own recipe holds out (its manifest's test split). Other clip lists are run with the full default model
(they are never trained on). Per clip list, an **operating curve** (``pipeline.operating_curve``):
recall and false alarms at other start thresholds, replayed from the window scores the run recorded
(in cross-validation, each clip scored by its own fold's model). Results: ``results.json`` (with
every clip's recorded window scores) and ``results.md`` under ``--out``.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from engines.datasets.splits import group_folds
from pipeline.clips import Clip, load_clip_list, write_results
from pipeline.config import Config
from pipeline.operating_curve import (cv_threshold, operating_curve, render_curve, render_cv_threshold, render_separation,
                                      separation)
from pipeline.recordings import clips_run_config

log = logging.getLogger(__name__)

BATCH_CLIPS = 8


def run_clips(cfg: Config, clips: list[Clip], manifest: Path) -> dict[str, dict]:
    """Run the daemon with the recogniser ``manifest`` over ``clips``.

    Returns:
        ``{clip_id: {"alerts": [labels started], "first_start_s": {label: clip seconds of the end of
        the first window that started it}, "frames": processed frames, "windows": classified windows,
        "events": [event dicts], "window_scores": [the recorded windows in classification order, each
        with its (K,) "scores"]}}`` (the last feeds ``pipeline.operating_curve``).
    """
    from pipeline.daemon import run_all
    from pipeline.journal import EventJournal

    out: dict[str, dict] = {}
    for i in range(0, len(clips), BATCH_CLIPS):
        batch = clips[i:i + BATCH_CLIPS]
        tmp = Path(tempfile.mkdtemp(prefix="sarde-veval-"))
        try:
            # the recorded frames give each camera's clip-time origin and its window count
            run, names = clips_run_config(cfg, batch, tmp, model=str(manifest), journal=tmp / "events.db")
            run_all(run, progress=False)
            t0: dict[str, float] = {}
            frames: dict[str, int] = {n: 0 for n in names}
            windows: dict[str, int] = {n: 0 for n in names}
            if run.record_poses.is_file():
                for line in run.record_poses.read_text(encoding="utf-8").splitlines():
                    rec = json.loads(line)
                    t0.setdefault(rec["camera"], float(rec["ts"]))
                    frames[rec["camera"]] = frames.get(rec["camera"], 0) + 1
            wpath = run.record_poses.with_name("rec.windows.jsonl")
            scored: dict[str, list[dict]] = {n: [] for n in names}
            if wpath.is_file():
                for line in wpath.read_text(encoding="utf-8").splitlines():
                    rec = json.loads(line)
                    windows[rec["camera"]] = windows.get(rec["camera"], 0) + 1
                    if "scores" in rec:
                        scored.setdefault(rec["camera"], []).append(rec)
            events: dict[str, list] = {n: [] for n in names}
            if run.events.journal.is_file():
                journal = EventJournal(run.events.journal, readonly=True)
                try:
                    for _, ev in journal.read():
                        events.setdefault(ev.camera, []).append(ev)
                finally:
                    journal.close()
            for n, clip in names.items():
                started: dict[str, float] = {}
                for ev in events.get(n, []):
                    if ev.phase == "start" and ev.label not in started:
                        started[ev.label] = float(ev.window.end_ts) - t0.get(n, float(ev.window.end_ts))
                out[clip.clip_id] = {"alerts": sorted(started), "first_start_s": started, "frames": frames.get(n, 0),
                                     "windows": windows.get(n, 0), "events": [e.to_dict() for e in events.get(n, [])],
                                     "window_scores": scored.get(n, [])}
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def score(clips: list[Clip], results: dict[str, dict], labels: list[str]) -> dict:
    """Per alert label: clip recall, false alarms on quiet clips, precision, time to alert (seconds)."""
    quiet = [c for c in clips if not c.alerts]
    per_label = {}
    for label in labels:
        expect = [c for c in clips if label in c.alerts]
        raised = [c for c in clips if label in results[c.clip_id]["alerts"]]
        hits = [c for c in expect if label in results[c.clip_id]["alerts"]]
        false = [c for c in quiet if label in results[c.clip_id]["alerts"]]
        if not expect and not raised:
            continue
        delays = []
        for c in hits:
            seg = next((s for s in c.segments if s.label == label), None)
            delays.append(results[c.clip_id]["first_start_s"][label] - (seg.start if seg else 0.0))
        per_label[label] = {
            "clips_expected": len(expect), "recall": len(hits) / len(expect) if expect else None,
            "false_alarm_clips": len(false), "false_alarm_rate": len(false) / len(quiet) if quiet else None,
            "precision": len(hits) / len(raised) if raised else None,
            "time_to_alert_s_median": float(np.median(delays)) if delays else None,
        }
    any_alarm = [c for c in quiet if results[c.clip_id]["alerts"]]
    correct = sum(1 for c in clips if set(results[c.clip_id]["alerts"]) == set(c.alerts)
                  or (c.alerts and set(c.alerts) <= set(results[c.clip_id]["alerts"])))
    return {"clips": len(clips), "quiet_clips": len(quiet), "quiet_with_any_alert": len(any_alarm),
            "clip_accuracy": correct / len(clips) if clips else None, "per_label": per_label}


def render_markdown(report: dict) -> str:
    """Markdown tables of :func:`main`'s report."""
    lines = []
    for name, part in report["lists"].items():
        lines.append(f"## {name}\n")
        lines.append(f"model: {part['model']}; protocol: {part['protocol']}\n")
        rows = [("overall", part["overall"])] + [(f"fold {i + 1}", f) for i, f in enumerate(part.get("folds", []))]
        lines.append("| part | clips | label | recall | false alarms (quiet clips) | precision | time to alert s (median) |")
        lines.append("|---|---|---|---|---|---|---|")
        for tag, sc in rows:
            if not sc["per_label"]:
                lines.append(f"| {tag} | {sc['clips']} | (none raised) | - | 0 / {sc['quiet_clips']} | - | - |")
            for label, m in sc["per_label"].items():
                fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
                lines.append(f"| {tag} | {sc['clips']} | {label} | {fmt(m['recall'])} | "
                             f"{m['false_alarm_clips']} / {sc['quiet_clips']} | {fmt(m['precision'])} | "
                             f"{fmt(m['time_to_alert_s_median'])} |")
        lines.append("")
        if part.get("operating_curve"):
            lines += render_curve(part["operating_curve"])
        if part.get("cv_threshold"):
            lines += render_cv_threshold(part["cv_threshold"])
        if part.get("separation"):
            lines += render_separation(part["separation"])
        lines.append("| clip | expected | raised |")
        lines.append("|---|---|---|")
        for cid, r in part["clips"].items():
            lines.append(f"| {cid} | {', '.join(r['expected']) or '-'} | {', '.join(r['alerts']) or '-'} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def _write_partial(out: Path, name: str, done: int, folds: list, fold_scores: list, held: list[Clip],
                   res: dict) -> None:
    """After each fold: ``<out>/<list>.fold<k>.json`` (the fold's groups, scores and per-clip alerts),
    so a long cross-validation leaves its finished folds behind if it is stopped."""
    out.mkdir(parents=True, exist_ok=True)
    data = {"fold": done, "of": len(folds), "groups": folds[done - 1], "score": fold_scores[-1],
            "clips": {c.clip_id: {"expected": c.alerts, "alerts": res[c.clip_id]["alerts"],
                                  "windows": res[c.clip_id]["windows"],
                                  "window_scores": res[c.clip_id]["window_scores"]} for c in held}}
    (out / f"{name}.fold{done}.json").write_text(json.dumps(data, indent=2, sort_keys=True))


def heldout_groups(manifest: Path, dataset: str) -> list[str]:
    """The groups (``test.subjects``) the model of ``manifest`` holds out of its recipe dataset ``dataset``.

    Raises:
        UserError: the manifest has no such split.
    """
    from engines.errors import UserError

    splits = json.loads(Path(manifest).read_text(encoding="utf-8")).get("splits", {})
    subjects = splits.get(dataset, {}).get("test", {}).get("subjects")
    if not subjects:
        raise UserError(f"{manifest} holds out no {dataset} groups (no splits.{dataset}.test.subjects); drop --heldout "
                        "or pick the dataset with --cv-dataset")
    return [str(s) for s in subjects]


def curves(part: dict, labels: list[str], events, silent: list[str]) -> dict:
    """``part`` (one clip list of the report, with its clips' recorded ``window_scores``) with its
    ``operating_curve`` and, for a cross-validated list (``fold_groups``), its ``cv_threshold``
    (``pipeline.operating_curve``), at the event settings ``events``."""
    clips = [Clip(clip_id=cid, path=Path(cid), alerts=r["expected"], label=None, segments=[], group=r.get("group") or cid)
             for cid, r in part["clips"].items()]
    scores = {cid: r["window_scores"] for cid, r in part["clips"].items()}
    part["operating_curve"] = operating_curve(clips, scores, labels, events, silent)
    part["separation"] = separation(clips, scores, labels, events, silent)
    if part.get("fold_groups"):
        folds = [[c for c in clips if c.group in set(groups)] for groups in part["fold_groups"]]
        part["cv_threshold"] = cv_threshold(folds, scores, labels, events, silent)
    return part


def replay(path: Path, cfg: Config, model: dict | None = None) -> dict:
    """The report of an earlier ``sarde eval video`` (its ``results.json``) with every list's curves
    recomputed at ``cfg``'s event settings from the recorded window scores; nothing is re-run.
    ``model``: the run's recogniser manifest (its ``labels`` and ``background``), needed only for a
    report that does not name them.

    Raises:
        UserError: the file is not such a report, or has no window scores, or names no labels.
    """
    from engines.errors import UserError
    from pipeline.daemon import silent_labels

    try:
        report = json.loads(Path(path).read_text(encoding="utf-8"))
        parts = report["lists"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"--replay {path}: not a results.json of sarde eval video ({exc})") from exc
    model = model or {}
    labels = report.get("labels") or model.get("labels")
    if not labels:
        raise UserError(f"--replay {path}: the report names no labels; pass the run's model with --model")
    if any("window_scores" not in r for part in parts.values() for r in part["clips"].values()):
        raise UserError(f"--replay {path}: the report has no recorded window scores (made before they were recorded); re-run it")
    background = report.get("background") or model.get("background", "other")
    silent = silent_labels(cfg, SimpleNamespace(labels=list(labels), background=background))
    for name in parts:
        parts[name] = curves(parts[name], list(labels), cfg.events, silent)
    report.update(labels=list(labels), background=background, silent_labels=silent,
                  replayed_with={"file": str(path), "events": cfg.events.model_dump(mode="json")})
    return report


def main(argv: list[str] | None = None) -> int:
    """``sarde eval video --clips LIST [--clips LIST ...] [--folds K | --heldout] [--model MANIFEST] [--out DIR]``."""
    from engines.recognizer import Recognizer
    from pipeline.default_model import default_model
    from pipeline.config import load_config_or_default
    from pipeline.daemon import silent_labels

    parser = argparse.ArgumentParser(prog="sarde eval video", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="YAML config: thresholds, smoothing, alert labels as deployed")
    parser.add_argument("--clips", action="append", type=Path, help="clip list YAML (configs/clips/); repeat")
    parser.add_argument("--folds", type=int, default=0, help="cross-validate the first clip list in K folds by group")
    parser.add_argument("--heldout", action="store_true", help="run only the first clip list's clips of the groups the "
                        "model's recipe holds out of --cv-dataset (its manifest's test split), with that model")
    parser.add_argument("--cv-dataset", default="fightsurv", help="recipe dataset trained without the held-out groups")
    parser.add_argument("--model", type=Path, help="recogniser manifest (default: the default model)")
    parser.add_argument("--recipe", type=Path, help="training recipe of the model (and of every fold) instead of "
                        "configs/models/sarde-default.yaml, e.g. one with another model.recognizer")
    parser.add_argument("--replay", type=Path, help="an earlier run's results.json: recompute its operating curves "
                        "and cross-validated threshold at --config's event settings, without running any clip")
    parser.add_argument("--out", type=Path, default=Path("runs/video_eval"))
    args = parser.parse_args(argv)
    if args.heldout and args.folds > 1:
        parser.error("--heldout and --folds exclude each other")
    if not args.clips and not args.replay:
        parser.error("give --clips (run clips) or --replay (re-score an earlier run)")
    cfg = load_config_or_default(args.config)
    if args.replay:
        report = replay(args.replay, cfg, json.loads(args.model.read_text(encoding="utf-8")) if args.model else None)
        write_results(args.out, report, render_markdown(report))
        return 0
    full = args.model or default_model(cfg, recipe_path=args.recipe)
    recognizer = Recognizer(full, providers=["cpu"])
    labels = recognizer.labels
    silent = silent_labels(cfg, recognizer)
    report: dict = {"config": str(args.config or "default"), "lists": {}}
    for i, clip_path in enumerate(args.clips):
        clips = load_clip_list(clip_path, cfg.paths.data_dir)
        part: dict = {}
        if i == 0 and args.folds > 1:
            folds = group_folds([c.group for c in clips], args.folds)
            results, fold_scores = {}, []
            for k, groups in enumerate(folds):
                held = [c for c in clips if c.group in set(groups)]
                log.info("fold %d/%d: %d groups, %d clips held out", k + 1, len(folds), len(groups), len(held))
                manifest = default_model(cfg, exclude_groups={args.cv_dataset: groups}, recipe_path=args.recipe)
                res = run_clips(cfg, held, manifest)
                results.update(res)
                fold_scores.append(score(held, res, labels))
                _write_partial(args.out, clip_path.stem, k + 1, folds, fold_scores, held, res)
            part.update(model=f"{args.recipe or 'default'} recipe, trained per fold without the held-out groups",
                        protocol=f"{args.folds}-fold cross-validation grouped by source", folds=fold_scores,
                        fold_groups=folds)
        elif i == 0 and args.heldout:
            groups = set(heldout_groups(full, args.cv_dataset))
            clips = [c for c in clips if c.group in groups]
            results = run_clips(cfg, clips, full)
            part.update(model=str(full), protocol=f"the {len(groups)} groups the model holds out of {args.cv_dataset} "
                        f"(its manifest's test split): {sorted(groups)}")
        else:
            results = run_clips(cfg, clips, full)
            part.update(model=str(full), protocol="held out (never trained on)")
        part["overall"] = score(clips, results, labels)
        part["clips"] = {c.clip_id: {"expected": c.alerts, "alerts": results[c.clip_id]["alerts"],
                                     "group": c.group, "frames": results[c.clip_id]["frames"],
                                     "windows": results[c.clip_id]["windows"],
                                     "first_start_s": results[c.clip_id]["first_start_s"],
                                     "window_scores": results[c.clip_id]["window_scores"]} for c in clips}
        report["lists"][clip_path.stem] = curves(part, labels, cfg.events, silent)
    report.update(labels=list(labels), background=getattr(recognizer, "background", "other"), silent_labels=silent)
    write_results(args.out, report, render_markdown(report))
    return 0
