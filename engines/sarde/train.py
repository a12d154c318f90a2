"""Train the fused SARDE model (Sec. 3.4) on the datasets a recipe names (``engines.sarde.datasets``).

``python -m engines.sarde.train --recipe RECIPE.yaml --data ../shared/data --out artifacts/train``
(a recipe whose datasets are all built-in readers or ``.npz`` files; ``sarde train`` also resolves
daemon recordings of clip lists first) writes the checkpoint folder of ``engines.sarde.checkpoint``:
``model.pt``, ``model.json`` (recipe, labels, held-out metrics, training time) and
``parity_windows.npy``.

Schedule: (1) the per-frame depth GCN is pre-trained on the frames of the ``depth: true`` datasets
with the scale-invariant loss (cheap: it is a per-frame spatial network); (2) the whole graph is
trained with Eq. 3 on the mixture of every dataset's windows (recognition where a sequence has a
label of the model, depth where its dataset supervises depth).

:func:`fit_recipe` is that schedule, shared with the protocol runs of ``sarde eval``
(``engines.sarde.evaluate``); :func:`fit` is its joint-training loop: Eq. 3 over any window dataset,
resumable (``resume.pt``), DDP under ``torchrun``.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from engines.sarde.checkpoint import parity_windows, save_checkpoint
from engines.sarde.data import Augment, WindowDataset, collate, make_window
from engines.sarde.datasets import DatasetSplit, RecipeError, data_labels, load_datasets
from engines.sarde.losses import DEPTH_LOSSES, multitask_loss
from engines.sarde.metrics import depth_summary, heldout_metrics
from engines.sarde.architectures import build_model
from engines.sarde.models import SardeNet
from engines.sarde.predict import predict
from engines.sarde.recipes import DEFAULT_RECIPE, OTHER, ROOT, check_recipe_keys, load_recipe, window_settings

log = logging.getLogger(__name__)


def _progress(iterable, enabled: bool, **kwargs):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, **kwargs)


def mixture_datasets(recipe: dict, parts: list[DatasetSplit], labels: list[str], seed: int):
    """Training mixture and held-out sets of read and split datasets (a ``datasets:`` recipe's, or one
    ``sarde eval`` protocol as a single part).

    Each part gives ``repeat`` augmented :class:`WindowDataset` copies of its training sequences
    (depth targets only where ``depth: true``; labels already mapped by ``load_datasets``) and, when
    it has a test part, one deterministic held-out :class:`WindowDataset` named after it.

    Returns:
        ``(ConcatDataset, {name: WindowDataset})``.
    """
    common = window_settings(recipe)
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
    if epochs <= 0 or model.depth_net is None or not sequences:  # no `depth: true` dataset: nothing to pre-train on
        return []
    w = window_settings(recipe)
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
            win, dep, (a, b) = make_window(seq, w["num_frames"], w["num_persons"], w["fps"], rng, augment)
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
    class_weights = balanced_class_weights(train_set, model.num_classes, device) if cfg.get("class_balance") else None
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


@dataclass
class Trained:
    """What :func:`fit_recipe` returns.

    Attributes:
        model: the trained :class:`SardeNet`, on the CPU, in eval mode.
        tests: ``{name: WindowDataset}`` deterministic held-out windows (:func:`mixture_datasets`).
        pretrain_depth_history: mean depth pre-training loss per epoch (:func:`pretrain_depth`).
        fitted: :func:`fit`'s ``{"history", "steps", "resumed_epoch"}``.
        seconds: wall time from the seed to the end of joint training.
    """

    model: SardeNet
    tests: dict
    pretrain_depth_history: list[float]
    fitted: dict
    seconds: float


def fit_recipe(recipe: dict, parts: list[DatasetSplit], labels: list[str], device: str = "cpu", seed: int = 0,
               progress: bool = True, max_steps: int | None = None, checkpoint_dir: Path | None = None) -> Trained:
    """The training schedule of a recipe over read and split datasets (Sec. 3.4).

    Seeds torch with ``seed``, builds the mixture (:func:`mixture_datasets`) and the model of
    ``recipe["model"]`` (``len(labels)`` classes), pre-trains the depth GCN on the training sequences
    of the ``depth`` parts (:func:`pretrain_depth`), then trains jointly (:func:`fit`; ``max_steps``,
    ``checkpoint_dir`` as there).

    Raises:
        RecipeError: the datasets give no training sequence.
    """
    started = time.perf_counter()
    torch.manual_seed(seed)
    train_set, tests = mixture_datasets(recipe, parts, labels, seed)
    model = build_model(recipe.get("model", {}), len(labels)).to(device)
    pre = pretrain_depth(model, [s for p in parts if p.depth for s in p.train], recipe, seed, progress)
    fitted = fit(model, train_set, recipe, device, seed, progress, max_steps, checkpoint_dir)
    seconds = time.perf_counter() - started
    return Trained(model.cpu().eval(), tests, pre, fitted, seconds)


def train(recipe: dict | str | Path, data_dir: Path, out_dir: Path, device: str = "cpu", seed: int = 0,
          progress: bool = True, max_steps: int | None = None) -> Path:
    """Train SARDE from a ``datasets`` recipe; returns the checkpoint path (``out_dir/model.pt``).

    Args:
        recipe: dict or YAML path (``configs/models/sarde-default.yaml``).
        data_dir: data root holding ``skeletons/sbu_kinect_interaction`` and ``skeletons/msr_action3d``.
        out_dir: created; receives ``model.pt``, ``model.json``, ``parity_windows.npy``
            (:func:`engines.sarde.checkpoint.save_checkpoint`; 3 windows of each held-out dataset, 8 at most).
        device: torch device.
        seed: seeds torch, NumPy and the augmentation.
        progress: tqdm bars.
        max_steps: stop joint training after this many optimiser steps (smoke tests).

    Raises:
        RecipeError: an invalid recipe (:func:`engines.sarde.recipes.check_recipe_keys`, ``load_datasets``).
        FileNotFoundError: if a dataset is missing under ``data_dir``.
    """
    started = time.perf_counter()
    recipe = load_recipe(recipe)
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if "datasets" not in recipe:
        raise RecipeError("recipe: no `datasets:` section; list the datasets to train on (see configs/models/sarde-default.yaml)")
    check_recipe_keys(recipe)
    parts = load_datasets(recipe, data_dir)  # the recipe names every dataset it uses (engines.sarde.datasets)
    labels = list(recipe["labels"]) if recipe.get("labels") is not None else data_labels(parts)
    background = str(recipe.get("background", OTHER))
    trained = fit_recipe(recipe, parts, labels, device, seed, progress, max_steps)
    model, history, step = trained.model, trained.fitted["history"], trained.fitted["steps"]
    train_seconds = time.perf_counter() - started
    metrics = {}
    for name, ds in trained.tests.items():
        pred = predict(model, ds)
        metrics[name] = {**heldout_metrics(pred["scores"], pred["labels"], labels, background),
                         **depth_summary(pred["depth"])}
    info = {
        "recipe": recipe, "labels": labels, "seed": seed, "metrics": metrics, "history": history,
        "trained_on": {p.name: {"reader": p.reader, "train_sequences": len(p.train), "repeat": p.repeat,
                                "depth": p.depth, "test": p.split.get("test")} for p in parts},
        "pretrain_depth_history": trained.pretrain_depth_history, "train_seconds": round(train_seconds, 1),
        "steps": step, "num_parameters": sum(p.numel() for p in model.parameters()),
        "splits": {p.name: p.split for p in parts}, "background": background, "torch": torch.__version__,
        "masked_joints": list(recipe.get("window", {}).get("mask_joints", [])),
    }
    # a few real held-out windows (e.g. SBU two-person, MSR one-person) for the exporter's parity check
    ckpt = save_checkpoint(out_dir, model, info, parity_windows(trained.tests.values(), 3))
    for name, m in metrics.items():
        log.info("trained in %.0f s; held-out %s: top-1 %s, depth abs %s mm (%d windows)", train_seconds, name,
                 "n/a" if m["top1"] is None else f"{m['top1']:.3f}",
                 f"{m['depth_abs_mm']:.0f}" if "depth_abs_mm" in m else "n/a", m["n"])
    return ckpt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the SARDE fused model (depth GCN + ST-GCN).")
    parser.add_argument("--recipe", type=Path, default=DEFAULT_RECIPE)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data")
    parser.add_argument("--out", type=Path, default=ROOT / "artifacts/train/sarde")
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
