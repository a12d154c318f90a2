"""``sarde eval``: train and evaluate SARDE and its ablations on the standard skeleton protocols.

One command runs a whole suite (``sarde eval --suite all --out runs/eval``); every (protocol,
variant) run trains a model from its recipe, evaluates it on the held-out split and writes, under
``OUT/<protocol>/<variant>/``: ``result.json``, ``result.md``, ``confusion.png``, ``curves.png``
(matplotlib), ``model.pt`` with ``model.json`` and ``parity_windows.npy`` (so ``sarde export recognizer
--checkpoint .../model.pt`` turns it into a daemon model) and ``resume.pt`` (training resumes from it after
an interruption; a run with ``result.json`` is skipped unless ``--force``). ``--seeds 0,1,2`` repeats
each run per seed (extra seeds under ``OUT/<protocol>/<variant>-seed<k>/``). ``OUT/summary.md`` /
``summary.json`` collect all runs found under ``OUT``: per-dataset tables (:mod:`engines.sarde.report`)
and one row per run; ``--report`` only rebuilds them.

This module orchestrates; the parts live beside it: protocols and daemon windows
(:mod:`engines.sarde.protocols`), recipes, variants and ``--quick`` overrides
(:mod:`engines.sarde.recipes`, ``configs/experiments/``), the training schedule
(:func:`engines.sarde.train.fit_recipe`), the evaluation loop (:mod:`engines.sarde.predict`),
metrics (:mod:`engines.sarde.metrics`), PNGs (:mod:`engines.sarde.plots`), the checkpoint folder
(:mod:`engines.sarde.checkpoint`) and the markdown reports (:mod:`engines.sarde.report`). Suites:
``configs/experiments/suites.yaml``.

Within a protocol, the training split supervises both tasks (Eq. 3): labels for ``L_II`` and the
dataset's 3D ground truth for ``L_I`` (all three datasets carry camera-space depth). The held-out
subjects are never seen, neither their labels nor their depth.

Metrics (held-out split): top-1, top-5, per-class accuracy and the confusion matrix on
deterministic centred windows (as in training, no augmentation) and top-1 on *daemon windows*
(:func:`engines.sarde.protocols.daemon_window`). For models that estimate depth: root-relative
depth error (neck root, mm), absolute depth error (mm) and abs-rel (``|z - z_gt| / z_gt``).

Runs are shared between processes: a run folder is locked while it trains (``.lock``), and under
``torchrun`` every rank trains the run together (DDP, ``engines.sarde.train.fit``) and rank 0 writes.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import platform
import time
from pathlib import Path

from engines.sarde.protocols import PROTOCOLS, load_protocol
from engines.sarde.recipes import EXPERIMENTS, ROOT, build_recipe, load_recipe
from engines.sarde.report import run_markdown, summarise

log = logging.getLogger(__name__)


def run_one(protocol: str, variant: str, data_dir: Path, out_root: Path, recipe_dir: Path = EXPERIMENTS,
            quick: bool = False, epochs: int | None = None, device: str = "cpu", seed: int | None = None,
            progress: bool = True, force: bool = False, cache: dict | None = None) -> dict:
    """Train and evaluate one (protocol, variant); returns the result dict (also ``result.json``).

    Raises:
        KeyError: unknown protocol / variant. FileNotFoundError: dataset missing.
        engines.sarde.datasets.RecipeError: an unknown key in the merged recipe.

    Runs are locked (``.lock`` in the run folder): a second process on the same ``out_root`` skips
    a run another one is training and returns ``{}`` for it.
    """
    recipe = build_recipe(protocol, variant, recipe_dir, quick, epochs)
    seed = int(recipe.get("seed", 0)) if seed is None else int(seed)
    out = Path(out_root) / protocol / run_name(variant, seed, int(recipe.get("seed", 0)))
    result_path = out / "result.json"
    if result_path.is_file() and not force:
        log.info("%s/%s done already (%s); skipped", protocol, variant, result_path)
        return json.loads(result_path.read_text(encoding="utf-8"))
    out.mkdir(parents=True, exist_ok=True)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun: every rank trains this run together
        return _train_and_evaluate(protocol, variant, recipe, seed, out, data_dir, quick, device, progress, cache)
    with open(out / ".lock", "w") as lock:
        try:  # two `sarde eval` processes on one --out share the work: a run being trained is skipped
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("%s/%s (seed %d) is running in another process; skipped", protocol, variant, seed)
            return {}
        if result_path.is_file() and not force:  # finished by another process since the check above
            return json.loads(result_path.read_text(encoding="utf-8"))
        if force and (out / "resume.pt").is_file():
            (out / "resume.pt").unlink()
        return _train_and_evaluate(protocol, variant, recipe, seed, out, data_dir, quick, device, progress, cache)


def _spread(seqs: list, n: int) -> list:
    """At most ``n`` of ``seqs``, evenly spread over the list (the ``--quick`` data subsets)."""
    return seqs[::max(1, len(seqs) // n)][:n]


def _train_and_evaluate(protocol: str, variant: str, recipe: dict, seed: int, out: Path, data_dir: Path,
                        quick: bool, device: str, progress: bool, cache: dict | None) -> dict:
    """The body of :func:`run_one`: read the protocol's split (cached), then :func:`train_and_evaluate`."""
    cache = {} if cache is None else cache
    if protocol not in cache:
        cache[protocol] = load_protocol(protocol, data_dir)
    train_seqs, test_seqs, labels = cache[protocol]
    return train_and_evaluate(protocol, variant, recipe, seed, out, train_seqs, test_seqs, labels,
                              PROTOCOLS[protocol][0], quick, device, progress)


