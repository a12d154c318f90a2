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

Protocols (:data:`PROTOCOLS`): MSR Action3D X-Sub on AS1/AS2/AS3 and all 20 actions (subjects
1,3,5,7,9 train), SBU 5-fold CV (the authors' folds), UTD-MHAD X-Sub (subjects 1,3,5,7 train).
Recipes: ``configs/experiments/{msr,sbu,utd}.yaml``; variants (SARDE Tables 3-4):
``configs/experiments/variants.yaml``; suites: ``configs/experiments/suites.yaml``; ``--quick``
overrides: ``configs/experiments/quick.yaml``.

Within a protocol, the training split supervises both tasks (Eq. 3): labels for ``L_II`` and the
dataset's 3D ground truth for ``L_I`` (all three datasets carry camera-space depth). The held-out
subjects are never seen, neither their labels nor their depth.

Metrics (held-out split): top-1, top-5, per-class accuracy and the confusion matrix on
deterministic centred windows (as in training, no augmentation) and top-1 on *daemon windows*: the
recording resampled to the daemon's fps, its last ``T`` frames right-aligned in the ``T = 150``
window, exactly as ``pipeline.windows`` builds them. For models that estimate depth: root-relative
depth error (neck root, mm), absolute depth error (mm) and abs-rel (``|z - z_gt| / z_gt``).
"""
from __future__ import annotations

import argparse
import copy
import fcntl
import json
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import yaml

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
EXPERIMENTS = ROOT / "configs" / "experiments"

#: Protocol name -> (dataset, parameter): the split each run trains and tests on.
PROTOCOLS: dict[str, tuple[str, str | int]] = {
    "msr-as1": ("msr", "AS1"), "msr-as2": ("msr", "AS2"), "msr-as3": ("msr", "AS3"), "msr-all": ("msr", "all"),
    **{f"sbu-f{k}": ("sbu", k) for k in range(1, 6)},
    "utd-xsub": ("utd", "xsub"),
}
TOP_K = 5


def deep_merge(base: dict, override: dict) -> dict:
    """A copy of ``base`` with ``override`` merged in (nested dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a mapping")
    return data


def build_recipe(protocol: str, variant: str, recipe_dir: Path = EXPERIMENTS, quick: bool = False,
                 epochs: int | None = None) -> dict:
    """The recipe of one run: ``<dataset>.yaml`` + ``variants.yaml[variant]`` (+ ``quick.yaml``).

    Raises:
        KeyError: for an unknown protocol or variant.
    """
    if protocol not in PROTOCOLS:
        raise KeyError(f"unknown protocol {protocol!r}; known: {sorted(PROTOCOLS)}")
    variants = _yaml(recipe_dir / "variants.yaml")
    if variant not in variants:
        raise KeyError(f"unknown variant {variant!r}; known: {sorted(variants)}")
    recipe = deep_merge(_yaml(recipe_dir / f"{PROTOCOLS[protocol][0]}.yaml"), variants[variant] or {})
    if quick:
        recipe = deep_merge(recipe, _yaml(recipe_dir / "quick.yaml"))
    if epochs is not None:
        recipe = deep_merge(recipe, {"train": {"epochs": int(epochs)}})
    recipe["protocol"], recipe["variant"] = protocol, variant
    return recipe


def load_protocol(protocol: str, data_dir: Path) -> tuple[list, list, list[str]]:
    """``(train, test, labels)`` sequences and class names of a protocol.

    Raises:
        KeyError: unknown protocol. FileNotFoundError: dataset missing under ``data_dir``.
    """
    dataset, param = PROTOCOLS[protocol]
    if dataset == "msr":
        from engines.datasets.msr import ACTION_SETS, MSR_ACTIONS, load_msr_action3d, xsub_split

        actions = ACTION_SETS[param] if param != "all" else tuple(range(1, 21))
        train, test = xsub_split(load_msr_action3d(data_dir, actions=actions))
        return train, test, [MSR_ACTIONS[a - 1] for a in sorted(actions)]
    if dataset == "sbu":
        from engines.datasets.sbu import SBU_CLASSES, fold_split, load_sbu

        train, test = fold_split(load_sbu(data_dir), int(param))
        return train, test, list(SBU_CLASSES)
    from engines.datasets.utd import UTD_ACTIONS, load_utd_mhad, xsub_split as utd_split

    train, test = utd_split(load_utd_mhad(data_dir))
    return train, test, list(UTD_ACTIONS)


def daemon_window(seq, num_frames: int, num_persons: int, fps: float) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """A window exactly as the daemon builds it: resampled to ``fps``, last ``T`` frames right-aligned.

    Returns:
        ``window (3, T, V, M)`` float32 (``engines.skeleton.to_window``), ``depth (T, V, M)``
        metres (0 = unknown) and the ``(start, end)`` frames holding the sequence.
    """
    from engines.sarde.data import resample
    from engines.skeleton import normalize_keypoints, to_window

    idx = resample(len(seq.keypoints), seq.fps, fps)
    kp = np.asarray(seq.keypoints, np.float32)[idx][-num_frames:]  # (L, M', V, 3)
    window = to_window(normalize_keypoints(kp, seq.frame_size), num_frames, num_persons)
    depth = np.zeros((num_frames, kp.shape[2], num_persons), np.float32)
    length = len(kp)
    if seq.depth is not None:
        d = np.asarray(seq.depth, np.float32)[idx][-num_frames:, :num_persons]  # (L, M, V)
        d = np.where(kp[:, :num_persons, :, 2] > 0, d, 0.0)
        depth[num_frames - length:, :, :d.shape[1]] = d.transpose(0, 2, 1)
    return window, depth, (num_frames - length, num_frames)


class _DaemonWindows:
    """Dataset of :func:`daemon_window` items (same item dict as ``WindowDataset``)."""

    def __init__(self, base):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        import torch

        seq = self.base.sequences[i]
        window, depth, span = daemon_window(seq, self.base.num_frames, self.base.num_persons, self.base.fps)
        return {"window": torch.from_numpy(window), "depth": torch.from_numpy(depth),
                "label": torch.tensor(self.base.label_index(seq), dtype=torch.int64),
                "span": torch.tensor(span, dtype=torch.int64)}


def predict(model, dataset, batch_size: int = 32) -> dict:
    """Run a model over a dataset of window items (eval mode, windows cut to their skeletons).

    Returns:
        ``{"scores": (N, K) float32 probabilities, "labels": (N,) int64, "depth": [abs, root_rel,
        abs_rel] concatenated 1-D float32 arrays in metres / ratio, or None}``.
    """
    import torch
    from torch.utils.data import DataLoader

    from engines.sarde.data import collate
    from engines.sarde.train import depth_errors

    model.eval()
    stride = model.recognizer.time_stride
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=lambda b: collate(b, crop_stride=stride))
    scores, labels, errs = [], [], [[], [], []]
    with torch.no_grad():
        for batch in loader:
            s, depth = model(batch["window"], batch["depth"] if model.depth_mode == "oracle" else None)
            scores.append(s.numpy())
            labels.append(batch["label"].numpy())
            e = depth_errors(depth, batch["depth"]) if model.estimates_depth else None
            if e is not None:
                for acc, x in zip(errs, e):
                    acc.append(x.numpy())
    return {"scores": np.concatenate(scores), "labels": np.concatenate(labels),
            "depth": [np.concatenate(e) for e in errs] if errs[0] else None}


def classification_metrics(scores: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """top-1, top-5, per-class accuracy and the confusion matrix (rows = true class, columns = predicted).

    Args:
        scores: ``(N, K)``; labels: ``(N,)`` class index (``-1`` rows are ignored).
    """
    keep = labels >= 0
    scores, labels = scores[keep], labels[keep]
    k = scores.shape[1]
    pred = scores.argmax(1)
    topk = np.argsort(-scores, axis=1)[:, :min(TOP_K, k)]
    conf = np.zeros((k, k), np.int64)
    np.add.at(conf, (labels, pred), 1)
    per_class = {name: (float(conf[i, i] / conf[i].sum()) if conf[i].sum() else None) for i, name in enumerate(class_names)}
    return {"n": int(len(labels)), "top1": float(np.mean(pred == labels)) if len(labels) else None,
            "top5": float(np.mean((topk == labels[:, None]).any(1))) if len(labels) else None,
            "per_class": per_class, "confusion": conf.tolist()}


def plot_confusion(conf: list[list[int]], class_names: list[str], path: Path, title: str) -> Path | None:
    """Row-normalised confusion matrix PNG; None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        log.info("matplotlib not installed; no confusion PNG")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = np.asarray(conf, np.float64)
    norm = c / np.maximum(c.sum(1, keepdims=True), 1)
    size = 3 + 0.35 * len(class_names)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(class_names)), class_names, fontsize=7)
    for i in range(len(c)):
        for j in range(len(c)):
            if c[i, j]:
                ax.text(j, i, int(c[i, j]), ha="center", va="center", fontsize=6,
                        color="white" if norm[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def run_one(protocol: str, variant: str, data_dir: Path, out_root: Path, recipe_dir: Path = EXPERIMENTS,
            quick: bool = False, epochs: int | None = None, device: str = "cpu", seed: int | None = None,
            progress: bool = True, force: bool = False, cache: dict | None = None) -> dict:
    """Train and evaluate one (protocol, variant); returns the result dict (also ``result.json``).

    Raises:
        KeyError: unknown protocol / variant. FileNotFoundError: dataset missing.

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


def _train_and_evaluate(protocol: str, variant: str, recipe: dict, seed: int, out: Path, data_dir: Path,
                        quick: bool, device: str, progress: bool, cache: dict | None) -> dict:
    """The body of :func:`run_one`: train from ``recipe``, evaluate, write the run folder ``out``."""
    import torch

    from engines.sarde.data import Augment, WindowDataset
    from engines.sarde.models import build_model
    from engines.sarde.train import fit, plot_curves, pretrain_depth

    result_path = out / "result.json"
    cache = {} if cache is None else cache
    if protocol not in cache:
        cache[protocol] = load_protocol(protocol, data_dir)
    train_seqs, test_seqs, labels = cache[protocol]
    q = recipe.get("quick", {}) if quick else {}
    if q:
        train_seqs, test_seqs = train_seqs[::max(1, len(train_seqs) // int(q["max_train"]))][:int(q["max_train"])], \
            test_seqs[::max(1, len(test_seqs) // int(q["max_test"]))][:int(q["max_test"])]
    w = recipe.get("window", {})
    common = dict(num_frames=int(w.get("num_frames", 150)), num_persons=int(w.get("num_persons", 2)),
                  fps=float(w.get("fps", 15.0)))
    started = time.perf_counter()
    torch.manual_seed(seed)
    augment = Augment(**recipe.get("augment", {}))
    repeat = int(recipe.get("data", {}).get("repeat", 1))
    train_set = torch.utils.data.ConcatDataset(
        [WindowDataset(train_seqs, labels, use_depth=True, augment=augment, seed=seed + 17 * r, **common)
         for r in range(repeat)])
    test_set = WindowDataset(test_seqs, labels, use_depth=True, **common)
    model = build_model(recipe.get("model", {}), len(labels)).to(device)
    pre = pretrain_depth(model, train_seqs, recipe, seed, progress)
    fitted = fit(model, train_set, recipe, device, seed, progress, q.get("max_steps"), checkpoint_dir=out)
    train_seconds = time.perf_counter() - started
    model.cpu().eval()
    if int(os.environ.get("RANK", "0")) != 0:
        return {}
    t0 = time.perf_counter()
    centred = predict(model, test_set)
    daemon = predict(model, _DaemonWindows(test_set))
    eval_seconds = time.perf_counter() - t0
    metrics = classification_metrics(centred["scores"], centred["labels"], labels)
    daemon_metrics = classification_metrics(daemon["scores"], daemon["labels"], labels)
    result = {
        "protocol": protocol, "variant": variant, "recipe": recipe, "labels": labels, "seed": seed,
        "quick": quick, "n_train": len(train_seqs), "n_test": len(test_seqs),
        "top1": metrics["top1"], "top5": metrics["top5"], "per_class": metrics["per_class"],
        "confusion": metrics["confusion"],
        "daemon_top1": daemon_metrics["top1"], "daemon_top5": daemon_metrics["top5"],
        "train_seconds": round(train_seconds, 1), "eval_seconds": round(eval_seconds, 1),
        "epochs": len(fitted["history"]), "steps": fitted["steps"], "history": fitted["history"],
        "pretrain_depth_history": pre,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "machine": machine(), "device": device,
    }
    if centred["depth"] is not None:
        abs_e, rel_e, absrel = centred["depth"]
        result.update(depth_rootrel_mm=1000 * float(rel_e.mean()), depth_abs_mm=1000 * float(abs_e.mean()),
                      depth_absrel=float(absrel.mean()))
    torch.save(model.state_dict(), out / "model.pt")
    # beside model.pt, what `sarde export recognizer --checkpoint` needs: recipe + labels, parity windows
    (out / "model.json").write_text(json.dumps({
        "recipe": recipe, "labels": labels, "seed": seed, "train_seconds": result["train_seconds"],
        "metrics": {protocol: {k: result.get(k) for k in ("top1", "top5", "daemon_top1", "depth_rootrel_mm",
                                                          "depth_abs_mm", "depth_absrel")}},
    }, indent=2, sort_keys=True), encoding="utf-8")
    np.save(out / "parity_windows.npy", np.stack([test_set[i]["window"].numpy() for i in range(min(4, len(test_set)))]),
            allow_pickle=False)
    title = f"{protocol} / {variant}: top-1 {metrics['top1']:.3f}"
    plot_confusion(metrics["confusion"], labels, out / "confusion.png", title)
    plot_curves(fitted["history"], out / "curves.png", f"{protocol} / {variant}")
    result_path.write_text(json.dumps(result, indent=2, sort_keys=True), encoding="utf-8")
    (out / "result.md").write_text(run_markdown(result), encoding="utf-8")
    log.info("%s/%s: top-1 %.3f (daemon windows %.3f), top-5 %.3f, trained in %.0f s", protocol, variant,
             result["top1"], result["daemon_top1"], result["top5"], train_seconds)
    return result


def machine() -> str:
    """A one-line description of the machine (CPU count, torch threads, platform)."""
    import torch

    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), {platform.platform()}")


def _fmt(x, pct: bool = True) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.2f}" if pct else f"{x:.1f}"


def run_markdown(r: dict) -> str:
    """Markdown report of one run: headline metrics, per-class accuracy."""
    lines = [f"# {r['protocol']} / {r['variant']}", "",
             f"- top-1 {_fmt(r['top1'])} %, top-5 {_fmt(r['top5'])} % (centred windows, n = {r['n_test']})",
             f"- top-1 on daemon windows (right-aligned T = {r['recipe']['window']['num_frames']}, "
             f"{r['recipe']['window']['fps']} fps): {_fmt(r['daemon_top1'])} %"]
    if "depth_rootrel_mm" in r:
        lines.append(f"- depth (held-out subjects): root-relative {r['depth_rootrel_mm']:.1f} mm, absolute "
                     f"{r['depth_abs_mm']:.1f} mm, abs-rel {r['depth_absrel']:.4f}")
    lines += [f"- training {r['train_seconds']:.0f} s ({r['epochs']} epochs, {r['steps']} steps), "
              f"{r['num_parameters']} parameters, {r['machine']}", "", "| class | accuracy |", "|---|---|"]
    lines += [f"| {name} | {_fmt(acc)} |" for name, acc in r["per_class"].items()]
    return "\n".join(lines) + "\n"


def run_name(variant: str, seed: int, recipe_seed: int) -> str:
    """Folder name of a run: the variant for the recipe's own seed, ``<variant>-seed<k>`` for others."""
    return variant if seed == recipe_seed else f"{variant}-seed{seed}"


def summarise(out_root: Path, recipe_dir: Path = EXPERIMENTS) -> tuple[Path, Path]:
    """Collect every ``result.json`` under ``out_root`` into ``summary.md`` and ``summary.json``.

    ``summary.md`` holds the per-dataset tables of :mod:`engines.sarde.report` (variants side by side,
    seed means, published numbers, gap closed by estimated depth), then one row per run.
    """
    from engines.sarde.report import load_results, render

    out_root = Path(out_root)
    results = load_results(out_root)
    rows = [{k: r.get(k) for k in ("protocol", "variant", "seed", "top1", "top5", "daemon_top1", "depth_rootrel_mm",
                                   "depth_abs_mm", "depth_absrel", "train_seconds", "epochs", "num_parameters",
                                   "n_train", "n_test", "quick")} for r in results]
    report_md, tables = render(results, recipe_dir / "published.yaml")
    (out_root / "summary.json").write_text(json.dumps({"tables": tables, "runs": rows}, indent=2), encoding="utf-8")
    lines = [report_md, "## Every run", "",
             "| protocol | variant | seed | top-1 % | top-5 % | top-1 daemon windows % | depth root-rel mm | "
             "depth abs-rel | train s | epochs | params |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['protocol']} | {r['variant']}{' (quick)' if r['quick'] else ''} | {r['seed']} | "
                     f"{_fmt(r['top1'])} | "
                     f"{_fmt(r['top5'])} | {_fmt(r['daemon_top1'])} | {_fmt(r['depth_rootrel_mm'], False)} | "
                     f"{'-' if r['depth_absrel'] is None else format(r['depth_absrel'], '.3f')} | "
                     f"{_fmt(r['train_seconds'], False)} | {r['epochs']} | {r['num_parameters']} |")
    md = out_root / "summary.md"
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md, out_root / "summary.json"


def suite_runs(name: str, recipe_dir: Path = EXPERIMENTS) -> list[tuple[str, str, int | None]]:
    """``(protocol, variant, seed)`` runs of a suite in ``suites.yaml``, in order, without repeats.

    A suite group may list ``seeds``; without it the run uses the recipe's seed (``None``).

    Raises:
        KeyError: unknown suite.
    """
    suites = _yaml(recipe_dir / "suites.yaml")
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
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "eval")
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
