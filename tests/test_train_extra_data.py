"""A site's own recordings (generic .npz) join the training set through the recipe's `datasets:`."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from engines.datasets.generic import save_npz  # noqa: E402
from engines.datasets.sbu import load_sbu  # noqa: E402
from engines.sarde.datasets import load_datasets  # noqa: E402
from engines.sarde.train import mixture_datasets  # noqa: E402

LABELS = ["fighting", "hugging", "normal"]


def test_npz_dataset_joins_training_with_its_weight(tmp_path, shared_dir):
    data = shared_dir / "data"
    own = load_sbu(data, sets=["s01s02"])[:3]
    npz = save_npz(tmp_path / "site.npz", own)
    recipe = {"labels": LABELS, "datasets": [
        {"name": "sbu", "reader": "sbu", "label_map": {"kicking": "fighting", "punching": "fighting"},
         "test": {"sbu_fold": 1}},
    ]}
    base, _ = mixture_datasets(recipe, load_datasets(recipe, data), LABELS, seed=0)
    recipe["datasets"].append({"name": "site", "reader": "npz", "files": [str(npz)], "repeat": 4,
                               "label_map": {"*": "normal"}})
    parts = load_datasets(recipe, data)
    assert [s.label for s in parts[1].train] == ["normal"] * 3 and parts[1].test == []
    train, tests = mixture_datasets(recipe, parts, LABELS, seed=0)
    assert len(train) == len(base) + 4 * len(own) and list(tests) == ["sbu"]
    item = train[len(train) - 1]
    assert tuple(item["window"].shape) == (3, 150, 18, 2) and int(item["label"]) == LABELS.index("normal")
