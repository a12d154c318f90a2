"""The fused SARDE graph (depth GCN + ST-GCN) behind the runtime interface, as the daemon uses it.

Loads the ONNX file named by a manifest written by ``export.sarde`` and checks the window shape
the daemon will feed against it. NumPy + onnxruntime only (no torch).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from engines.runtime import ModelLoadError, OnnxModel, verified_onnx

log = logging.getLogger(__name__)


class Recognizer:
    """Batched window classification with per-joint depth (SARDE Sec. 3, Fig. 2).

    Args:
        manifest_path: JSON manifest beside the fused ONNX graph (``export.sarde``).
        providers: execution providers, best first.
        num_frames, num_persons: the daemon's T and M; must equal the manifest's.
        fps: the daemon's window frame rate; must equal the manifest's (None: not checked).

    Raises:
        ModelLoadError: missing/corrupt manifest, ONNX file missing or not the one the manifest's
            ``onnx_sha256`` names, or T / V / M mismatch.
    """

    def __init__(self, manifest_path: str | Path, providers: Sequence[str] = ("cuda", "cpu"),
                 num_frames: int = 150, num_persons: int = 2, intra_op_threads: int = 0, max_batch: int = 32,
                 fps: float | None = None):
        path = Path(manifest_path)
        try:
            self.manifest = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot read recogniser manifest {path}: {exc}") from exc
        m = self.manifest
        try:
            self.labels: list[str] = list(m["labels"])
            self.num_frames, self.num_joints, self.num_persons = int(m["T"]), int(m["V"]), int(m["M"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"recogniser manifest {path} lacks a field: {exc}") from exc
        onnx_file = verified_onnx(path, m)
        if (self.num_frames, self.num_persons) != (num_frames, num_persons):
            raise ModelLoadError(
                f"recogniser {path} expects T={self.num_frames}, M={self.num_persons} but the config says "
                f"T={num_frames}, M={num_persons}; set recognizer.num_frames/num_persons to match the model")
        self.model_id: str = str(m.get("model_id", "unknown"))
        self.fps: float | None = m.get("fps")
        if fps is not None and self.fps is not None and abs(float(self.fps) - fps) > 1e-3:
            raise ModelLoadError(f"recogniser {path} was trained on windows at {self.fps} frames/s but the config says "
                                 f"recognizer.fps={fps}; set recognizer.fps: {self.fps}")
        # joints the model was trained without (e.g. eyes/ears of lab skeletons): zeroed here too
        self.masked_joints: list[int] = [int(j) for j in m.get("masked_joints", [])]
        self.background: str = str(m.get("background", "other"))
        self.max_batch = max_batch
        self.model = OnnxModel(onnx_file, providers, intra_op_threads)
        self._input = self.model.input_names[0]

    @property
    def providers(self) -> list[str]:
        return self.model.providers

    def classify(self, windows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Classify a batch of windows.

        Args:
            windows: ``(N, 3, T, V, M)`` float32, channels (x, y, score) from ``engines.skeleton``;
                the manifest's ``masked_joints`` are zeroed (on a copy) as in training.

        Returns:
            ``scores`` ``(N, K)`` class probabilities and ``depth`` ``(N, T, V, M)`` in metres.

        Raises:
            ValueError: on a wrongly shaped batch.
        """
        x = np.ascontiguousarray(windows, dtype=np.float32)
        expected = (3, self.num_frames, self.num_joints, self.num_persons)
        if x.ndim != 5 or x.shape[1:] != expected:
            raise ValueError(f"windows must be (N, {', '.join(map(str, expected))}), got {x.shape}")
        if self.masked_joints:
            x = x.copy() if x is windows else x
            x[:, :, :, self.masked_joints, :] = 0.0
        scores, depth = [], []
        for i in range(0, len(x), self.max_batch):
            out = self.model.run({self._input: x[i:i + self.max_batch]})
            scores.append(out["scores"])
            depth.append(out["depth"])
        return np.concatenate(scores), np.concatenate(depth)
