"""Native TensorRT runner behind the :mod:`engines.runtime` interface (backend ``tensorrt``).

:class:`TrtModel` builds or reuses a cached engine (:func:`engines.trt_build.build_engine`), allocates
device buffers once for the profile's largest shapes (torch CUDA tensors; pinned host buffers for
copies), binds them with ``set_tensor_address`` and runs ``execute_async_v3`` on its own CUDA
stream: host->device copy, inference and device->host copy are queued asynchronously and
synchronised once per call. ``tensorrt`` and ``torch`` are imported when the class is instantiated,
never at module import.

GPU status: written without a GPU lent to its task (correct by construction against the
TensorRT 10 Python API; ``tests/test_tensorrt.py`` runs it where TensorRT is installed).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["TrtModel"]


class TrtModel:
    """A TensorRT engine over one ONNX file (or a prebuilt engine), same API as ``OnnxModel``.

    Args:
        path: the ONNX file (engine built / cached from it).
        trt_cache_dir: engine cache folder (default ``trt-cache`` beside ``path``).
        fp16: build FP16 (else FP32) when no ``engine_path`` is given.
        profile: ``{input: (min, opt, max)}`` shapes (default: dynamic batch 1 / 8 / 32).
        engine_path: use this serialized engine instead of building one.

    Raises:
        engines.trt_build.TensorRTUnavailable: tensorrt, torch with CUDA, or a GPU missing.
        RuntimeError: the engine cannot be built or deserialised.
    """

    def __init__(self, path: str | Path, trt_cache_dir: str | Path | None = None, fp16: bool = True,
                 profile: Mapping | None = None, engine_path: str | Path | None = None):
        from engines.trt_build import build_engine, import_tensorrt

        trt = import_tensorrt()
        import torch

        self.path = Path(path)
        if engine_path is None:
            cache = Path(trt_cache_dir) if trt_cache_dir is not None else self.path.parent / "trt-cache"
            engine_path, self.record = build_engine(self.path, cache, "fp16" if fp16 else "fp32", profile)
        else:
            self.record = {"engine": str(engine_path)}
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"cannot deserialise TensorRT engine {engine_path}")
        self.context = self.engine.create_execution_context()
        self._torch = torch
        self.stream = torch.cuda.Stream()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        self._dtype = {n: _torch_dtype(torch, trt.nptype(self.engine.get_tensor_dtype(n))) for n in names}
        self._max_shape = {}
        for n in self.input_names:
            self._max_shape[n] = tuple(self.engine.get_tensor_profile_shape(n, 0)[2])
            self.context.set_input_shape(n, self._max_shape[n])
        for n in self.output_names:
            self._max_shape[n] = tuple(self.context.get_tensor_shape(n))
        # preallocated device buffers (largest profile shapes) and pinned host staging buffers
        self._device = {n: torch.empty(self._max_shape[n], dtype=self._dtype[n], device="cuda") for n in names}
        self._host = {n: torch.empty(self._max_shape[n], dtype=self._dtype[n], pin_memory=True) for n in names}
        for n in names:
            self.context.set_tensor_address(n, int(self._device[n].data_ptr()))
        self.providers = ["TensorRT (native)"]
        self.backend = "tensorrt"
        log.info("%s runs on native TensorRT %s (%s)", self.path.name, trt.__version__, Path(engine_path).name)

    def input_shape(self, index: int = 0) -> list[int | str | None]:
        """Largest profile shape of input ``index`` (batch axis = profile max)."""
        return list(self._max_shape[self.input_names[index]])

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Copy inputs in, execute asynchronously on the runner's stream, copy outputs out.

        Raises:
            ValueError: an input is missing or larger than the profile's maximum shape.
        """
        torch = self._torch
        views = {}
        with torch.cuda.stream(self.stream):
            for n in self.input_names:
                if n not in feeds:
                    raise ValueError(f"missing input {n!r}")
                x = np.ascontiguousarray(feeds[n])
                if x.ndim != len(self._max_shape[n]) or any(a > b for a, b in zip(x.shape, self._max_shape[n])):
                    raise ValueError(f"input {n!r} shape {x.shape} exceeds the engine profile maximum {self._max_shape[n]}")
                host = self._host[n].view(-1)[:x.size].view(x.shape)
                host.copy_(torch.from_numpy(x).to(self._dtype[n]))
                dev = self._device[n].view(-1)[:x.size].view(x.shape)
                dev.copy_(host, non_blocking=True)
                self.context.set_input_shape(n, x.shape)
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            for n in self.output_names:
                shape = tuple(self.context.get_tensor_shape(n))
                size = int(np.prod(shape))
                host = self._host[n].view(-1)[:size].view(shape)
                host.copy_(self._device[n].view(-1)[:size].view(shape), non_blocking=True)
                views[n] = host
        self.stream.synchronize()
        return {n: v.float().numpy().copy() for n, v in views.items()}


def _torch_dtype(torch, np_dtype):
    return {np.float32: torch.float32, np.float16: torch.float16, np.int32: torch.int32, np.int64: torch.int64,
            np.int8: torch.int8, np.bool_: torch.bool}[np.dtype(np_dtype).type]
