"""A site's own recordings (generic .npz) join the training set through the recipe."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from engines.datasets.generic import save_npz  # noqa: E402
from engines.datasets.sbu import load_sbu  # noqa: E402
from engines.sarde.train import _datasets, load_recipe, split_data  # noqa: E402
from engines.sarde.zoo import DEFAULT_RECIPE  # noqa: E402


def test_extra_npz_joins_training(tmp_path, shared_dir):
    data = shared_dir / "data"
    own = load_sbu(data, sets=["s01s02"])[:3]
    npz = save_npz(tmp_path / "site.npz", own)
    recipe = load_recipe(DEFAULT_RECIPE)
    labels = recipe["labels"]
    base_train, _ = _datasets(recipe, split_data(recipe, data), labels, seed=0)
    recipe["data"]["extra_train_npz"] = [str(npz)]
    splits = split_data(recipe, data)
    assert [s.label for s in splits["extra_train"]] == [s.label for s in own]
    train, _ = _datasets(recipe, splits, labels, seed=0)
    assert len(train) == len(base_train) + len(own)
    item = train[len(train) - 1]
    assert tuple(item["window"].shape) == (3, 150, 18, 2) and int(item["label"]) == labels.index(own[-1].label)
