"""Train the fused SARDE model (Sec. 3.4) on the datasets a recipe names (``engines.sarde.datasets``).

``python -m engines.sarde.train --recipe RECIPE.yaml --data ../shared/data --out artifacts/train``
(a recipe whose datasets are all built-in readers or ``.npz`` files; ``sarde train`` also resolves
daemon recordings of clip lists first) writes ``model.pt`` (a ``state_dict``, loaded with ``weights_only=True``),
``model.json`` (recipe, labels, held-out metrics, training time) and ``parity_windows.npy`` (a few
real held-out windows for the exporter's parity check).

Schedule: (1) the per-frame depth GCN is pre-trained on the frames of the ``depth: true`` datasets
with the scale-invariant loss (cheap: it is a per-frame spatial network); (2) the whole graph is
trained with Eq. 3 on the mixture of every dataset's windows (recognition where a sequence has a
label of the model, depth where its dataset supervises depth).

:func:`fit` is the joint-training loop shared with the protocol runs of ``sarde eval``
(``engines.sarde.evaluate``): Eq. 3 over any window dataset, resumable (``resume.pt``), DDP under
``torchrun``; :func:`plot_curves` draws its history when matplotlib is installed.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from engines.sarde.data import Augment, WindowDataset, collate, make_window
from engines.sarde.datasets import DatasetSplit, RecipeError, load_datasets
from engines.sarde.losses import DEPTH_LOSSES, multitask_loss
from engines.sarde.models import SardeNet, build_model

log = logging.getLogger(__name__)

OTHER = "other"
ROOT_JOINT = 1  # neck: root of root-relative depth errors
CONFIDENT = 0.5  # score of a would-be event in evaluate()


def load_recipe(recipe: dict | str | Path) -> dict:
    """A recipe dict, or read from a YAML file."""
    if isinstance(recipe, dict):
        return recipe
    with open(recipe, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"recipe {recipe} is not a mapping")
    return data


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, **kwargs)


#: Top-level keys of a recipe that names its datasets.
RECIPE_KEYS = frozenset({"name", "seed", "labels", "background", "window", "datasets", "model", "pretrain_depth",
                         "train", "augment", "events"})
_SECTION_KEYS = {
    "window": {"num_frames", "num_persons", "fps", "mask_joints"},
    "pretrain_depth": {"epochs", "batch_frames", "lr"},
    "train": {"epochs", "batch_size", "lr", "weight_decay", "warmup", "alpha", "lambda", "depth_lr_scale", "crop",
              "depth_loss", "class_balance"},
    "events": {"alerts"},
}


def check_recipe_keys(recipe: dict) -> None:
    """Reject unknown keys in a ``datasets:`` recipe (top level and every section but ``model``,
    which ``build_model`` checks, and ``augment``, checked by :class:`Augment`).

    Raises:
        RecipeError: naming the section and the key.
    """
    unknown = set(recipe) - RECIPE_KEYS
    if unknown:
        raise RecipeError(f"recipe: unknown key(s) {sorted(unknown)}; allowed: {sorted(RECIPE_KEYS)}")
    for section, allowed in _SECTION_KEYS.items():
        extra = set(recipe.get(section) or {}) - allowed
        if extra:
            raise RecipeError(f"recipe: {section}: unknown key(s) {sorted(extra)}; allowed: {sorted(allowed)}")
    try:
        Augment(**(recipe.get("augment") or {}))
    except TypeError as exc:
        raise RecipeError(f"recipe: augment: {exc}") from exc
    if str(recipe.get("background", OTHER)) not in recipe["labels"]:
        raise RecipeError(f"recipe: background {recipe.get('background')!r} is not one of labels {recipe['labels']}")


def mixture_datasets(recipe: dict, parts: list[DatasetSplit], labels: list[str], seed: int):
    """Training mixture and held-out sets of a ``datasets:`` recipe.

    Each part gives ``repeat`` augmented :class:`WindowDataset` copies of its training sequences
    (depth targets only where ``depth: true``; labels already mapped by ``load_datasets``) and, when
    it has a test part, one deterministic held-out :class:`WindowDataset` named after it.

    Returns:
        ``(ConcatDataset, {name: WindowDataset})``.
    """
    w = recipe.get("window", {})
    common = dict(num_frames=int(w.get("num_frames", 150)), num_persons=int(w.get("num_persons", 2)),
                  fps=float(w.get("fps", 15.0)), mask_joints=tuple(w.get("mask_joints", ())))
    augment = Augment(**recipe.get("augment", {}))
    train, tests = [], {}
    for k, part in enumerate(parts):
        if part.train:
            for r in range(part.repeat):
                train.append(WindowDataset(part.train, labels, use_depth=part.depth, augment=augment,
                                           seed=seed + 101 * k + 17 * r, virtual_camera=part.virtual_camera, **common))
        if part.test:
            tests[part.name] = WindowDataset(part.test, labels, use_depth=part.depth, **common)
    if not train:
        raise RecipeError("recipe: datasets give no training sequence")
    return torch.utils.data.ConcatDataset(train), tests


def pretrain_depth(model: SardeNet, sequences: list, recipe: dict, seed: int, progress: bool) -> list[float]:
    """Per-frame pre-training of the depth GCN on 3D sequences (scale-invariant loss, Eqs. 4-5).

    Returns the mean loss of each epoch.
    """
    cfg = recipe.get("pretrain_depth", {})
    epochs = int(cfg.get("epochs", 0))
    if epochs <= 0 or model.depth_net is None:
        return []
    w = recipe.get("window", {})
    augment = Augment(**recipe.get("augment", {}))
    net = model.depth_net
    opt = torch.optim.Adam(net.parameters(), lr=float(cfg.get("lr", 3e-3)))
    batch = int(cfg.get("batch_frames", 512))
    lam = float(recipe.get("train", {}).get("lambda", 0.5))
    depth_fn = DEPTH_LOSSES[str(recipe.get("train", {}).get("depth_loss", "scale_invariant"))]
    history = []
    net.train()
    for epoch in range(epochs):
        rng = np.random.default_rng((seed, 1000 + epoch))
        xs, ds = [], []
        for seq in sequences:
            win, dep, (a, b) = make_window(seq, int(w.get("num_frames", 150)), int(w.get("num_persons", 2)),
                                           float(w.get("fps", 15.0)), rng, augment)
            xy = win[:2, a:b].transpose(1, 3, 0, 2).reshape(-1, 2, 1, win.shape[2])  # (L*M, 2, 1, V)
            dd = dep[a:b].transpose(0, 2, 1).reshape(-1, 1, dep.shape[1])  # (L*M, 1, V)
            keep = (dd > 0).any(axis=(1, 2))
            xs.append(xy[keep])
            ds.append(dd[keep])
        x = torch.from_numpy(np.concatenate(xs))
        d = torch.from_numpy(np.concatenate(ds))
        order = torch.from_numpy(rng.permutation(len(x)))
        losses = []
        for i in _progress(range(0, len(x), batch), progress, desc=f"depth pretrain {epoch + 1}/{epochs}", leave=False):
            idx = order[i:i + batch]
            pred = net(x[idx])  # (B, 1, V)
            loss, has = depth_fn(pred, d[idx], lam)
            loss = loss[has].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
        log.info("depth pretrain epoch %d: L_I %.5f", epoch + 1, history[-1])
    return history


def _is_dist() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class _Logits(torch.nn.Module):
    """``forward = SardeNet.logits``: the module DDP wraps (DDP synchronises through ``forward``)."""

    def __init__(self, net: SardeNet):
        super().__init__()
        self.net = net

    def forward(self, x, depth_in=None):
        return self.net.logits(x, depth_in)


def fit(model: SardeNet, train_set, recipe: dict, device: str = "cpu", seed: int = 0, progress: bool = True,
        max_steps: int | None = None, checkpoint_dir: Path | None = None) -> dict:
    """Joint training with Eq. 3 (Sec. 3.4) over ``train_set`` (a dataset of window items).

    Recipe keys (``train``): ``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``warmup``
    (Adam + one-cycle schedule), ``alpha``, ``lambda``, ``depth_lr_scale``, ``crop``,
    ``depth_loss`` (``scale_invariant`` | ``mse``). Models without a depth network get no ``L_I``;
    ``depth_mode: oracle`` models receive the ground-truth depth as input.

    With ``checkpoint_dir``, ``resume.pt`` (model, optimiser, schedule, RNG states, history; a
    ``weights_only`` torch file) is written after every epoch and training resumes from it when it
    exists. Under ``torchrun`` (an initialised process group) the model is wrapped in DDP and each
    process reads its share of every epoch (DistributedSampler); only rank 0 writes.

    Returns:
        ``{"history": [{"epoch", "loss", "L_I", "L_II", "seconds"}], "steps": int, "resumed_epoch": int}``.
    """
    cfg = recipe.get("train", {})
    epochs = int(cfg.get("epochs", 10))
    batch_size = int(cfg.get("batch_size", 16))
    stride = model.recognizer.time_stride if cfg.get("crop", True) else None
    lr = float(cfg.get("lr", 3e-3))
    depth_scale = float(cfg.get("depth_lr_scale", 1.0))  # < 1 keeps the pre-trained depth net closer
    groups, max_lrs = [], []
    if model.depth_net is not None:
        groups.append({"params": model.depth_net.parameters(), "lr": lr * depth_scale})
        max_lrs.append(lr * depth_scale)
    groups.append({"params": model.recognizer.parameters(), "lr": lr})
    max_lrs.append(lr)
    opt = torch.optim.Adam(groups, weight_decay=float(cfg.get("weight_decay", 0.0)))
    world = torch.distributed.get_world_size() if _is_dist() else 1
    rank = torch.distributed.get_rank() if _is_dist() else 0
    steps_per_epoch = -(-len(train_set) // (batch_size * world))
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lrs, total_steps=max(total, 1),
                                                pct_start=float(cfg.get("warmup", 0.15)))
    alpha, lam = float(cfg.get("alpha", 0.97)), float(cfg.get("lambda", 0.5))
    depth_loss = str(cfg.get("depth_loss", "scale_invariant"))
    class_weights = balanced_class_weights(train_set, model.recognizer.fc.out_features, device) if cfg.get("class_balance") else None
    gen = torch.Generator().manual_seed(seed)
    history, step, first_epoch = [], 0, 0
    resume = Path(checkpoint_dir) / "resume.pt" if checkpoint_dir is not None else None
    if resume is not None:
        resume.parent.mkdir(parents=True, exist_ok=True)
    if resume is not None and resume.is_file():
        state = torch.load(resume, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        gen.set_state(state["gen"])
        torch.set_rng_state(state["torch_rng"])
        history, step, first_epoch = list(state["history"]), int(state["step"]), int(state["epoch"])
        log.info("resumed from %s at epoch %d (step %d)", resume, first_epoch, step)
    net = _Logits(model)
    if _is_dist():
        net = torch.nn.parallel.DistributedDataParallel(net, device_ids=[device] if str(device).startswith("cuda") else None)
    for epoch in range(first_epoch, epochs):
        if step >= total:
            break
        t0 = time.perf_counter()
        for ds in getattr(train_set, "datasets", [train_set]):
            ds.set_epoch(epoch)
        sampler = None
        if _is_dist():
            sampler = torch.utils.data.distributed.DistributedSampler(train_set, seed=seed, drop_last=True)
            sampler.set_epoch(epoch)
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                            generator=gen if sampler is None else None, drop_last=True,
                            collate_fn=lambda b: collate(b, crop_stride=stride))
        model.train()
        sums, n = np.zeros(3), 0
        bar = _progress(loader, progress and rank == 0, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for batch in bar:
            target = batch["depth"].to(device)
            depth_in = target if model.depth_mode == "oracle" else None
            logits, depth = net(batch["window"].to(device), depth_in)
            if not model.estimates_depth:
                target = torch.zeros_like(target)
            loss, parts = multitask_loss(logits, depth, batch["label"].to(device), target, alpha, lam, depth_loss,
                                         class_weights)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            n += 1
            sums += (float(loss.detach()), parts["L_I"], parts["L_II"])
            if step >= total:
                break
        n = max(1, n)
        history.append({"epoch": epoch + 1, "loss": float(sums[0] / n), "L_I": float(sums[1] / n),
                        "L_II": float(sums[2] / n),
                        "seconds": round(time.perf_counter() - t0, 2)})
        log.info("epoch %d: L %.4f  L_I %.5f  L_II %.4f", epoch + 1, *(sums / n))
        if resume is not None and rank == 0:
            tmp = resume.with_suffix(".tmp")
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                        "gen": gen.get_state(), "torch_rng": torch.get_rng_state(), "history": history,
                        "step": step, "epoch": epoch + 1}, tmp)
            tmp.replace(resume)
    return {"history": history, "steps": step, "resumed_epoch": first_epoch}


def balanced_class_weights(train_set, num_classes: int, device: str = "cpu") -> torch.Tensor:
    """``(K,)`` weights ``sqrt(n_max / n_k)`` from the labelled items of one epoch of ``train_set``
    (square-root inverse frequency: minority classes count more without one clip set dominating).
    Classes without items get weight 1."""
    counts = np.zeros(num_classes)
    for ds in getattr(train_set, "datasets", [train_set]):
        for seq in ds.sequences:
            k = ds.label_index(seq)
            if k >= 0:
                counts[k] += 1
    weights = np.where(counts > 0, np.sqrt(counts.max() / np.maximum(counts, 1)), 1.0)
    log.info("class weights (sqrt inverse frequency): %s", np.round(weights, 2).tolist())
    return torch.tensor(weights, dtype=torch.float32, device=device)


def plot_curves(history: list[dict], path: Path, title: str = "") -> Path | None:
    """Training curves (loss, L_I, L_II per epoch, and any ``val_top1``) as a PNG; None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        log.info("matplotlib not installed; no curves PNG")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key in zip(axes, ("L_II", "L_I", "loss")):
        ax.plot(epochs, [h[key] for h in history], marker=".")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def depth_errors(depth: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """Per-joint depth errors where both prediction and ground truth exist.

    Args:
        depth, gt: ``(N, T, V, M)`` metres (0 = missing / unknown).

    Returns:
        ``(abs, root_rel, abs_rel)`` 1-D tensors: ``|z - z_gt|`` metres, root-relative
        ``|(z - z_neck) - (z_gt - z_neck_gt)|`` metres (frames with a neck), ``|z - z_gt| / z_gt``;
        None when no joint has both.
    """
    valid = (gt > 0) & (depth > 0)
    if not bool(valid.any()):
        return None
    root_ok = valid[:, :, ROOT_JOINT:ROOT_JOINT + 1, :] & valid
    rel = (depth - depth[:, :, ROOT_JOINT:ROOT_JOINT + 1]) - (gt - gt[:, :, ROOT_JOINT:ROOT_JOINT + 1])
    return (depth - gt).abs()[valid], rel.abs()[root_ok], ((depth - gt).abs() / gt.clamp(min=1e-6))[valid]


@torch.no_grad()
def evaluate(model: SardeNet, dataset: WindowDataset, labels: list[str], batch_size: int = 32,
             background: str = OTHER) -> dict:
    """Held-out metrics on deterministic windows (eval mode).

    Returns:
        ``top1`` (over samples with a label, argmax over all K classes), ``top1_known``
        (argmax over classes other than the ``background`` class, ``other`` or ``normal``),
        ``predicted_other`` (fraction of windows whose argmax is the background class),
        ``confident_interaction`` (fraction of windows whose argmax is not the background class
        with probability >= 0.5: would-be events), ``per_class`` (recall per labelled class), ``depth_abs_mm`` (mean |z - z_gt|), ``depth_rootrel_mm``
        (mean |(z - z_neck) - (z_gt - z_neck_gt)|, frames with a neck), ``depth_absrel``
        (mean |z - z_gt| / z_gt), ``n``.
    """
    model.eval()
    stride = model.recognizer.time_stride
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=lambda b: collate(b, crop_stride=stride))
    correct = correct_known = labelled = other = confident = count = 0
    abs_err, rel_err, absrel = [], [], []
    hits, seen = np.zeros(len(labels)), np.zeros(len(labels))
    known = [i for i, name in enumerate(labels) if name != background]
    other_idx = labels.index(background) if background in labels else -1
    for batch in loader:
        scores, depth = model(batch["window"], batch["depth"] if model.depth_mode == "oracle" else None)
        pred = scores.argmax(1)
        lab = batch["label"]
        has = lab >= 0
        labelled += int(has.sum())
        correct += int((pred[has] == lab[has]).sum())
        np.add.at(seen, lab[has].numpy(), 1)
        np.add.at(hits, lab[has][pred[has] == lab[has]].numpy(), 1)
        pk = torch.tensor(known)[scores[:, known].argmax(1)]
        correct_known += int((pk[has] == lab[has]).sum())
        other += int((pred == other_idx).sum())
        confident += int(((pred != other_idx) & (scores.max(1).values >= CONFIDENT)).sum())
        count += len(pred)
        errors = depth_errors(depth, batch["depth"])
        if errors is not None:
            abs_err.append(errors[0])
            rel_err.append(errors[1])
            absrel.append(errors[2])
    out = {"n": count, "top1": correct / labelled if labelled else None,
           "top1_known": correct_known / labelled if labelled else None,
           "predicted_other": other / count if count and other_idx >= 0 else None,
           "confident_interaction": confident / count if count else None,
           "per_class": {labels[k]: {"n": int(seen[k]), "recall": float(hits[k] / seen[k])}
                         for k in range(len(labels)) if seen[k]}}
    if abs_err:
        out["depth_abs_mm"] = 1000 * float(torch.cat(abs_err).mean())
        out["depth_rootrel_mm"] = 1000 * float(torch.cat(rel_err).mean())
        out["depth_absrel"] = float(torch.cat(absrel).mean())
    return out


