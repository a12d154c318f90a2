"""Train the fused SARDE model (Sec. 3.4): depth from MSR Action3D, recognition from SBU (+ other).

``python -m engines.sarde.train --recipe configs/models/sarde-default.yaml --data ../shared/data
--out artifacts/train`` writes ``model.pt`` (a ``state_dict``, loaded with ``weights_only=True``),
``model.json`` (recipe, labels, held-out metrics, training time) and ``parity_windows.npy`` (a few
real held-out windows for the exporter's parity check).

Schedule: (1) the per-frame depth GCN is pre-trained on MSR frames with the scale-invariant loss
(cheap: it is a per-frame spatial network); (2) the whole graph is trained with Eq. 3 on SBU
windows (recognition) and MSR windows (depth, and the ``other`` class when the recipe asks).
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

from engines.datasets.msr import load_msr_action3d
from engines.datasets.sbu import SBU_FOLDS, load_sbu
from engines.sarde.data import Augment, WindowDataset, collate, make_window
from engines.sarde.losses import multitask_loss, scale_invariant_depth_loss
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


def split_data(recipe: dict, data_dir: Path) -> dict[str, list]:
    """Read SBU and MSR Action3D and split them as the recipe says.

    Returns:
        ``{"sbu_train", "sbu_test", "msr_train", "msr_test"}`` lists of ``SkeletonSequence``.
    """
    d = recipe["data"]
    test_sets = SBU_FOLDS[int(d.get("sbu_test_fold", 1)) - 1]
    sbu = load_sbu(data_dir)
    msr_test_subjects = set(d.get("msr_test_subjects", [2, 4, 6, 8, 10]))
    msr = load_msr_action3d(data_dir)
    return {
        "sbu_train": [s for s in sbu if s.subject not in test_sets],
        "sbu_test": [s for s in sbu if s.subject in test_sets],
        "msr_train": [s for s in msr if s.subject not in msr_test_subjects],
        "msr_test": [s for s in msr if s.subject in msr_test_subjects],
    }


def _datasets(recipe: dict, splits: dict, labels: list[str], seed: int):
    w = recipe.get("window", {})
    common = dict(num_frames=int(w.get("num_frames", 150)), num_persons=int(w.get("num_persons", 2)),
                  fps=float(w.get("fps", 15.0)))
    other = OTHER in labels
    msr_map = {s.label: OTHER for s in splits["msr_train"] + splits["msr_test"]} if other else {}
    # MSR labels are not classes of the model unless mapped to ``other``
    msr_labels = labels if other else []
    augment = Augment(**recipe.get("augment", {}))
    repeat = int(recipe["data"].get("sbu_repeat", 1))
    train = torch.utils.data.ConcatDataset(
        [WindowDataset(splits["sbu_train"], labels, use_depth=False, augment=augment, seed=seed + 17 * r, **common)
         for r in range(repeat)]
        + [WindowDataset(splits["msr_train"], msr_labels, msr_map, use_depth=True, augment=augment, seed=seed + 1,
                         **common)])
    tests = {
        "sbu": WindowDataset(splits["sbu_test"], labels, use_depth=True, **common),
        "msr": WindowDataset(splits["msr_test"], msr_labels, msr_map, use_depth=True, **common),
    }
    return train, tests


def pretrain_depth(model: SardeNet, sequences: list, recipe: dict, seed: int, progress: bool) -> list[float]:
    """Per-frame pre-training of the depth GCN on 3D sequences (scale-invariant loss, Eqs. 4-5).

    Returns the mean loss of each epoch.
    """
    cfg = recipe.get("pretrain_depth", {})
    epochs = int(cfg.get("epochs", 0))
    if epochs <= 0:
        return []
    w = recipe.get("window", {})
    augment = Augment(**recipe.get("augment", {}))
    net = model.depth_net
    opt = torch.optim.Adam(net.parameters(), lr=float(cfg.get("lr", 3e-3)))
    batch = int(cfg.get("batch_frames", 512))
    lam = float(recipe.get("train", {}).get("lambda", 0.5))
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
            loss, has = scale_invariant_depth_loss(pred, d[idx], lam)
            loss = loss[has].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        history.append(float(np.mean(losses)))
        log.info("depth pretrain epoch %d: L_I %.5f", epoch + 1, history[-1])
    return history


@torch.no_grad()
def evaluate(model: SardeNet, dataset: WindowDataset, labels: list[str], batch_size: int = 32) -> dict:
    """Held-out metrics on deterministic windows (eval mode).

    Returns:
        ``top1`` (over samples with a label, argmax over all K classes), ``top1_known``
        (argmax over classes other than ``other``, SBU), ``predicted_other`` (fraction of windows
        whose argmax is ``other``), ``confident_interaction`` (fraction of windows whose argmax is
        not ``other`` with probability >= 0.5: would-be events), ``depth_abs_mm`` (mean |z - z_gt|), ``depth_rootrel_mm``
        (mean |(z - z_neck) - (z_gt - z_neck_gt)|, frames with a neck), ``depth_absrel``
        (mean |z - z_gt| / z_gt), ``n``.
    """
    model.eval()
    stride = model.recognizer.time_stride
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=lambda b: collate(b, crop_stride=stride))
    correct = correct_known = labelled = other = confident = count = 0
    abs_err, rel_err, absrel = [], [], []
    known = [i for i, name in enumerate(labels) if name != OTHER]
    other_idx = labels.index(OTHER) if OTHER in labels else -1
    for batch in loader:
        scores, depth = model(batch["window"])
        pred = scores.argmax(1)
        lab = batch["label"]
        has = lab >= 0
        labelled += int(has.sum())
        correct += int((pred[has] == lab[has]).sum())
        pk = torch.tensor(known)[scores[:, known].argmax(1)]
        correct_known += int((pk[has] == lab[has]).sum())
        other += int((pred == other_idx).sum())
        confident += int(((pred != other_idx) & (scores.max(1).values >= CONFIDENT)).sum())
        count += len(pred)
        gt = batch["depth"]
        valid = (gt > 0) & (depth > 0)
        if valid.any():
            abs_err.append((depth - gt).abs()[valid])
            absrel.append(((depth - gt).abs() / gt.clamp(min=1e-6))[valid])
            root_ok = valid[:, :, ROOT_JOINT:ROOT_JOINT + 1, :] & valid
            rel = (depth - depth[:, :, ROOT_JOINT:ROOT_JOINT + 1]) - (gt - gt[:, :, ROOT_JOINT:ROOT_JOINT + 1])
            rel_err.append(rel.abs()[root_ok])
    out = {"n": count, "top1": correct / labelled if labelled else None,
           "top1_known": correct_known / labelled if labelled else None,
           "predicted_other": other / count if count and other_idx >= 0 else None,
           "confident_interaction": confident / count if count else None}
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
    cfg = recipe.get("train", {})
    splits = split_data(recipe, data_dir)
    train_set, tests = _datasets(recipe, splits, labels, seed)
    model = build_model(recipe.get("model", {}), len(labels)).to(device)
    pre_hist = pretrain_depth(model, splits["msr_train"], recipe, seed, progress)

    epochs = int(cfg.get("epochs", 10))
    batch_size = int(cfg.get("batch_size", 16))
    stride = model.recognizer.time_stride if cfg.get("crop", True) else None
    lr = float(cfg.get("lr", 3e-3))
    depth_scale = float(cfg.get("depth_lr_scale", 1.0))  # < 1 keeps the pre-trained depth net closer
    opt = torch.optim.Adam([{"params": model.depth_net.parameters(), "lr": lr * depth_scale},
                            {"params": model.recognizer.parameters(), "lr": lr}],
                           weight_decay=float(cfg.get("weight_decay", 0.0)))
    steps_per_epoch = -(-len(train_set) // batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[lr * depth_scale, lr], total_steps=max(total, 1),
                                                pct_start=float(cfg.get("warmup", 0.15)))
    alpha, lam = float(cfg.get("alpha", 0.97)), float(cfg.get("lambda", 0.5))
    gen = torch.Generator().manual_seed(seed)
    history, step = [], 0
    for epoch in range(epochs):
        for ds in train_set.datasets:
            ds.set_epoch(epoch)
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=gen, drop_last=True,
                            collate_fn=lambda b: collate(b, crop_stride=stride))
        model.train()
        sums = np.zeros(3)
        bar = _progress(loader, progress, desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        for batch in bar:
            logits, depth = model.logits(batch["window"].to(device))
            loss, parts = multitask_loss(logits, depth, batch["label"].to(device), batch["depth"].to(device), alpha, lam)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            sums += (float(loss.detach()), parts["L_I"], parts["L_II"])
            if step >= total:
                break
        n = max(1, min(steps_per_epoch, step - epoch * steps_per_epoch))
        history.append({"epoch": epoch + 1, "loss": sums[0] / n, "L_I": sums[1] / n, "L_II": sums[2] / n})
        log.info("epoch %d: L %.4f  L_I %.5f  L_II %.4f", epoch + 1, *(sums / n))
        if step >= total:
            break
    train_seconds = time.perf_counter() - started
    model.cpu().eval()
    metrics = {name: evaluate(model, ds, labels) for name, ds in tests.items()}
    ckpt = out_dir / "model.pt"
    torch.save(model.state_dict(), ckpt)
    # a few real held-out windows (SBU two-person, MSR one-person) for the exporter's parity check
    parity = np.stack([tests["sbu"][i]["window"].numpy() for i in range(min(4, len(tests["sbu"])))]
                      + [tests["msr"][i]["window"].numpy() for i in range(min(2, len(tests["msr"])))])
    np.save(out_dir / "parity_windows.npy", parity, allow_pickle=False)
    info = {
        "recipe": recipe, "labels": labels, "seed": seed, "metrics": metrics, "history": history,
        "pretrain_depth_history": pre_hist, "train_seconds": round(train_seconds, 1), "steps": step,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "splits": {k: len(v) for k, v in splits.items()}, "torch": torch.__version__,
    }
    (out_dir / "model.json").write_text(json.dumps(info, indent=2, sort_keys=True))
    log.info("trained in %.0f s; held-out SBU top-1 %.3f; MSR depth abs %.0f mm", train_seconds,
             metrics["sbu"]["top1"] or 0.0, metrics["msr"].get("depth_abs_mm", float("nan")))
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
