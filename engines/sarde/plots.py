"""The PNGs of a training or ``sarde eval`` run (matplotlib, optional: without it no PNG is written).

* :func:`plot_curves`: the loss terms of Eq. 3 per epoch (``curves.png``);
* :func:`plot_confusion`: the row-normalised confusion matrix (``confusion.png``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _pyplot(what: str):
    """``matplotlib.pyplot`` on the Agg backend, or None (logged) without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        log.info("matplotlib not installed; no %s PNG", what)
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_curves(history: list[dict], path: Path, title: str = "") -> Path | None:
    """Training curves (``loss``, ``L_I``, ``L_II`` per epoch of ``engines.sarde.train.fit``'s history)
    as a PNG at ``path``; None without matplotlib."""
    plt = _pyplot("curves")
    if plt is None:
        return None
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for ax, key in zip(axes, ("L_II", "L_I", "loss")):
        ax.plot(epochs, [h[key] for h in history], marker=".")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(plt, fig, path)


def plot_confusion(conf: list[list[int]], class_names: list[str], path: Path, title: str) -> Path | None:
    """Row-normalised confusion matrix ``(K, K)`` counts (rows = true class) as a PNG at ``path``;
    None without matplotlib."""
    plt = _pyplot("confusion")
    if plt is None:
        return None
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
    return _save(plt, fig, path)
