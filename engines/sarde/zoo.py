"""The daemon's default recogniser: trained and exported on first use, cached by recipe hash.

``ensure_default_model`` returns the manifest of ``artifact_dir/sarde/<recipe-hash>/sarde.json``;
when it is missing it trains (``engines.sarde.train``, about 8 minutes on 2 CPU cores) and exports
(``export.sarde``) under an exclusive lock file, so two processes never train at once and the
second one reuses the first one's result. torch is imported only when training is needed.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

from engines.sarde.recipes import load_recipe
from export.sarde import MANIFEST_NAME

log = logging.getLogger(__name__)


def recipe_hash(recipe: dict) -> str:
    """12 hex digits of the sha256 of the recipe as canonical JSON (sorted keys).

    Dataset ``files`` count by their last two path parts only: a daemon recording is
    ``<recording key>/<clip sha>.<label tag>.npz`` (``pipeline.recordings``), content-addressed, so the
    same data in another checkout gives the same hash, and recordings made with other detector,
    decoder or tracker settings (another recording key, same clip names) give another model."""
    plain = json.loads(json.dumps(recipe))
    for entry in plain.get("datasets") or []:
        if isinstance(entry, dict) and "files" in entry:
            entry["files"] = ["/".join(Path(f).parts[-2:]) for f in entry["files"]]
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def ensure_default_model(artifact_dir: Path, data_dir: Path, recipe_path: Path | None = None,
                         progress: bool = True) -> Path:
    """:func:`ensure_model` of the YAML recipe at ``recipe_path`` (default
    :data:`engines.sarde.recipes.DEFAULT_RECIPE`)."""
    return ensure_model(load_recipe(recipe_path), artifact_dir, data_dir, progress)


def ensure_model(recipe: dict, artifact_dir: Path, data_dir: Path, progress: bool = True) -> Path:
    """Path of the exported SARDE manifest of ``recipe``, training and exporting it first if needed.

    The one entry point the daemon layer uses to get a model: ``recipe`` is fully resolved (its
    datasets read by ``engines.sarde.datasets``: built-in readers or generic ``.npz`` files).

    Args:
        recipe: the training recipe (``configs/models/*.yaml``, with any recordings resolved).
        artifact_dir: cache root; the model lives in ``artifact_dir/sarde/<recipe-hash>/``.
        data_dir: data root of the built-in dataset readers.
        progress: tqdm bars while training.

    Returns:
        The manifest path (``.../sarde.json``, beside ``sarde.onnx``).

    Raises:
        FileNotFoundError: when training is needed and a dataset is missing.
        engines.sarde.datasets.RecipeError: an invalid recipe.
    """
    key = recipe_hash(recipe)
    model_dir = Path(artifact_dir) / "sarde" / key
    manifest = model_dir / MANIFEST_NAME
    if manifest.is_file():
        return manifest
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    lock_path = model_dir.parent / f"{key}.lock"
    with open(lock_path, "w") as lock:
        t0 = time.perf_counter()
        fcntl.flock(lock, fcntl.LOCK_EX)  # blocks while another process trains this recipe
        waited = time.perf_counter() - t0
        if manifest.is_file():
            log.info("SARDE model %s was built by another process (waited %.0f s)", key, waited)
            return manifest
        from engines.sarde.train import train  # torch from here on
        from export.sarde import export_sarde

        log.warning("training SARDE model %s (recipe %s); this takes a few minutes once", key, recipe.get("name"))
        train_dir = model_dir / "train"
        if train_dir.exists():
            shutil.rmtree(train_dir)  # a half-finished earlier run
        ckpt = train(recipe, Path(data_dir), train_dir, seed=int(recipe.get("seed", 0)), progress=progress)
        out = export_sarde(ckpt, model_dir)
        (model_dir / "recipe.json").write_text(json.dumps(recipe, indent=2, sort_keys=True), encoding="utf-8")
        return out
