"""One small inference interface over onnxruntime and native TensorRT, with fallback.

``onnxruntime-gpu`` runs on CPU-only machines: asking for CUDA or TensorRT there logs a
library-load error and the session falls back to CPU. :class:`OnnxModel` asks for the providers
in the configured order, then logs one line naming the provider really used (TensorRT, CUDA or CPU).

Backends (:data:`BACKENDS`, name -> class, every class with ``run(feeds) -> {name: array}``,
``input_names``, ``output_names``, ``providers`` and ``input_shape(i)``):

* ``onnxruntime``: :class:`OnnxModel`; TensorRT execution-provider options (engine cache and
  timing cache under ``trt_cache_dir``, FP16) come from :func:`provider_options`.
* ``tensorrt``: :class:`engines.trt.TrtModel`, the native TensorRT runner (imported lazily, the
  ``tensorrt`` extra). :func:`open_model` falls back from it to onnxruntime (CUDA, then CPU) when
  TensorRT or a GPU is missing, with one log line saying what is used.
"""
from __future__ import annotations

import ctypes
import functools
import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from engines.errors import UserError
from engines.manifest import sha256_file

log = logging.getLogger(__name__)

#: Short provider names accepted in configs, mapped to onnxruntime's names.
PROVIDERS: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class ModelLoadError(UserError, RuntimeError):
    """A model file is missing, unreadable or not a valid ONNX graph."""


@functools.lru_cache(maxsize=1)
def cuda_driver_present() -> bool:
    """True if the NVIDIA driver library (``libcuda.so.1``) loads, i.e. a GPU may be usable.

    Set ``SARDE_FORCE_CPU=1`` to answer False (tests, benchmarks of the CPU path).
    """
    if os.environ.get("SARDE_FORCE_CPU") == "1":
        return False
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False
    return True


def select_providers(requested: Sequence[str], available: Sequence[str]) -> list[str]:
    """onnxruntime provider names to ask for, best first.

    Args:
        requested: short names (``tensorrt``, ``cuda``, ``cpu``), best first.
        available: ``onnxruntime.get_available_providers()``.

    Returns:
        The requested providers onnxruntime knows, in order, with ``CPUExecutionProvider`` last.

    Raises:
        ValueError: an unknown short name.
    """
    unknown = [p for p in requested if p not in PROVIDERS]
    if unknown:
        raise ValueError(f"unknown execution provider(s) {unknown}; choose from {sorted(PROVIDERS)}")
    have = set(available)
    if not cuda_driver_present():  # onnxruntime-gpu lists GPU providers on CPU-only hosts too
        have = {PROVIDERS["cpu"]}
    wanted = [PROVIDERS[p] for p in requested if PROVIDERS[p] in have and PROVIDERS[p] != PROVIDERS["cpu"]]
    return wanted + [PROVIDERS["cpu"]]


def provider_options(provider: str, trt_cache_dir: str | Path | None = None, fp16: bool = True,
                     profile: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]] | None = None) -> dict:
    """onnxruntime options for one provider (long name); ``{}`` for providers without any.

    TensorRT EP: engine cache and timing cache in ``trt_cache_dir`` (onnxruntime keys its cached
    engines by graph hash, GPU and TensorRT version itself), FP16 when ``fp16``, and explicit
    optimisation-profile shapes ``{input: (min, opt, max)}`` so a dynamic batch axis does not
    rebuild the engine per batch size. CUDA EP: exhaustive cuDNN algorithm search.
    """
    if provider == PROVIDERS["tensorrt"]:
        opts: dict = {"trt_fp16_enable": bool(fp16)}
        if trt_cache_dir is not None:
            Path(trt_cache_dir).mkdir(parents=True, exist_ok=True)
            opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache_dir),
                        trt_timing_cache_enable=True, trt_timing_cache_path=str(trt_cache_dir))
        if profile:
            def fmt(i: int) -> str:
                return ",".join(f"{name}:{'x'.join(str(int(d)) for d in shapes[i])}" for name, shapes in profile.items())
            opts.update(trt_profile_min_shapes=fmt(0), trt_profile_opt_shapes=fmt(1), trt_profile_max_shapes=fmt(2))
        return opts
    if provider == PROVIDERS["cuda"]:
        return {"cudnn_conv_algo_search": "EXHAUSTIVE"}
    return {}


def describe_provider(long_name: str) -> str:
    """``TensorrtExecutionProvider`` -> ``TensorRT`` etc. (for the one log line)."""
    return {"TensorrtExecutionProvider": "TensorRT", "CUDAExecutionProvider": "CUDA",
            "CPUExecutionProvider": "CPU"}.get(long_name, long_name)


