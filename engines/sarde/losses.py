"""SARDE training losses (Sec. 3.3, Eqs. 3-6).

* :func:`scale_invariant_depth_loss`: Eqs. 4-5, the scale-invariant MSE of Eigen et al. (2014) in
  the log10 domain, over the joints that have ground truth, per sample.
* :func:`recognition_loss`: Eq. 6 (garbled in print) read as standard cross-entropy.
* :func:`mse_depth_loss`: plain MSE in metres, the ablation baseline of Table 3 ("SI vs MSE").
* :func:`huber_depth_loss`: Huber in metres, Pham et al.'s lifter loss (seed 001).
* :func:`multitask_loss`: Eq. 3, ``L = α L_I + (1 - α) L_II``, each term averaged over the samples
  that carry its supervision (depth ground truth / a class label).
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

ALPHA: float = 0.97  # Sec. 4.2
LAMBDA: float = 0.5  # Sec. 4.2


def scale_invariant_depth_loss(pred: torch.Tensor, target: torch.Tensor, lam: float = LAMBDA,
                               eps: float = 1e-6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample scale-invariant log-depth loss (Eqs. 4-5).

    ``R(i) = lg D_pre(i) - lg D_target(i)`` over the joints ``i`` with ground truth (target > 0),
    ``L_I = (1/n) Σ R(i)^2 - (λ / n^2) (Σ R(i))^2`` with ``n`` the number of such joints in the
    sample. With ``λ = 1`` it is invariant to a global scale of the prediction.

    Args:
        pred: ``(N, ...)`` predicted depth in metres, > 0 where the target is known.
        target: ``(N, ...)`` ground-truth depth in metres; ``<= 0`` marks unknown joints.
        lam: λ of Eq. 4.

    Returns:
        ``(loss (N,), has_gt (N,) bool)``; ``loss`` is 0 for samples without ground truth.
    """
    n = pred.shape[0]
    pred = pred.reshape(n, -1)
    target = target.reshape(n, -1)
    valid = target > 0
    r = torch.where(valid, torch.log10(pred.clamp(min=eps)) - torch.log10(target.clamp(min=eps)), 0.0)
    count = valid.sum(dim=1)
    denom = count.clamp(min=1).to(pred.dtype)
    loss = (r ** 2).sum(dim=1) / denom - lam * r.sum(dim=1) ** 2 / denom ** 2
    return loss, count > 0


def mse_depth_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample plain mean squared depth error in metres^2 over joints with ground truth (target > 0).

    Args and returns as :func:`scale_invariant_depth_loss`.
    """
    n = pred.shape[0]
    pred = pred.reshape(n, -1)
    target = target.reshape(n, -1)
    valid = target > 0
    sq = torch.where(valid, (pred - target) ** 2, 0.0)
    count = valid.sum(dim=1)
    return sq.sum(dim=1) / count.clamp(min=1).to(pred.dtype), count > 0


def huber_depth_loss(pred: torch.Tensor, target: torch.Tensor, delta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample Huber (smooth-L1) depth error over joints with ground truth (target > 0): the
    loss of Pham et al.'s lifting network (seed 001, Sec. 3.1). ``delta`` is in metres (quadratic
    below it, linear above).

    Args and returns as :func:`scale_invariant_depth_loss`.
    """
    n = pred.shape[0]
    pred = pred.reshape(n, -1)
    target = target.reshape(n, -1)
    valid = target > 0
    err = F.huber_loss(pred, torch.where(valid, target, pred.detach()), reduction="none", delta=delta)
    count = valid.sum(dim=1)
    return torch.where(valid, err, 0.0).sum(dim=1) / count.clamp(min=1).to(pred.dtype), count > 0


#: Depth losses by recipe name (``train.depth_loss``).
DEPTH_LOSSES = {"scale_invariant": scale_invariant_depth_loss, "mse": lambda p, t, lam=LAMBDA: mse_depth_loss(p, t),
                "huber": lambda p, t, lam=LAMBDA: huber_depth_loss(p, t)}


def recognition_loss(logits: torch.Tensor, labels: torch.Tensor,
                     class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample cross-entropy (Eqs. 6-7 as standard CE on softmax scores).

    Args:
        logits: ``(N, K)``. labels: ``(N,)`` int64 class index, ``-1`` = no label.
        class_weights: optional ``(K,)`` weight of each class' samples (class balancing).

    Returns:
        ``(loss (N,), has_label (N,) bool)``; 0 for unlabelled samples.
    """
    has = labels >= 0
    loss = F.cross_entropy(logits, labels.clamp(min=0), reduction="none")
    if class_weights is not None:
        loss = loss * class_weights.to(loss.dtype)[labels.clamp(min=0)]
    return torch.where(has, loss, 0.0), has


def multitask_loss(logits: torch.Tensor, depth: torch.Tensor, labels: torch.Tensor, depth_target: torch.Tensor,
                   alpha: float = ALPHA, lam: float = LAMBDA, depth_loss: str = "scale_invariant",
                   class_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """Eq. 3: ``L = α L_I + (1 - α) L_II``.

    ``depth_loss`` picks ``L_I``: ``"scale_invariant"`` (Eqs. 4-5) or ``"mse"`` (ablation).

    ``L_I`` is the mean of :func:`scale_invariant_depth_loss` over samples with depth ground truth,
    ``L_II`` the mean cross-entropy over labelled samples; a term with no sample in the batch is 0.

    Args:
        logits: ``(N, K)``; depth, depth_target: ``(N, T, V, M)`` metres (target 0 = unknown);
        labels: ``(N,)`` int64, ``-1`` = unlabelled.
        class_weights: optional ``(K,)`` per-class weights of ``L_II`` (see :func:`recognition_loss`).

    Returns:
        ``(loss scalar tensor, {"L_I": float, "L_II": float})``.
    """
    if depth_loss not in DEPTH_LOSSES:
        raise ValueError(f"depth_loss must be one of {sorted(DEPTH_LOSSES)}, got {depth_loss!r}")
    l1, has_gt = DEPTH_LOSSES[depth_loss](depth, depth_target, lam)
    l2, has_label = recognition_loss(logits, labels, class_weights)
    loss_i = l1.sum() / has_gt.sum().clamp(min=1)
    loss_ii = l2.sum() / has_label.sum().clamp(min=1)
    total = alpha * loss_i + (1.0 - alpha) * loss_ii
    return total, {"L_I": float(loss_i.detach()), "L_II": float(loss_ii.detach())}
