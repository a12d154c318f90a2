"""Held-out metrics of a SARDE model, from the output of :func:`engines.sarde.predict.predict`.

* :func:`classification_metrics`: top-1, top-5, per-class accuracy and the confusion matrix
  (``sarde eval``, SARDE Tables 3-4);
* :func:`heldout_metrics`: what ``model.json`` of a daemon model records per held-out dataset:
  top-1, top-1 among the non-background classes, how often the background class wins, how many
  windows would raise an event, per-class recall;
* :func:`depth_errors` / :func:`depth_summary`: depth error per joint and its means (mm, abs-rel).
"""
from __future__ import annotations

import numpy as np

#: The k of top-k accuracy.
TOP_K = 5
#: COCO-18 neck: the root of root-relative depth errors.
ROOT_JOINT = 1
#: Probability from which a non-background argmax counts as a would-be event.
CONFIDENT = 0.5


def depth_errors(depth, gt):
    """Per-joint depth errors where both prediction and ground truth exist.

    Args:
        depth, gt: ``(N, T, V, M)`` float torch tensors, metres (0 = missing / unknown).

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


def depth_summary(errors: list[np.ndarray] | None) -> dict:
    """``{"depth_abs_mm", "depth_rootrel_mm", "depth_absrel"}``: the means of the ``(abs, root_rel,
    abs_rel)`` float32 arrays of :func:`depth_errors` (metres -> mm; ratio); ``{}`` for None."""
    if errors is None:
        return {}
    abs_e, rel_e, absrel = errors
    return {"depth_abs_mm": 1000 * float(abs_e.mean()), "depth_rootrel_mm": 1000 * float(rel_e.mean()),
            "depth_absrel": float(absrel.mean())}


def classification_metrics(scores: np.ndarray, labels: np.ndarray, class_names: list[str]) -> dict:
    """top-1, top-5, per-class accuracy and the confusion matrix (rows = true class, columns = predicted).

    Args:
        scores: ``(N, K)`` float probabilities; labels: ``(N,)`` int class index (``-1`` rows are ignored);
        class_names: ``K`` names.

    Returns:
        ``{"n": labelled rows, "top1", "top5": fractions (None without a labelled row),
        "per_class": {name: accuracy or None}, "confusion": (K, K) nested int lists}``.
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


def heldout_metrics(scores: np.ndarray, labels: np.ndarray, class_names: list[str], background: str) -> dict:
    """The held-out metrics ``model.json`` records for one dataset.

    Args:
        scores: ``(N, K)`` float probabilities; labels: ``(N,)`` int class index (``-1`` = no label);
        class_names: ``K`` names; background: the class that never raises an alert (``other`` or ``normal``).

    Returns:
        ``n`` (windows), ``top1`` (over windows with a label, argmax over all K classes),
        ``top1_known`` (argmax over the classes other than ``background``), ``predicted_other``
        (fraction of windows whose argmax is the background class; None without one),
        ``confident_interaction`` (fraction of windows whose argmax is not the background class with
        probability >= :data:`CONFIDENT`: would-be events), ``per_class`` (``{name: {"n", "recall"}}``
        for the classes with a labelled window).
    """
    m = classification_metrics(scores, labels, class_names)
    conf = np.asarray(m["confusion"], np.int64).reshape(len(class_names), len(class_names))
    has = labels >= 0
    known = np.array([i for i, name in enumerate(class_names) if name != background], np.int64)
    other = class_names.index(background) if background in class_names else -1
    pred = scores.argmax(1)
    known_pred = known[scores[:, known].argmax(1)]
    count = len(pred)
    return {"n": count, "top1": m["top1"],
            "top1_known": int((known_pred[has] == labels[has]).sum()) / m["n"] if m["n"] else None,
            "predicted_other": int((pred == other).sum()) / count if count and other >= 0 else None,
            "confident_interaction": (int(((pred != other) & (scores.max(1) >= CONFIDENT)).sum()) / count
                                      if count else None),
            "per_class": {name: {"n": int(conf[k].sum()), "recall": float(conf[k, k] / conf[k].sum())}
                          for k, name in enumerate(class_names) if conf[k].sum()}}
