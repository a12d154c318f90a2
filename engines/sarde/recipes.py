"""Training recipes: read, compose and validate them (shared by ``sarde train`` and ``sarde eval``).

Two kinds of recipe, one schema each (:data:`SCHEMAS`), both checked by :func:`check_recipe_keys`
before anything is trained, so a typo (``train: {epoch: 60}``) is an error, never the default:

* ``datasets``: a daemon model (``configs/models/*.yaml``, :func:`engines.sarde.train.train`): the
  recipe lists its labels and the datasets it learns from (``engines.sarde.datasets``);
* ``experiment``: one protocol run of ``sarde eval`` (:func:`build_recipe`): the protocol's recipe
  ``configs/experiments/<dataset>.yaml`` merged with a variant of ``variants.yaml`` (SARDE Tables
  3-4) and, for smoke runs, ``quick.yaml``; the protocol gives the labels and the split.

Sections shared by both: ``window`` (the daemon's ``T``, ``M``, fps), ``model``
(:func:`engines.sarde.models.build_model`), ``pretrain_depth`` and ``train``
(:mod:`engines.sarde.train`), ``augment`` (:class:`engines.sarde.data.Augment`).

torch is imported only by :func:`check_recipe_keys` (the ``model`` and ``augment`` checks), so
:mod:`engines.sarde.zoo` reads recipes without it.
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from engines.sarde.datasets import RecipeError
from engines.sarde.protocols import PROTOCOLS

ROOT = Path(__file__).resolve().parents[2]
#: The daemon's default training recipe (``engines.sarde.zoo``).
DEFAULT_RECIPE: Path = ROOT / "configs" / "models" / "sarde-default.yaml"
#: Folder of the ``sarde eval`` recipes, variants, suites and published numbers.
EXPERIMENTS: Path = ROOT / "configs" / "experiments"
#: Label of the background class when a recipe names none.
OTHER = "other"

_TRAIN_KEYS = frozenset({"epochs", "batch_size", "lr", "weight_decay", "warmup", "alpha", "lambda", "depth_lr_scale",
                         "crop", "depth_loss", "class_balance"})
_PRETRAIN_KEYS = frozenset({"epochs", "batch_frames", "lr"})
#: kind -> (top-level keys, {section: its keys}). ``model`` is checked by ``build_model``, ``augment``
#: by ``Augment``, each ``datasets`` entry by ``engines.sarde.datasets.validate_entry``.
SCHEMAS: dict[str, tuple[frozenset, dict[str, frozenset]]] = {
    "datasets": (
        frozenset({"name", "seed", "labels", "background", "window", "datasets", "model", "pretrain_depth", "train",
                   "augment", "events"}),
        {"window": frozenset({"num_frames", "num_persons", "fps", "mask_joints"}), "pretrain_depth": _PRETRAIN_KEYS,
         "train": _TRAIN_KEYS, "events": frozenset({"alerts"})}),
    "experiment": (
        frozenset({"name", "dataset", "seed", "window", "data", "model", "pretrain_depth", "train", "augment", "quick",
                   "protocol", "variant"}),
        {"window": frozenset({"num_frames", "num_persons", "fps"}), "data": frozenset({"repeat"}),
         "pretrain_depth": _PRETRAIN_KEYS, "train": _TRAIN_KEYS,
         "quick": frozenset({"max_train", "max_test", "max_steps"})}),
}


def load_recipe(recipe: dict | str | Path | None = None) -> dict:
    """A recipe as a dict: ``recipe`` itself when it is one, else the YAML file at that path
    (``None``: :data:`DEFAULT_RECIPE`).

    Raises:
        FileNotFoundError: no such file. ValueError: the file is not a YAML mapping.
    """
    if isinstance(recipe, dict):
        return recipe
    path = Path(recipe) if recipe is not None else DEFAULT_RECIPE
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict):
        raise ValueError(f"recipe {path} is not a mapping")
    return data


def deep_merge(base: dict, override: dict | None) -> dict:
    """A copy of ``base`` with ``override`` merged in (nested dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def window_settings(recipe: dict) -> dict:
    """``{num_frames, num_persons, fps, mask_joints}`` of the recipe's ``window`` (defaults: the
    daemon's ``T = 150``, ``M = 2``, 15 fps, no masked joint): the keyword arguments of
    :class:`engines.sarde.data.WindowDataset`."""
    w = recipe.get("window", {})
    return dict(num_frames=int(w.get("num_frames", 150)), num_persons=int(w.get("num_persons", 2)),
                fps=float(w.get("fps", 15.0)), mask_joints=tuple(w.get("mask_joints", ())))


def check_recipe_keys(recipe: dict, kind: str = "datasets") -> None:
    """Reject unknown keys and invalid values in every section of a recipe of ``kind``
    (``datasets`` | ``experiment``, :data:`SCHEMAS`): top level, ``window``, ``pretrain_depth``,
    ``train``, ``data``, ``quick``, ``events``, ``augment`` (:class:`engines.sarde.data.Augment`) and
    ``model`` (:func:`engines.sarde.models.build_model`, built once with the global torch RNG left as
    it was). A ``datasets`` recipe's background must be one of its labels; its ``datasets`` entries
    are checked when they are read (``engines.sarde.datasets.load_datasets``, before training).

    Raises:
        RecipeError: one line naming the section and the key (or value).
    """
    import torch

    from engines.sarde.data import Augment
    from engines.sarde.architectures import build_model

    top, sections = SCHEMAS[kind]
    unknown = set(recipe) - top
    if unknown:
        raise RecipeError(f"recipe: unknown key(s) {sorted(unknown)}; allowed: {sorted(top)}")
    for section, allowed in sections.items():
        extra = set(recipe.get(section) or {}) - allowed
        if extra:
            raise RecipeError(f"recipe: {section}: unknown key(s) {sorted(extra)}; allowed: {sorted(allowed)}")
    try:
        Augment(**(recipe.get("augment") or {}))
    except TypeError as exc:
        raise RecipeError(f"recipe: augment: {exc}") from exc
    with torch.random.fork_rng(devices=[]):  # building the model must not move the seeded RNG
        try:
            build_model(recipe.get("model") or {}, max(2, len(recipe.get("labels") or ())))
        except (TypeError, ValueError) as exc:
            raise RecipeError(f"recipe: model: {exc}") from exc
    if kind == "datasets" and recipe.get("labels") is not None and str(recipe.get("background", OTHER)) not in recipe["labels"]:
        raise RecipeError(f"recipe: background {recipe.get('background')!r} is not one of labels {recipe['labels']}")


def build_recipe(protocol: str, variant: str, recipe_dir: Path = EXPERIMENTS, quick: bool = False,
                 epochs: int | None = None) -> dict:
    """The checked recipe of one ``sarde eval`` run: ``<dataset>.yaml`` + ``variants.yaml[variant]``
    (+ ``quick.yaml``, + ``train.epochs = epochs``), with ``protocol`` and ``variant`` added.

    Raises:
        KeyError: for an unknown protocol or variant.
        RecipeError: an unknown key in any section of the merged recipe (:func:`check_recipe_keys`).
    """
    if protocol not in PROTOCOLS:
        raise KeyError(f"unknown protocol {protocol!r}; known: {sorted(PROTOCOLS)}")
    variants = load_recipe(recipe_dir / "variants.yaml")
    if variant not in variants:
        raise KeyError(f"unknown variant {variant!r}; known: {sorted(variants)}")
    recipe = deep_merge(load_recipe(recipe_dir / f"{PROTOCOLS[protocol][0]}.yaml"), variants[variant] or {})
    if quick:
        recipe = deep_merge(recipe, load_recipe(recipe_dir / "quick.yaml"))
    if epochs is not None:
        recipe = deep_merge(recipe, {"train": {"epochs": int(epochs)}})
    recipe["protocol"], recipe["variant"] = protocol, variant
    check_recipe_keys(recipe, "experiment")
    return recipe
