"""ONNX -> TensorRT engine, cached and keyed by everything that makes an engine valid.

A serialized TensorRT engine is only valid for the ONNX graph, TensorRT version, GPU model and
compute capability, precision and optimisation-profile shapes it was built with. The cache file
name is the sha256 of those fields (:func:`engine_cache_key`), so a change of any of them builds a
new engine; ``<key>.json`` beside ``<key>.engine`` records them. A timing cache
(``timing.cache``, shared by all builds in the folder) makes rebuilds fast.

Precisions: ``fp32``, ``fp16`` (default). INT8 is not built here: an INT8 model is used only behind
an accuracy gate against FP32 on real data, and that gate is not written for TensorRT yet (it needs a
GPU to test); see issue 10.

This module is part of the runtime layer (like onnxruntime's TensorRT provider, it turns an ONNX
graph into an engine on the machine that runs it); :class:`engines.trt.TrtModel` runs the engine.

``tensorrt`` is imported lazily (the ``tensorrt`` extra, NVIDIA GPUs only); without it every
builder function raises :class:`TensorRTUnavailable` with the install command. The key logic and
profile helpers are pure Python and run anywhere.

GPU status: this module was written without a GPU lent to its task; the TensorRT 10 calls follow
the documented Python API (``create_network(0)`` is explicit-batch, ``build_serialized_network``,
``set_input_shape`` / ``set_tensor_address`` / ``execute_async_v3``) and
are exercised by ``tests/test_tensorrt.py`` where TensorRT is installed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence


from engines.manifest import atomic_write_bytes, sha256_file
from engines.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["TensorRTUnavailable", "EngineSpec", "engine_cache_key", "gpu_identity", "import_tensorrt",
           "build_engine", "batch_profile", "PRECISIONS"]

PRECISIONS = ("fp32", "fp16")

Profiles = Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]]


class TensorRTUnavailable(UserError, ImportError):
    """TensorRT (Python package ``tensorrt``) or a CUDA GPU is not available."""


def import_tensorrt():
    """Import ``tensorrt`` or raise :class:`TensorRTUnavailable` with the fix."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(
            "TensorRT is not installed: on a machine with an NVIDIA GPU run "
            "`pip install 'sarde[tensorrt]'` (tensorrt>=10), or use the onnxruntime backend") from exc
    return trt


def gpu_identity() -> tuple[str, str]:
    """``(GPU name, compute capability "major.minor")`` of CUDA device 0.

    Raises:
        TensorRTUnavailable: no CUDA device visible (torch with CUDA is used to ask).
    """
    try:
        import torch
    except ImportError as exc:
        raise TensorRTUnavailable("torch with CUDA is needed to query the GPU and hold TensorRT buffers") from exc
    if not torch.cuda.is_available():
        raise TensorRTUnavailable("no CUDA GPU visible (torch.cuda.is_available() is False)")
    major, minor = torch.cuda.get_device_capability(0)
    return torch.cuda.get_device_name(0), f"{major}.{minor}"


def batch_profile(shape: Sequence[int | str], batches: tuple[int, int, int] = (1, 8, 32)) -> tuple[list[int], list[int], list[int]]:
    """``(min, opt, max)`` shapes for an input whose first axis is the dynamic batch.

    Args:
        shape: declared input shape, e.g. ``["N", 3, 150, 18, 2]``; every axis but the first must be
            a positive integer.
        batches: batch sizes for min, opt and max.

    Raises:
        ValueError: a non-batch axis is symbolic, or ``batches`` is not ``min <= opt <= max``.
    """
    rest = list(shape[1:])
    if not all(isinstance(d, int) and d > 0 for d in rest):
        raise ValueError(f"only the batch axis may be dynamic, got shape {list(shape)}")
    lo, opt, hi = (int(b) for b in batches)
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"batch profile must satisfy 1 <= min <= opt <= max, got {batches}")
    return [lo, *rest], [opt, *rest], [hi, *rest]


