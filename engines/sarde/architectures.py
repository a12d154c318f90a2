"""Build the fused graph a recipe's ``model`` section describes: SARDE's, or a seed model's back end.

``model.recognizer`` picks the recogniser back end behind the depth front end
(:class:`engines.sarde.models.SardeNet`):

=============== ========================================================= ===========================
key             back end                                                  source
=============== ========================================================= ===========================
``stgcn``       ST-GCN (the default; SARDE Sec. 3.2)                      ``engines.sarde.models``
``posec3d``     pseudo-heatmap volumes + slim SlowOnly 3D-CNN             seed 002, ``engines.seeds.posec3d``
``pham``        Enhanced-SPMF colour image + small CNN                    seed 001, ``engines.seeds.pham``
``tarm``        per-coordinate BiGRU + residual attention + ResNet-18 CNN seed 004, ``engines.seeds.tarm``
``deepactsnet`` Deep Action Stamps: CNN + graph net per modality          seed 003, ``engines.seeds.deepactsnet``
=============== ========================================================= ===========================

``model.head`` holds the back end's own settings (its constructor's keyword arguments).
``model.depth_net`` picks the depth front end: ``series`` / ``inception`` (SARDE Sec. 3.1) or
``lifter`` (Pham et al.'s 2D -> 3D network, ``engines.seeds.pham.Lifter``, settings in
``model.lifter``). ``depth_mode`` (``estimated`` / ``none`` / ``oracle``) applies to every back end.
"""
from __future__ import annotations

import importlib

from engines.sarde.models import SardeNet

#: recogniser key -> ``module:class`` of its back end (imported on use: each pulls only its own code).
RECOGNIZERS: dict[str, str] = {
    "posec3d": "engines.seeds.posec3d:PoseC3D",
    "pham": "engines.seeds.pham:SPMFNet",
    "tarm": "engines.seeds.tarm:TARM",
    "deepactsnet": "engines.seeds.deepactsnet:DeepActsNet",
}
#: depth-net key -> ``module:class`` of a depth front end other than SARDE's own.
DEPTH_NETS: dict[str, str] = {"lifter": "engines.seeds.pham:Lifter"}

_SARDE_KEYS = {"depth_width", "depth_channels", "skip", "blocks", "dropout", "use_score", "num_persons",
               "depth_net", "inception_blocks", "depth_mode", "depth_input", "recognizer_input"}
KNOWN_KEYS = frozenset(_SARDE_KEYS | {"recognizer", "head", "lifter"})


def _load(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def build_model(config: dict, num_classes: int) -> SardeNet:
    """Build :class:`SardeNet` from a recipe's ``model`` section (keys: :data:`KNOWN_KEYS`).

    Raises:
        ValueError: on an unknown key, recogniser or depth net, or a value a module rejects
            (``TypeError`` of an unknown ``head`` / ``lifter`` setting is reported as ``ValueError``).
    """
    unknown = set(config) - KNOWN_KEYS
    if unknown:
        raise ValueError(f"unknown model settings: {sorted(unknown)}")
    kwargs = {k: v for k, v in config.items() if k in _SARDE_KEYS}
    if "blocks" in kwargs:
        kwargs["blocks"] = tuple(tuple(int(v) for v in b) for b in kwargs["blocks"])
    if "depth_channels" in kwargs:
        kwargs["depth_channels"] = tuple(int(c) for c in kwargs["depth_channels"])
    arch = str(config.get("recognizer", "stgcn"))
    head = dict(config.get("head") or {})
    if arch != "stgcn":
        if arch not in RECOGNIZERS:
            raise ValueError(f"unknown recognizer {arch!r}; known: stgcn, {', '.join(sorted(RECOGNIZERS))}")
        cls = _load(RECOGNIZERS[arch])
        _check_kwargs(cls, head, f"model.head ({arch})")
        kwargs["recognizer"] = lambda c, k, m, names: cls(c, k, m, names, **head)
    elif head:
        raise ValueError("model.head applies to a seed recognizer; ST-GCN is set by model.blocks / dropout")
    depth_net = str(config.get("depth_net", "series"))
    if depth_net in DEPTH_NETS:
        lifter_cls, settings = _load(DEPTH_NETS[depth_net]), dict(config.get("lifter") or {})
        _check_kwargs(lifter_cls, settings, "model.lifter")
        kwargs["depth_factory"] = lambda: lifter_cls(**settings)
        kwargs.pop("depth_net")
    elif config.get("lifter"):
        raise ValueError("model.lifter applies to depth_net: lifter")
    return SardeNet(num_classes, **kwargs)


def _check_kwargs(cls, settings: dict, where: str) -> None:
    import inspect

    params = inspect.signature(cls).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    bad = set(settings) - set(params)
    if bad:
        raise ValueError(f"{where}: unknown setting(s) {sorted(bad)}; allowed: {sorted(set(params) - {'in_channels', 'num_classes', 'num_persons', 'channels'})}")
