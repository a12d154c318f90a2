"""One small inference interface over onnxruntime, with execution-provider fallback.

``onnxruntime-gpu`` runs on CPU-only machines: asking for CUDA or TensorRT there logs a
library-load error and the session falls back to CPU. :class:`OnnxModel` asks for the providers
in the configured order, then logs (once) the providers the session really uses.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

log = logging.getLogger(__name__)

#: Short provider names accepted in configs, mapped to onnxruntime's names.
PROVIDERS: dict[str, str] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}


class ModelLoadError(RuntimeError):
    """A model file is missing, unreadable or not a valid ONNX graph."""


class OnnxModel:
    """An onnxruntime session over one ONNX file.

    Args:
        path: the ``.onnx`` file.
        providers: preferred providers, best first, as short names (``tensorrt``, ``cuda``,
            ``cpu``); ``cpu`` is always appended as the last resort.
        intra_op_threads: onnxruntime intra-op thread count (0 = onnxruntime's default).

    Raises:
        ModelLoadError: if the file is missing or onnxruntime cannot load it.
    """

    def __init__(self, path: str | Path, providers: Sequence[str] = ("cuda", "cpu"), intra_op_threads: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ModelLoadError(f"model file not found: {self.path}")
        available = set(ort.get_available_providers())
        wanted = [PROVIDERS[p] for p in providers if PROVIDERS[p] in available]
        if PROVIDERS["cpu"] not in wanted:
            wanted.append(PROVIDERS["cpu"])
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # CUDA/TensorRT load failures on CPU hosts are expected
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=wanted)
        except Exception as exc:  # onnxruntime raises several unrelated types for a bad file
            raise ModelLoadError(f"cannot load {self.path}: {exc}") from exc
        self.providers: list[str] = self.session.get_providers()
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        log.info("onnxruntime session for %s uses %s (asked for %s)", self.path.name, self.providers, wanted)

    def input_shape(self, index: int = 0) -> list[int | str | None]:
        """Declared shape of input ``index``; symbolic axes are strings or None."""
        return list(self.session.get_inputs()[index].shape)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph; returns ``{output name: array}``."""
        outputs = self.session.run(self.output_names, dict(feeds))
        return dict(zip(self.output_names, outputs))
