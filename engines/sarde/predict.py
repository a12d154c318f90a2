"""The one evaluation loop: a trained SARDE model over a dataset of windows, in eval mode.

Used for every held-out number: the per-dataset metrics in ``model.json`` (``engines.sarde.train``)
and the centred and daemon-window metrics of ``sarde eval`` (``engines.sarde.evaluate``); the
metrics themselves are computed from its output by :mod:`engines.sarde.metrics`.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from engines.sarde.data import collate
from engines.sarde.metrics import depth_errors


@torch.no_grad()
def predict(model, dataset, batch_size: int = 32) -> dict:
    """Run ``model`` (:class:`engines.sarde.models.SardeNet`, on the CPU) over ``dataset`` in order.

    Windows are cut to their skeletons at the recogniser's temporal stride (``engines.sarde.data.collate``:
    the same logits as the full window); ``depth_mode: oracle`` models receive the ground-truth depth.

    Args:
        dataset: items ``{"window": (3, T, V, M), "depth": (T, V, M) metres, "label": int64,
            "span": (2,)}`` (``engines.sarde.data.WindowDataset``, ``engines.sarde.protocols.DaemonWindows``).

    Returns:
        ``{"scores": (N, K) float32 probabilities, "labels": (N,) int64, "depth": [abs, root_rel,
        abs_rel] (:func:`engines.sarde.metrics.depth_errors` of every batch, concatenated 1-D
        float32 arrays, metres / ratio) or None where no joint has both a predicted and a true depth}``.
    """
    model.eval()
    stride = model.recognizer.time_stride
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                        collate_fn=lambda b: collate(b, crop_stride=stride))
    scores, labels, errs = [], [], [[], [], []]
    for batch in loader:
        s, depth = model(batch["window"], batch["depth"] if model.depth_mode == "oracle" else None)
        scores.append(s.numpy())
        labels.append(batch["label"].numpy())
        e = depth_errors(depth, batch["depth"])
        if e is not None:
            for acc, x in zip(errs, e):
                acc.append(x.numpy())
    return {"scores": np.concatenate(scores), "labels": np.concatenate(labels),
            "depth": [np.concatenate(e) for e in errs] if errs[0] else None}
