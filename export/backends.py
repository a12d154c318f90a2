"""The fused SARDE graph on every model backend of the machine, timed side by side.

Backends (:func:`bench_backends`): ``torch_eager_cpu``, ``onnxruntime_cpu``; with a CUDA GPU also
``torch_eager_cuda``, ``torch_compiled_cuda`` (``torch.compile``), ``torch_cudagraph_cuda`` (CUDA
graphs), ``onnxruntime_cuda``, ``onnxruntime_tensorrt`` (execution providers) and
``tensorrt_native`` (:class:`engines.trt.TrtModel`). torch and tensorrt are imported inside the
functions only, so this module imports without them; ``sarde bench`` (``pipeline/bench.py``)
orchestrates it with the detector, recogniser and end-to-end figures.

Also the timing helper every throughput figure of ``sarde bench`` uses (:func:`median_rate`) and
the windows it feeds the graph (:func:`bench_windows`).
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Callable

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["median_rate", "bench_windows", "checkpoint_of", "torch_runners", "bench_backends", "library_versions",
           "GPU_BACKENDS"]

#: Backends that need a CUDA GPU; listed under ``skipped`` on a machine without one.
GPU_BACKENDS: tuple[str, ...] = ("torch_eager_cuda", "torch_compiled_cuda", "torch_cudagraph_cuda", "onnxruntime_cuda",
                                 "onnxruntime_tensorrt", "tensorrt_native")


def median_rate(fn: Callable[[], object], items: int, repeats: int, warmup: int = 1) -> dict:
    """Time ``fn`` ``repeats`` times after ``warmup`` untimed calls.

    Args:
        fn: the work of one timed run (e.g. one batch through a model).
        items: frames or windows one call of ``fn`` handles.
        repeats: timed runs (>= 1).
        warmup: untimed calls first (allocations, lazy initialisation, caches).

    Returns:
        ``{"per_s": items / median seconds, "median_s", "min_s", "max_s": seconds per call,
        "repeats": repeats}``.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"per_s": items / med, "median_s": med, "min_s": min(times), "max_s": max(times), "repeats": repeats}


def bench_windows(shape: tuple[int, int, int, int], batch: int, manifest_path: str | Path | None = None) -> np.ndarray:
    """``(batch, 3, T, V, M)`` float32 windows for timing the fused graph.

    The model's real parity windows (``train/parity_windows.npy`` beside the manifest) tiled to
    ``batch`` when they exist and have ``shape``, else synthetic skeleton-like windows
    (coordinates N(0, 0.3), joint scores 1; seed 0).
    """
    real = Path(manifest_path).parent / "train" / "parity_windows.npy" if manifest_path is not None else None
    if real is not None and real.is_file():
        w = np.load(real, allow_pickle=False).astype(np.float32)
        if w.shape[1:] == tuple(shape):
            return np.ascontiguousarray(w[np.arange(batch) % len(w)])
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, size=(batch, *shape)).astype(np.float32)
    x[:, 2] = 1.0
    return x


def checkpoint_of(manifest_path: str | Path) -> Path | None:
    """The torch checkpoint a SARDE manifest was exported from (``source.checkpoint``, else
    ``train/model.pt`` beside it), when it exists with its ``model.json``; else None."""
    try:
        m = json.loads(Path(manifest_path).read_text())
    except (OSError, ValueError):
        return None
    for cand in (Path(str(m.get("source", {}).get("checkpoint", ""))), Path(manifest_path).parent / "train" / "model.pt"):
        if cand.name and cand.is_file() and (cand.parent / "model.json").is_file():
            return cand
    return None


def torch_runners(checkpoint: str | Path, device: str) -> dict[str, Callable[[np.ndarray], list]]:
    """``{backend name: run}`` for torch eager (and, on ``"cuda"``, ``torch.compile`` and CUDA graphs).

    Each ``run`` takes ``(N, 3, T, V, M)`` float32 windows and returns the outputs (scores
    ``(N, K)``, depth ``(N, T, V, M)``) as CPU tensors, so a timed call includes the copies.
    A CUDA graph is captured once per batch size on first use.

    Raises:
        ImportError: torch is not installed.
        FileNotFoundError: the checkpoint or its ``model.json`` is missing.
    """
    import torch

    from export.sarde import load_checkpoint

    model, _info = load_checkpoint(checkpoint)
    model = model.to(device).eval()
    runners: dict = {}

    def eager(x):
        xt = torch.from_numpy(x).to(device)
        with torch.inference_mode():
            out = model(xt)
        return [o.cpu() for o in out]

    runners[f"torch_eager_{device}"] = eager
    if device == "cuda":
        compiled = torch.compile(model, mode="max-autotune-no-cudagraphs", dynamic=False)

        def comp(x):
            with torch.inference_mode():
                out = compiled(torch.from_numpy(x).to(device))
            return [o.cpu() for o in out]

        runners["torch_compiled_cuda"] = comp
        graphs: dict = {}

        def cudagraph(x):
            b = len(x)
            if b not in graphs:
                static_in = torch.from_numpy(x).to(device)
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s), torch.inference_mode():
                    for _ in range(3):
                        model(static_in)
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g), torch.inference_mode():
                    static_out = model(static_in)
                graphs[b] = (g, static_in, static_out)
            g, static_in, static_out = graphs[b]
            static_in.copy_(torch.from_numpy(x), non_blocking=True)
            g.replay()
            return [o.cpu() for o in static_out]

        runners["torch_cudagraph_cuda"] = cudagraph
    return runners