def train_and_evaluate(protocol: str, variant: str, recipe: dict, seed: int, out: Path, train_seqs: list,
                       test_seqs: list, labels: list[str], dataset: str, quick: bool = False, device: str = "cpu",
                       progress: bool = True, split: dict | None = None) -> dict:
    """Train from ``recipe`` on ``train_seqs``, evaluate on ``test_seqs``, write the run folder ``out``.

    The one train-and-evaluate body of every ``sarde eval`` run: the fixed protocols and a user's own
    data (:mod:`engines.sarde.data_eval`). Writes ``result.json`` / ``result.md`` (top-1, top-5,
    per-class accuracy, confusion matrix, top-1 on daemon windows, depth errors where the data has
    depth), ``confusion.png``, ``curves.png`` and the checkpoint folder (``model.pt``, ``model.json``
    with the held-out figures and ``split``, ``parity_windows.npy``).

    Args:
        protocol: the run's name in reports; variant: the recipe variant's name.
        train_seqs, test_seqs: ``SkeletonSequence`` lists, labels among ``labels`` (others unsupervised).
        dataset: the data's name (reports); split: how the test part was chosen (into the results).

    Returns:
        The result dict (``{}`` on non-zero DDP ranks).
    """
    from engines.sarde.checkpoint import parity_windows, save_checkpoint
    from engines.sarde.datasets import DatasetSplit
    from engines.sarde.metrics import classification_metrics, depth_summary
    from engines.sarde.plots import plot_confusion, plot_curves
    from engines.sarde.predict import predict
    from engines.sarde.protocols import DaemonWindows
    from engines.sarde.train import fit_recipe

    result_path = out / "result.json"
    q = recipe.get("quick", {}) if quick else {}
    if q:
        train_seqs, test_seqs = _spread(train_seqs, int(q["max_train"])), _spread(test_seqs, int(q["max_test"]))
    # the protocol as one recipe dataset: its training split supervises labels and depth, its test split is held out
    part = DatasetSplit(name=protocol, reader=dataset, train=train_seqs, test=test_seqs, depth=True,
                        repeat=int(recipe.get("data", {}).get("repeat", 1)))
    trained = fit_recipe(recipe, [part], labels, device, seed, progress, q.get("max_steps"), checkpoint_dir=out)
    model, fitted, test_set = trained.model, trained.fitted, trained.tests[protocol]
    if int(os.environ.get("RANK", "0")) != 0:
        return {}
    t0 = time.perf_counter()
    centred = predict(model, test_set)
    daemon = predict(model, DaemonWindows(test_set))
    eval_seconds = time.perf_counter() - t0
    metrics = classification_metrics(centred["scores"], centred["labels"], labels)
    daemon_metrics = classification_metrics(daemon["scores"], daemon["labels"], labels)
    result = {
        "protocol": protocol, "variant": variant, "recipe": recipe, "labels": labels, "seed": seed,
        "quick": quick, "n_train": len(train_seqs), "n_test": len(test_seqs), "dataset": dataset,
        "split": split or {"protocol": protocol},
        "top1": metrics["top1"], "top5": metrics["top5"], "per_class": metrics["per_class"],
        "confusion": metrics["confusion"],
        "daemon_top1": daemon_metrics["top1"], "daemon_top5": daemon_metrics["top5"],
        "train_seconds": round(trained.seconds, 1), "eval_seconds": round(eval_seconds, 1),
        "epochs": len(fitted["history"]), "steps": fitted["steps"], "history": fitted["history"],
        "pretrain_depth_history": trained.pretrain_depth_history,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "machine": machine(), "device": device,
    }
    if model.estimates_depth:
        result.update(depth_summary(centred["depth"]))
    # beside model.pt, what `sarde export recognizer --checkpoint` needs: recipe + labels, parity windows
    save_checkpoint(out, model, {
        "recipe": recipe, "labels": labels, "seed": seed, "train_seconds": result["train_seconds"],
        "splits": {protocol: result["split"]}, "trained_on": {protocol: {"dataset": dataset, "train_sequences":
                                                                        len(train_seqs)}},
        "metrics": {protocol: {k: result.get(k) for k in ("n_test", "top1", "top5", "daemon_top1", "per_class", "depth_rootrel_mm",
                                                          "depth_abs_mm", "depth_absrel")}},
    }, parity_windows([test_set], 4))
    title = f"{protocol} / {variant}: top-1 {metrics['top1']:.3f}"
    plot_confusion(metrics["confusion"], labels, out / "confusion.png", title)
    plot_curves(fitted["history"], out / "curves.png", f"{protocol} / {variant}")
    result_path.write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
    (out / "result.md").write_text(run_markdown(result), encoding="utf-8")
    log.info("%s/%s: top-1 %.3f (daemon windows %.3f), top-5 %.3f, trained in %.0f s", protocol, variant,
             result["top1"], result["daemon_top1"], result["top5"], trained.seconds)
    return result


