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


@pytest.mark.parametrize("section, key", [
    (None, "dataset"), ("train", "epoch"), ("window", "mask"), ("pretrain_depth", "epoch"), ("events", "alert"),
    ("model", "depth_widht"), ("augment", "mirrror"),
])
def test_recipe_typo_in_every_section_rejected(section, key):
    """``train: {epoch: 60}`` (or a typo anywhere else) is a one-line RecipeError naming the key."""
    import json

    import yaml

    from engines.sarde.datasets import RecipeError
    from engines.sarde.recipes import DEFAULT_RECIPE, check_recipe_keys

    recipe = yaml.safe_load(DEFAULT_RECIPE.read_text())
    check_recipe_keys(recipe)
    bad = json.loads(json.dumps(recipe))
    (bad if section is None else bad.setdefault(section, {}))[key] = 1
    with pytest.raises(RecipeError, match=key) as err:
        check_recipe_keys(bad)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("entry, key", [
    ({"repaet": 2}, "repaet"), ({"test": {"subject": [1]}}, "subject"), ({"reader": "nzp"}, "nzp"),
])
def test_dataset_entry_typo_rejected_before_training(tmp_path, entry, key):
    from engines.sarde.datasets import RecipeError
    from engines.sarde.train import train

    recipe = {"labels": LABELS, "background": "normal",
              "datasets": [{"name": "site", "reader": "npz", "files": [], **entry}]}
    with pytest.raises(RecipeError, match=key):
        train(recipe, tmp_path, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "model.pt").exists()


def test_recipe_check_leaves_the_seeded_rng_alone():
    """check_recipe_keys builds the model to check its section; the numbers of a seeded run stay the same."""
    from engines.sarde.recipes import check_recipe_keys, load_recipe

    recipe = load_recipe()
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    check_recipe_keys(recipe)
    torch.testing.assert_close(torch.rand(4), expected, rtol=0, atol=0)
