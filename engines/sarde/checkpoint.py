"""The trained-model folder that ``sarde export recognizer --checkpoint`` reads (``export.sarde.load_checkpoint``).

One writer, :func:`save_checkpoint`, for both producers (``engines.sarde.train.train`` and every
``sarde eval`` run). The folder holds:

* ``model.pt``: the model's ``state_dict`` (loaded with ``weights_only=True``);
* ``model.json``: at least ``recipe`` (its ``model`` section rebuilds the graph) and ``labels``, plus
  the producer's record (seed, held-out ``metrics`` per dataset or protocol, training time, ...);
* ``parity_windows.npy``: ``(B, 3, T, V, M)`` float32 real held-out windows for the exporter's parity
  check (:func:`parity_windows`).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

CHECKPOINT_NAME = "model.pt"
INFO_NAME = "model.json"
PARITY_NAME = "parity_windows.npy"


def parity_windows(datasets, per_dataset: int, limit: int = 8) -> np.ndarray:
    """The first ``per_dataset`` windows of each dataset (window items), at most ``limit`` in all:
    ``(B, 3, T, V, M)`` float32."""
    return np.stack([ds[i]["window"].numpy() for ds in datasets for i in range(min(per_dataset, len(ds)))][:limit])


def save_checkpoint(out_dir: Path, model: torch.nn.Module, info: dict, windows: np.ndarray) -> Path:
    """Write ``model.pt``, ``model.json`` (``info``, sorted keys) and ``parity_windows.npy`` into ``out_dir``.

    Args:
        out_dir: an existing folder.
        model: the trained ``SardeNet`` (its ``state_dict`` is saved as it is: move it to the CPU first).
        info: JSON-serialisable; must hold ``recipe`` and ``labels``.
        windows: ``(B, 3, T, V, M)`` float32 (:func:`parity_windows`).

    Returns:
        The ``model.pt`` path.

    Raises:
        KeyError: ``info`` lacks ``recipe`` or ``labels``.
    """
    missing = [k for k in ("recipe", "labels") if k not in info]
    if missing:
        raise KeyError(f"model.json needs {missing}")
    out_dir = Path(out_dir)
    ckpt = out_dir / CHECKPOINT_NAME
    torch.save(model.state_dict(), ckpt)
    (out_dir / INFO_NAME).write_text(json.dumps(info, indent=2, sort_keys=True), encoding="utf-8")
    np.save(out_dir / PARITY_NAME, windows, allow_pickle=False)
    return ckpt