def machine() -> str:
    """A one-line description of the machine (CPU count, torch threads, platform)."""
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {platform.platform()}")


def run_name(variant: str, seed: int, recipe_seed: int) -> str:
    """Folder name of a run: the variant for the recipe's own seed, ``<variant>-seed<k>`` for others."""
    return variant if seed == recipe_seed else f"{variant}-seed{seed}"


def suite_runs(name: str, recipe_dir: Path = EXPERIMENTS) -> list[tuple[str, str, int | None]]:
    """``(protocol, variant, seed)`` runs of a suite in ``suites.yaml``, in order, without repeats.

    A suite group may list ``seeds``; without it the run uses the recipe's seed (``None``).

    Raises:
        KeyError: unknown suite.
    """
    suites = load_recipe(recipe_dir / "suites.yaml")
    if name not in suites:
        raise KeyError(f"unknown suite {name!r}; known: {sorted(suites)}")
    runs: list[tuple[str, str, int | None]] = []
    for group in suites[name]:
        for protocol in group["protocols"]:
            for variant in group["variants"]:
                for seed in group.get("seeds", [None]):
                    if (protocol, variant, seed) not in runs:
                        runs.append((protocol, variant, seed))
    return runs


def main(argv: list[str] | None = None) -> int:
    """``sarde eval``: run a suite or chosen protocols x variants; prints the summary table."""
    parser = argparse.ArgumentParser(prog="sarde eval", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", help="suite of configs/experiments/suites.yaml (main, ablations, utd, all, quick)")
    parser.add_argument("--protocols", help=f"comma-separated, of {', '.join(PROTOCOLS)}")
    parser.add_argument("--variants", help="comma-separated variants of configs/experiments/variants.yaml "
                        "(default: series); crossed with --protocols")
    parser.add_argument("--out", type=Path, default=Path.home() / "sarde-runs" / "eval",
                        help="output folder (default ~/sarde-runs/eval, outside the repository)")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--recipes", type=Path, default=EXPERIMENTS, help="folder of the experiment recipes")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny model, a few steps, data subset")
    parser.add_argument("--epochs", type=int, help="override every recipe's train.epochs")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--seed", type=int, help="seed of every run (default: the recipe's)")
    parser.add_argument("--seeds", help="comma-separated seeds: each run repeated per seed (extra seeds go to "
                        "OUT/<protocol>/<variant>-seed<k>/); the report averages them")
    parser.add_argument("--report", action="store_true", help="only rebuild summary.md / summary.json from the "
                        "runs under --out")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--force", action="store_true", help="re-run finished runs")
    parser.add_argument("--no-progress", action="store_true")
    argv = list(argv) if argv is not None else None
    if argv and argv[0] == "--":  # `sarde eval -- --suite all` (the CLI's REMAINDER needs the separator)
        argv = argv[1:]
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.report:
        md, _ = summarise(args.out, args.recipes)
        print(md.read_text(encoding="utf-8"))
        return 0
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else [args.seed]
    if args.protocols:
        variants = (args.variants or "series").split(",")
        runs = [(p, v, s) for p in args.protocols.split(",") for v in variants for s in seeds]
    elif args.suite:
        runs = suite_runs(args.suite, args.recipes)
        if args.variants:
            runs = [r for r in runs if r[1] in args.variants.split(",")]
        if args.seeds or args.seed is not None:  # the command line's seeds replace the suite's
            runs = list(dict.fromkeys((p, v, s) for p, v, _ in runs for s in seeds))
    else:
        parser.error("give --suite or --protocols")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if args.device.startswith("cuda") else "gloo")
        if args.device.startswith("cuda"):
            args.device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(args.device)
    cache: dict = {}
    for protocol, variant, seed in runs:
        run_one(protocol, variant, args.data, args.out, args.recipes, args.quick, args.epochs, args.device,
                seed, not args.no_progress, args.force, cache)
    if int(os.environ.get("RANK", "0")) == 0:
        md, _ = summarise(args.out, args.recipes)
        print(md.read_text(encoding="utf-8"))
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
