"""Grouped splits: cross-validation folds that never put one group (subject, source video) on both sides."""
from __future__ import annotations

from typing import Iterable


def group_folds(groups: Iterable[str], k: int) -> list[list[str]]:
    """``k`` folds of the distinct ``groups`` (one entry per item: a clip's source video, a sequence's
    subject), balanced by item count: the largest group goes first to the fold with the fewest items
    (ties by fold index; groups of equal size by name). Deterministic; no group is split across folds.

    Returns:
        ``k`` lists of group names.

    Raises:
        ValueError: ``k < 2`` or fewer distinct groups than folds.
    """
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[str(g)] = sizes.get(str(g), 0) + 1
    if k < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {k}")
    if len(sizes) < k:
        raise ValueError(f"{len(sizes)} groups cannot make {k} folds")
    folds: list[list[str]] = [[] for _ in range(k)]
    counts = [0] * k
    for g in sorted(sizes, key=lambda g: (-sizes[g], g)):
        i = min(range(k), key=lambda j: (counts[j], j))
        folds[i].append(g)
        counts[i] += sizes[g]
    return folds
