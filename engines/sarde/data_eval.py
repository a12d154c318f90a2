"""``sarde eval data``: train and evaluate SARDE on a user's own generic ``.npz`` (any labels, any split).

The same run as the fixed protocols of ``sarde eval`` (:func:`engines.sarde.evaluate.train_and_evaluate`:
same windows, augmentation, schedule, reports, checkpoints), on data the project has never seen::

    sarde eval data --data site.npz --test-groups s02,s04            # held-out groups (subjects, sources)
    sarde eval data --data train.npz --test test.npz                 # a given train / test pair
    sarde eval data --data site.npz --folds 4                        # grouped K-fold cross-validation

Groups are the ``.npz``'s ``subjects`` (a subject, a source video, a camera: whatever must not be on
both sides of a split); folds are :func:`engines.datasets.splits.group_folds`'s, never splitting a group.
The classes are the data's labels (``label_names`` that label at least one training sequence), or
``--labels``. The training settings are ``configs/experiments/generic.yaml`` (the project's best
general settings, measured in ``docs/RESULTS.md``) merged with ``--recipe`` (an experiment recipe:
``window``, ``model``, ``pretrain_depth``, ``train``, ``augment``; unknown keys are rejected).

Output (default ``~/sarde-runs/eval-data/<data stem>/``, outside the repository): one run folder per
split (``split/`` or ``fold<k>/``) with ``result.json`` / ``result.md`` (top-1, top-5, per-class
accuracy, confusion matrix, top-1 on daemon windows, depth errors where the data has depth),
``confusion.png``, ``curves.png`` and the checkpoint (``model.pt``: ``sarde export recognizer
--checkpoint`` makes it a daemon model whose manifest carries these held-out figures and the split),
and ``summary.json`` / ``summary.md`` (per fold and pooled: top-1, per-class accuracy, confusion).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from engines.datasets.splits import group_folds
from engines.errors import UserError
from engines.sarde.recipes import EXPERIMENTS, check_recipe_keys, deep_merge, load_recipe

log = logging.getLogger(__name__)

#: Training settings of ``sarde eval data`` (merged with ``--recipe``).
GENERIC_RECIPE: Path = EXPERIMENTS / "generic.yaml"
DEFAULT_OUT: Path = Path("~/sarde-runs/eval-data")


class DataEvalError(UserError, ValueError):
    """Data or options ``sarde eval data`` cannot use; one line naming what to fix."""


def _read(paths: list[Path]) -> list:
    from engines.datasets.generic import load_npz

    seqs = []
    for path in paths:
        if not Path(path).is_file():
            raise DataEvalError(f"{path}: no such file (a generic .npz, e.g. from `sarde data convert`)")
        try:
            seqs.extend(load_npz(path))
        except (ValueError, OSError, KeyError) as exc:
            raise DataEvalError(f"{path}: not a generic .npz ({exc})") from None
    return seqs


def make_splits(seqs: list, test_seqs: list | None, test_groups: list[str] | None,
                folds: int) -> list[tuple[str, list, list, dict]]:
    """``(name, train, test, split)`` of each run: a given test file, held-out groups or K grouped folds.

    Raises:
        DataEvalError: no split given, more than one, an unknown group, or a side left empty.
    """
    given = sum([test_seqs is not None, bool(test_groups), folds > 0])
    if given != 1:
        raise DataEvalError("give exactly one of --test FILE, --test-groups G1,G2 or --folds K")
    if test_seqs is not None:
        return [("split", seqs, test_seqs, {"test": "file"})]
    groups = [str(s.subject or "") for s in seqs]
    if "" in groups:
        missing = sum(1 for g in groups if not g)
        raise DataEvalError(f"{missing} sequences have no group (`subjects` in the .npz); grouped splits need one each")
    if test_groups:
        unknown = sorted(set(test_groups) - set(groups))
        if unknown:
            raise DataEvalError(f"--test-groups {unknown} not in the data's groups {sorted(set(groups))}")
        held = set(test_groups)
        return [("split", [s for s in seqs if str(s.subject) not in held], [s for s in seqs if str(s.subject) in held],
                 {"test_groups": sorted(held)})]
    try:
        fold_groups = group_folds(groups, folds)
    except ValueError as exc:
        raise DataEvalError(f"--folds {folds}: {exc}") from None
    return [(f"fold{k + 1}", [s for s in seqs if str(s.subject) not in set(g)], [s for s in seqs if str(s.subject) in set(g)],
             {"fold": k + 1, "folds": folds, "test_groups": sorted(g)}) for k, g in enumerate(fold_groups)]


def _seed_top1(results: list[dict]) -> dict:
    """Pooled top-1 of each seed's runs, and their mean and standard deviation over seeds."""
    by_seed: dict = {}
    for r in results:
        right_n = by_seed.setdefault(r["split"].get("seed"), [0, 0])
        conf = np.asarray(r["confusion"])
        right_n[0] += int(np.trace(conf))
        right_n[1] += int(conf.sum())
    per = {str(k): v[0] / v[1] for k, v in by_seed.items() if v[1]}
    vals = list(per.values())
    return {"per_seed": per, "mean": float(np.mean(vals)) if vals else None,
            "std": float(np.std(vals, ddof=1)) if len(vals) > 1 else None}