def bench_backends(manifest_path: str | Path, repeats: int, batches=(1, 8, 32), threads: int = 0,
                   backends: tuple[str, ...] | None = None) -> dict:
    """Fused SARDE graph on every available backend, side by side, with ratios.

    Args:
        manifest_path: the SARDE manifest (``sarde.json``); its ``onnx`` and checkpoint are used.
        repeats: timed runs per backend and batch (:func:`median_rate`).
        batches: batch sizes, windows per call.
        threads: intra-op threads for onnxruntime and torch CPU (0 = the library's default).
        backends: keep only these backend names (None: all).

    A backend that cannot run here is listed under ``skipped`` with the reason (also a backend /
    batch that failed while timed). Ratios: windows/s of each backend over ``torch_eager_cpu`` at
    the same batch.

    Returns:
        ``{"onnx": path, "checkpoint": path or None, "results": {backend: {"batchB": rate dict}},
        "ratios_vs_torch_eager_cpu": {backend: {"batchB": ratio}}, "skipped": {backend: reason}}``.
    """
    from engines.runtime import OnnxModel, cuda_driver_present

    manifest_path = Path(manifest_path)
    m = json.loads(manifest_path.read_text())
    onnx_path = manifest_path.parent / m["onnx"]
    shape = (3, int(m["T"]), int(m["V"]), int(m["M"]))

    inputs = {b: bench_windows(shape, b, manifest_path) for b in batches}
    runners: dict = {}
    skipped: dict = {}
    ckpt = checkpoint_of(manifest_path)
    gpu = False
    try:
        import torch
        gpu = torch.cuda.is_available()
        if ckpt is None:
            skipped["torch_eager_cpu"] = "checkpoint (model.pt + model.json) not found beside the manifest"
        else:
            torch.set_num_threads(threads or torch.get_num_threads())
            runners.update(torch_runners(ckpt, "cpu"))
            if gpu:
                runners.update(torch_runners(ckpt, "cuda"))
    except ImportError:
        skipped["torch"] = "torch not installed"

    def ort_runner(providers):
        model = OnnxModel(onnx_path, providers, threads)
        name = model.input_names[0]
        return (lambda x: model.run({name: x})), model.providers

    runners["onnxruntime_cpu"] = ort_runner(("cpu",))[0]
    if gpu and cuda_driver_present():
        for key, prov in (("onnxruntime_cuda", ("cuda",)), ("onnxruntime_tensorrt", ("tensorrt",))):
            try:
                fn, used = ort_runner(prov)
                if used[0] == "CPUExecutionProvider":
                    skipped[key] = "provider fell back to CPU (libraries missing)"
                else:
                    runners[key] = fn
            except Exception as exc:  # onnxruntime raises several unrelated types for a provider it cannot create
                skipped[key] = f"{type(exc).__name__}: {exc}"
        try:
            from engines.trt import TrtModel
            trt_model = TrtModel(onnx_path)
            runners["tensorrt_native"] = lambda x: trt_model.run({trt_model.input_names[0]: x})
        except Exception as exc:  # ImportError (no tensorrt), RuntimeError (build), CUDA errors
            skipped["tensorrt_native"] = f"{type(exc).__name__}: {exc}"
    else:
        for key in GPU_BACKENDS:
            skipped[key] = "no CUDA GPU on this machine"
    if backends:
        runners = {k: v for k, v in runners.items() if k in backends}

    results: dict = {}
    for name, fn in runners.items():
        results[name] = {}
        for b in batches:
            x = inputs[b]
            try:
                results[name][f"batch{b}"] = median_rate(lambda: fn(x), b, repeats)
            except Exception as exc:  # a compiled/graph path failing must not lose the other figures
                skipped[f"{name}/batch{b}"] = f"{type(exc).__name__}: {exc}"
                log.warning("backend %s batch %d failed: %s", name, b, exc)
    ratios: dict = {}
    base = results.get("torch_eager_cpu", {})
    for name, rows in results.items():
        ratios[name] = {k: round(v["per_s"] / base[k]["per_s"], 3) for k, v in rows.items() if k in base}
    return {"onnx": str(onnx_path), "checkpoint": str(ckpt) if ckpt else None, "results": results,
            "ratios_vs_torch_eager_cpu": ratios, "skipped": skipped}


def library_versions() -> dict:
    """Versions of the model libraries: ``{"torch", "torch_threads", "cuda" (GPU name), "tensorrt"}``,
    None for what is not installed (``torch_threads`` only with torch)."""
    info: dict = {}
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
        info["cuda"] = None
    try:
        import tensorrt
        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = None
    return info