@dataclass(frozen=True)
class EngineSpec:
    """Everything that makes a serialized engine valid; hashed into the cache key."""

    onnx_sha256: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    profiles: dict = field(default_factory=dict)  # {input: [min, opt, max]} shapes as lists

    def key(self) -> str:
        """Hex sha256 (first 20 characters) of the canonical JSON of the fields."""
        return engine_cache_key(self)


def engine_cache_key(spec: EngineSpec) -> str:
    """Cache key of an engine: sha256 of the canonical JSON of ``spec`` (sorted keys, shapes as int lists).

    Raises:
        ValueError: unknown precision.
    """
    if spec.precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {spec.precision!r}")
    record = asdict(spec)
    record["profiles"] = {name: [[int(d) for d in s] for s in shapes] for name, shapes in sorted(spec.profiles.items())}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def build_engine(onnx_path: str | Path, cache_dir: str | Path, precision: str = "fp16", profiles: Profiles | None = None,
                 workspace_mib: int = 2048,
                 force: bool = False) -> tuple[Path, dict]:
    """Build (or reuse from the cache) a TensorRT engine for an ONNX graph.

    Args:
        onnx_path: the ONNX file (float32 graph; TensorRT chooses FP16 kernels itself).
        cache_dir: folder of ``<key>.engine`` + ``<key>.json`` and ``timing.cache``.
        precision: ``fp32`` or ``fp16``.
        profiles: ``{input: (min, opt, max) shapes}`` for dynamic axes (:func:`batch_profile`);
            default: the declared shapes, with a dynamic batch axis mapped to (1, 8, 32).
        workspace_mib: builder workspace memory pool limit.
        force: rebuild even when the cache holds an engine with the same key.

    Returns:
        ``(engine path, record)``; ``record`` holds the :class:`EngineSpec` fields, key, build
        seconds and whether it came from the cache.

    Raises:
        TensorRTUnavailable: tensorrt or a CUDA GPU missing.
        RuntimeError: parsing or building failed (TensorRT's messages included).
        ValueError: bad precision.
    """
    trt = import_tensorrt()
    onnx_path, cache_dir = Path(onnx_path), Path(cache_dir)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    gpu, cc = gpu_identity()
    if profiles is None:
        profiles = _default_profiles(onnx_path)
    spec = EngineSpec(sha256_file(onnx_path), trt.__version__, gpu, cc, precision,
                      {k: [list(map(int, s)) for s in v] for k, v in profiles.items()})
    key = spec.key()
    engine_path, meta_path = cache_dir / f"{key}.engine", cache_dir / f"{key}.json"
    if engine_path.is_file() and meta_path.is_file() and not force:
        log.info("TensorRT engine cache hit %s (%s, %s)", engine_path.name, precision, gpu)
        return engine_path, {**json.loads(meta_path.read_text()), "from_cache": True}

    cache_dir.mkdir(parents=True, exist_ok=True)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mib) << 20)
    timing_path = cache_dir / "timing.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profiles.items():
        profile.set_shape(name, tuple(lo), tuple(opt), tuple(hi))
    config.add_optimization_profile(profile)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine for {onnx_path} ({precision}); see the log above")
    seconds = time.perf_counter() - t0
    atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    atomic_write_bytes(engine_path, bytes(serialized))
    record = {**asdict(spec), "key": key, "engine": engine_path.name, "build_seconds": round(seconds, 1),
              "onnx": str(onnx_path)}
    atomic_write_bytes(meta_path, (json.dumps(record, sort_keys=True, indent=2) + "\n").encode())
    log.info("built TensorRT engine %s (%s) in %.1f s", engine_path.name, precision, seconds)
    return engine_path, {**record, "from_cache": False}


def _default_profiles(onnx_path: Path) -> dict:
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    init = {i.name for i in model.graph.initializer}
    out = {}
    for value in model.graph.input:
        if value.name in init:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value.type.tensor_type.shape.dim]
        if isinstance(dims[0], int) and all(isinstance(d, int) for d in dims):
            out[value.name] = (dims, dims, dims)
        else:
            out[value.name] = batch_profile(dims)
    return out
