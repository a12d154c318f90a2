"""The default recogniser: built on first use from daemon recordings, and resolved before start-up.

``recognizer.model: default`` names the model of ``configs/models/sarde-default.yaml``. Building it
records the recipe's training clips with the daemon in record-only mode (``pipeline.recordings``),
then calls the training layer's one entry point (``engines.sarde.zoo.ensure_model``), which trains and
exports it (cached by recipe hash under ``paths.artifact_dir``). This module sits above the daemon:
the daemon only ever loads manifest paths (:func:`pipeline.assets.recognizer_manifest`).
"""
from __future__ import annotations

from pathlib import Path

from pipeline.assets import StartupError
from pipeline.config import Config


def resolve_models(cfg: Config, progress: bool = True) -> Config:
    """``cfg`` with ``recognizer.model: default`` replaced by the default model's manifest path
    (building it on first use); any other value is returned unchanged.

    Raises:
        StartupError: as :func:`default_model`.
    """
    if cfg.recognizer.model != "default":
        return cfg
    manifest = default_model(cfg, progress=progress)
    return cfg.model_copy(update={"recognizer": cfg.recognizer.model_copy(update={"model": str(manifest)})})


def recording_config(cfg: Config) -> Config:
    """The config the default model's training clips are recorded with: the package's default
    detector, decoder, tracking and window settings, with ``cfg``'s paths. A deployment that changes
    its own ``stride`` or thresholds therefore reuses the same default model instead of re-recording
    and retraining it; a model for other settings is trained with ``sarde train``.

    Raises:
        ConfigError: the package's default config is invalid.
    """
    from pipeline.config import DEFAULT_CONFIG_PATH, load_config

    return load_config(DEFAULT_CONFIG_PATH, {"paths": cfg.paths.model_dump(mode="json")})


def default_model(cfg: Config, progress: bool = True, exclude_groups: dict[str, list[str]] | None = None,
                  recipe_path: Path | None = None) -> Path:
    """Manifest of the default recogniser (``configs/models/sarde-default.yaml``), built on first use:
    the daemon records the recipe's training clips (``pipeline.recordings``, with
    :func:`recording_config`), then the training layer's one entry point
    (``engines.sarde.zoo.ensure_model``) trains and exports it.

    Args:
        exclude_groups: CV groups left out per recordings dataset (``sarde eval video --folds``).
        recipe_path: another recipe in the same format.

    Raises:
        StartupError: torch missing, training data missing, or an invalid recipe.
    """
    try:
        from engines.sarde.datasets import RecipeError
        from engines.sarde.recipes import load_recipe
        from engines.sarde.zoo import ensure_model
    except ImportError as exc:
        raise StartupError(f"the default recogniser is trained on first use and needs the train extra ({exc.name} missing): "
                           "pip install -e '.[train,export]'") from exc
    from pipeline.recordings import resolve_recipe

    try:
        recipe = resolve_recipe(recording_config(cfg), load_recipe(recipe_path), progress, exclude_groups)
        return ensure_model(recipe, cfg.paths.artifact_dir, cfg.paths.data_dir, progress=progress)
    except (FileNotFoundError, RecipeError, ValueError) as exc:
        raise StartupError(f"cannot build the default recogniser: {exc}") from exc