#: ``graph_optimization`` names of :func:`create_session`, mapped to onnxruntime's levels.
GRAPH_OPTIMIZATION: dict[str, str] = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def create_session(model: str | Path | bytes, providers: Sequence[str] = ("cpu",), intra_op_threads: int = 0,
                   graph_optimization: str = "all", optimized_model_path: str | Path | None = None,
                   trt_cache_dir: str | Path | None = None, fp16: bool = True,
                   profile: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]] | None = None,
                   memory_arena: bool = True, memory_pattern: bool = False):
    """The project's one way to create an ``onnxruntime.InferenceSession``.

    Session options, the same for every caller: errors-only onnxruntime logging (CUDA / TensorRT
    load failures on CPU hosts are expected), idle intra-op workers sleep instead of spinning
    (the daemon shares cores between readers, the engine thread and the post-processing thread;
    ``SARDE_ORT_SPIN=1`` lets them spin), providers chosen by :func:`select_providers` (CPU always
    last, so a missing GPU library falls back to CPU) with :func:`provider_options`.

    Args:
        model: an ``.onnx`` path, or the serialised ``ModelProto`` bytes.
        providers: short names (``tensorrt``, ``cuda``, ``cpu``), best first.
        intra_op_threads: onnxruntime intra-op thread count (0 = onnxruntime's default, one per core).
            Parity checks pass a fixed count so their float summation order does not depend on the host.
        graph_optimization: ``"all"`` (the default, as the daemon runs), ``"extended"``, ``"basic"``
            (provider-independent rewrites only) or ``"disabled"`` (the graph exactly as stored).
        optimized_model_path: when set, onnxruntime saves the graph after its optimisations there.
        trt_cache_dir: TensorRT EP engine / timing cache folder; default ``trt-cache`` beside a model
            path (none for bytes).
        fp16, profile: TensorRT EP FP16 kernels and optimisation profile (:func:`provider_options`).
        memory_arena: onnxruntime's CPU memory arena. Off, buffers go back to the allocator after each
            run: on the dm10 detector at batch 1-4 about 115-140 MB less resident memory but 8 % (batch 1)
            to 24 % (batch 4) more time per frame (medians of 15 runs, 2-core VM; ``detector.cpu_memory_arena``).
        memory_pattern: onnxruntime's memory patterns (one pre-planned block per input shape seen).
            Off by default: the daemon's batches vary in size (1 to ``max_batch`` frames or windows),
            and on the dm10 detector at batch 1-4 patterns held about 90 MiB more resident memory
            for no measurable speed (``sarde bench``: ``engine_plus_grouping_batch*_pattern_on``, side
            by side).

    Returns:
        The ``onnxruntime.InferenceSession``; ``get_providers()`` names what really runs, best first.

    Raises:
        ModelLoadError: the path is missing, or onnxruntime cannot load the model.
        ValueError: an unknown provider short name or ``graph_optimization`` level.
    """
    import onnxruntime as ort

    if graph_optimization not in GRAPH_OPTIMIZATION:
        raise ValueError(f"unknown graph_optimization {graph_optimization!r}; choose from {sorted(GRAPH_OPTIMIZATION)}")
    is_path = not isinstance(model, (bytes, bytearray))
    if is_path and not Path(model).is_file():
        raise ModelLoadError(f"model file not found: {model}")
    names = select_providers(providers, ort.get_available_providers())
    if trt_cache_dir is None and is_path and PROVIDERS["tensorrt"] in names:
        trt_cache_dir = Path(model).parent / "trt-cache"
    wanted = [(n, provider_options(n, trt_cache_dir, fp16, profile)) for n in names]
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.enable_cpu_mem_arena = bool(memory_arena)
    options.enable_mem_pattern = bool(memory_pattern)
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPTIMIZATION[graph_optimization])
    options.log_severity_level = 3  # CUDA/TensorRT load failures on CPU hosts are expected
    if optimized_model_path is not None:
        options.optimized_model_filepath = str(optimized_model_path)
    if os.environ.get("SARDE_ORT_SPIN", "0") != "1":
        # Idle onnxruntime workers must sleep, not spin, or they steal the cores of the readers
        # and of the stage's other thread.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(str(model) if is_path else bytes(model), sess_options=options, providers=wanted)
    except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
        what = model if is_path else f"a {len(model)}-byte model"
        raise ModelLoadError(f"cannot load {what}: {exc}") from exc