def summary(results: list[dict], labels: list[str]) -> dict:
    """Per-run and pooled figures: top-1 (pooled = over all held-out sequences of all runs), per-class
    accuracy and the summed confusion matrix (rows = true class)."""
    conf = np.zeros((len(labels), len(labels)), np.int64)
    for r in results:
        conf += np.asarray(r["confusion"], np.int64).reshape(len(labels), len(labels))
    n = int(conf.sum())
    return {
        "labels": labels,
        "runs": [{"name": r["protocol"], "split": r["split"], "n_train": r["n_train"], "n_test": r["n_test"],
                  "top1": r["top1"], "daemon_top1": r["daemon_top1"], "train_seconds": r["train_seconds"]}
                 for r in results],
        "pooled_top1": float(np.trace(conf) / n) if n else None,
        "seeds": sorted({r["split"].get("seed") for r in results if r["split"].get("seed") is not None}),
        "seed_top1": _seed_top1(results),
        "mean_top1": float(np.mean([r["top1"] for r in results])) if results else None,
        "per_class": {name: (float(conf[k, k] / conf[k].sum()) if conf[k].sum() else None) for k, name in enumerate(labels)},
        "confusion": conf.tolist(),
    }


def summary_markdown(s: dict, title: str) -> str:
    """``summary.md``: one row per run, pooled figures, per-class accuracy and the confusion matrix."""
    pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
    lines = [f"# {title}", "", "| run | split | train | test | top-1 % | daemon windows % | train s |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {json.dumps(r['split'])} | {r['n_train']} | {r['n_test']} | {pct(r['top1'])} | "
              f"{pct(r['daemon_top1'])} | {r['train_seconds']:.0f} |" for r in s["runs"]]
    lines += ["", f"Pooled top-1 over every held-out sequence: **{pct(s['pooled_top1'])} %** "
              f"(mean of runs {pct(s['mean_top1'])} %)."]
    st = s["seed_top1"]
    if st["std"] is not None:
        lines.append(f"Over {len(st['per_seed'])} seeds: {pct(st['mean'])} ± {pct(st['std'])} % "
                     f"({', '.join(pct(v) for v in st['per_seed'].values())}).")
    lines += ["", "| class | accuracy % |", "|---|---|"]
    lines += [f"| {name} | {pct(acc)} |" for name, acc in s["per_class"].items()]
    labels = s["labels"]
    lines += ["", "Confusion (rows: true class, columns: predicted):", "",
              "| | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    lines += [f"| {name} | " + " | ".join(str(v) for v in row) + " |" for name, row in zip(labels, s["confusion"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``sarde eval data``; returns 0, raises :class:`DataEvalError` / ``RecipeError`` (exit 2 in the CLI)."""
    parser = argparse.ArgumentParser(prog="sarde eval data", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, action="append", required=True,
                        help="generic .npz (engines/datasets/generic.py, `sarde data convert`); repeat for more")
    parser.add_argument("--test", type=Path, action="append", help="held-out generic .npz (a given train/test pair)")
    parser.add_argument("--test-groups", help="comma-separated groups (the .npz `subjects`) held out")
    parser.add_argument("--folds", type=int, default=0, help="K-fold cross-validation grouped by `subjects`")
    parser.add_argument("--labels", help="comma-separated classes (default: the labels of the training data)")
    parser.add_argument("--recipe", type=Path, help=f"experiment recipe merged over {GENERIC_RECIPE.name} "
                        "(window, model, pretrain_depth, train, augment)")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--seeds", help="comma-separated seeds (default: the recipe's): every split is trained once "
                        "per seed and the summary gives the mean and spread over seeds (single-seed figures on small "
                        "datasets move by several points with the seed or even the order of the sequences)")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, a few steps, data subset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--out", type=Path, help=f"output folder (default {DEFAULT_OUT}/<data stem>)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)

    recipe = load_recipe(GENERIC_RECIPE)
    if args.recipe:
        try:
            recipe = deep_merge(recipe, load_recipe(args.recipe))
        except (OSError, ValueError) as exc:
            raise DataEvalError(f"--recipe {args.recipe}: {exc}") from None
    if args.quick:
        recipe = deep_merge(recipe, load_recipe(EXPERIMENTS / "quick.yaml"))
    if args.epochs:
        recipe = deep_merge(recipe, {"train": {"epochs": int(args.epochs)}})
    seqs = _read(args.data)
    test_seqs = _read(args.test) if args.test else None
    runs = make_splits(seqs, test_seqs, [g.strip() for g in args.test_groups.split(",")] if args.test_groups else None,
                       args.folds)
    labels = ([x.strip() for x in args.labels.split(",")] if args.labels
              else sorted({s.label for s in seqs if s.label is not None}))
    if len(labels) < 2:
        raise DataEvalError(f"the data has {len(labels)} label(s) {labels}; label it (e.g. `sarde data convert --segments`)")
    name = args.data[0].stem
    recipe = {**recipe, "name": recipe.get("name", name), "dataset": name, "protocol": f"data:{name}", "variant": "data"}
    check_recipe_keys(recipe, "experiment")
    seeds = [int(x) for x in args.seeds.split(",")] if args.seeds else [int(recipe.get("seed", 0))]
    out_root = (args.out or DEFAULT_OUT / name).expanduser()
    import torch

    from engines.sarde.evaluate import train_and_evaluate

    if args.threads:
        torch.set_num_threads(args.threads)
    results = []
    for seed in seeds:
        for run, train_seqs, test, split in runs:
            if not test or not train_seqs:
                raise DataEvalError(f"{run}: {'no held-out' if not test else 'no training'} sequence")
            folder = run if len(seeds) == 1 else f"{run}-seed{seed}"
            log.info("%s: %d training / %d held-out sequences, classes %s", folder, len(train_seqs), len(test), labels)
            results.append(train_and_evaluate(folder, "data", recipe, seed, out_root / folder, train_seqs, test, labels,
                                              name, args.quick, args.device, not args.no_progress,
                                              {**split, "seed": seed}))
    s = summary(results, labels)
    (out_root / "summary.json").write_text(json.dumps(s, indent=2), encoding="utf-8")
    md = summary_markdown(s, f"sarde eval data: {', '.join(str(p) for p in args.data)}")
    (out_root / "summary.md").write_text(md, encoding="utf-8")
    print(md)
    return 0