def train(recipe: dict | str | Path, data_dir: Path, out_dir: Path, device: str = "cpu", seed: int = 0,
          progress: bool = True, max_steps: int | None = None) -> Path:
    """Train SARDE from a recipe; returns the checkpoint path (``out_dir/model.pt``).

    Args:
        recipe: dict or YAML path (``configs/models/sarde-default.yaml``).
        data_dir: data root holding ``skeletons/sbu_kinect_interaction`` and ``skeletons/msr_action3d``.
        out_dir: created; receives ``model.pt``, ``model.json``, ``parity_windows.npy``.
        device: torch device.
        seed: seeds torch, NumPy and the augmentation.
        progress: tqdm bars.
        max_steps: stop joint training after this many optimiser steps (smoke tests).

    Raises:
        FileNotFoundError: if a dataset is missing under ``data_dir``.
    """
    started = time.perf_counter()
    recipe = load_recipe(recipe)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    labels = list(recipe["labels"])
    background = str(recipe.get("background", OTHER))
    if "datasets" not in recipe:
        raise RecipeError("recipe: no `datasets:` section; list the datasets to train on (see configs/models/sarde-default.yaml)")
    check_recipe_keys(recipe)
    parts = load_datasets(recipe, data_dir)  # the recipe names every dataset it uses (engines.sarde.datasets)
    train_set, tests = mixture_datasets(recipe, parts, labels, seed)
    depth_train = [s for p in parts if p.depth for s in p.train]
    split_info = {p.name: p.split for p in parts}
    model = build_model(recipe.get("model", {}), len(labels)).to(device)
    pre_hist = pretrain_depth(model, depth_train, recipe, seed, progress)

    fitted = fit(model, train_set, recipe, device, seed, progress, max_steps)
    history, step = fitted["history"], fitted["steps"]
    train_seconds = time.perf_counter() - started
    model.cpu().eval()
    metrics = {name: evaluate(model, ds, labels, background=background) for name, ds in tests.items()}
    ckpt = out_dir / "model.pt"
    torch.save(model.state_dict(), ckpt)
    # a few real held-out windows (e.g. SBU two-person, MSR one-person) for the exporter's parity check
    parity = np.stack([ds[i]["window"].numpy() for ds in tests.values() for i in range(min(3, len(ds)))][:8])
    np.save(out_dir / "parity_windows.npy", parity, allow_pickle=False)
    info = {
        "recipe": recipe, "labels": labels, "seed": seed, "metrics": metrics, "history": history,
        "pretrain_depth_history": pre_hist, "train_seconds": round(train_seconds, 1), "steps": step,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "splits": split_info, "background": background, "torch": torch.__version__,
        "masked_joints": list(recipe.get("window", {}).get("mask_joints", [])),
    }
    (out_dir / "model.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    for name, m in metrics.items():
        log.info("trained in %.0f s; held-out %s: top-1 %s, depth abs %s mm (%d windows)", train_seconds, name,
                 "n/a" if m["top1"] is None else f"{m['top1']:.3f}",
                 f"{m['depth_abs_mm']:.0f}" if "depth_abs_mm" in m else "n/a", m["n"])
    return ckpt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the SARDE fused model (depth GCN + ST-GCN).")
    root = Path(__file__).resolve().parents[2]
    parser.add_argument("--recipe", type=Path, default=root / "configs/models/sarde-default.yaml")
    parser.add_argument("--data", type=Path, default=root.parent / "shared/data")
    parser.add_argument("--out", type=Path, default=root / "artifacts/train/sarde")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    ckpt = train(args.recipe, args.data, args.out, args.device, args.seed, not args.no_progress)
    print(json.dumps(json.loads((ckpt.parent / "model.json").read_text())["metrics"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