class OnnxModel:
    """An onnxruntime session over one ONNX file (:func:`create_session`, full graph optimisation).

    Args:
        path: the ``.onnx`` file.
        providers: preferred providers, best first, as short names (``tensorrt``, ``cuda``,
            ``cpu``); ``cpu`` is always appended as the last resort.
        intra_op_threads: onnxruntime intra-op thread count (0 = onnxruntime's default).
        trt_cache_dir: TensorRT EP engine/timing cache folder (default ``trt-cache`` beside the model).
        fp16: let the TensorRT EP use FP16 kernels.
        profile: TensorRT EP optimisation profile ``{input: (min, opt, max) shapes}``.
        memory_arena, memory_pattern: onnxruntime's CPU memory arena and memory patterns (:func:`create_session`).

    Raises:
        ModelLoadError: if the file is missing or onnxruntime cannot load it.
    """

    def __init__(self, path: str | Path, providers: Sequence[str] = ("cuda", "cpu"), intra_op_threads: int = 0,
                 trt_cache_dir: str | Path | None = None, fp16: bool = True,
                 profile: Mapping[str, tuple[Sequence[int], Sequence[int], Sequence[int]]] | None = None,
                 memory_arena: bool = True, memory_pattern: bool = False):
        import onnxruntime as ort

        self.path = Path(path)
        self.session = create_session(self.path, providers, intra_op_threads, trt_cache_dir=trt_cache_dir,
                                      fp16=fp16, profile=profile, memory_arena=memory_arena,
                                      memory_pattern=memory_pattern)
        self.providers: list[str] = self.session.get_providers()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.backend = "onnxruntime"
        asked = select_providers(providers, ort.get_available_providers())
        log.info("%s runs on onnxruntime %s (asked for %s)", self.path.name, describe_provider(self.providers[0]),
                 ", ".join(describe_provider(n) for n in asked))

    def input_shape(self, index: int = 0) -> list[int | str | None]:
        """Declared shape of input ``index``; symbolic axes are strings or None."""
        return list(self.session.get_inputs()[index].shape)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph; returns ``{output name: array}``."""
        outputs = self.session.run(self.output_names, dict(feeds))
        return dict(zip(self.output_names, outputs))


def _tensorrt_backend():
    from engines.trt import TrtModel  # lazily: engines.trt imports tensorrt only when used

    return TrtModel


#: Backend name -> class (or a zero-argument loader returning the class, for lazy imports).
BACKENDS: dict[str, object] = {"onnxruntime": OnnxModel, "tensorrt": _tensorrt_backend}


def backend_class(name: str) -> type:
    """The class registered as ``name`` in :data:`BACKENDS`.

    Raises:
        ValueError: unknown backend name.
        ImportError: the backend's optional dependency (tensorrt) is not installed.
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown inference backend {name!r}; choose from {sorted(BACKENDS)}")
    entry = BACKENDS[name]
    return entry if isinstance(entry, type) else entry()


def open_model(path: str | Path, backend: str = "onnxruntime", providers: Sequence[str] = ("cuda", "cpu"),
               intra_op_threads: int = 0, **options):
    """Open ``path`` with ``backend``, falling back TensorRT -> onnxruntime CUDA -> CPU.

    Args:
        path: the ONNX file (the TensorRT backend builds or reuses a cached engine from it).
        backend: ``onnxruntime`` or ``tensorrt`` (native).
        providers: onnxruntime providers for the onnxruntime backend or the fallback.
        options: passed to the backend class (``trt_cache_dir``, ``fp16``, ``profile``, ...).

    Returns:
        A backend instance; its ``providers`` name what really runs.

    Raises:
        ModelLoadError: the file is missing or no backend can load it.
    """
    if backend == "tensorrt":
        try:
            cls = backend_class("tensorrt")
            return cls(path, **{k: v for k, v in options.items() if k in ("trt_cache_dir", "fp16", "profile")})
        except (ImportError, RuntimeError) as exc:  # no tensorrt, no GPU, or the engine cannot be built
            log.warning("native TensorRT unavailable for %s (%s); falling back to onnxruntime", Path(path).name, exc)
            fallback = [p for p in providers if p != "tensorrt"] or ["cuda", "cpu"]
            return OnnxModel(path, fallback, intra_op_threads)
    return backend_class(backend)(path, providers, intra_op_threads, **options)


def verified_onnx(manifest_path: str | Path, manifest: Mapping[str, Any]) -> Path:
    """The ONNX file a manifest names (``onnx``, relative to the manifest's folder), checked against
    the manifest's ``onnx_sha256`` when it records one.

    Raises:
        ModelLoadError: the file is missing, or its sha256 differs (replaced, retrained, corrupt).
    """
    manifest_path = Path(manifest_path)
    onnx_path = manifest_path.parent / str(manifest.get("onnx", ""))
    if not onnx_path.is_file():
        raise ModelLoadError(f"ONNX file {onnx_path} named by manifest {manifest_path} not found; re-export the model")
    expected = manifest.get("onnx_sha256")
    if expected:
        digest = sha256_file(onnx_path)
        if digest != expected:
            raise ModelLoadError(f"ONNX file {onnx_path} is corrupt or was replaced: sha256 {digest[:12]}... "
                                f"!= manifest {str(expected)[:12]}...; re-export it with its manifest")
    return onnx_path
