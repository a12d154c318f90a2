"""The OpenPose-style pose detector at run time: ONNX model (``export.detector``) + PAF decoding.

``PoseDetector`` loads the manifest written by :func:`export.detector.export_detector`, opens the ONNX
file through :class:`engines.runtime.OnnxModel` (provider fallback), checks the graph against the
manifest, runs batches of letterboxed frames and decodes persons with :class:`engines.pose.PoseDecoder`.
Frames must already be at the detector input size in the manifest's channel order (BGR, as OpenCV
decodes them); resizing/letterboxing is the reader's job (``engines.letterbox``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from engines.pose import NUM_OUTPUT_CHANNELS, PoseDecoder
from engines.runtime import ModelLoadError, OnnxModel, verified_onnx
from engines.manifest import ManifestError, read_manifest

log = logging.getLogger(__name__)

__all__ = ["PoseDetector", "ModelLoadError", "ManifestError"]

_REQUIRED = ("onnx", "input", "output", "input_size", "keypoint_layout")


class PoseDetector:
    """COCO-18 multi-person pose detector over an exported ONNX model.

    Args:
        manifest_path: the detector manifest JSON (``export.detector``); the ONNX file is looked up
            next to it.
        providers: preferred onnxruntime providers, best first (``tensorrt``, ``cuda``, ``cpu``).
        decoder: PAF grouping settings; default ``PoseDecoder(stride=<manifest stride>)``.
        intra_op_threads: onnxruntime intra-op threads (0 = onnxruntime's default).
        memory_arena, memory_pattern: onnxruntime's CPU memory arena and memory patterns
            (``engines.runtime.create_session``).
        verify_sha256: check the ONNX file against the manifest's ``onnx_sha256`` (about 20 ms).

    Raises:
        ManifestError: manifest missing, corrupt, lacking fields, or not a COCO-18 detector.
        ModelLoadError: ONNX file missing, corrupt (sha256 mismatch or onnxruntime cannot load it),
            or its input/output do not match the manifest.
    """

    def __init__(self, manifest_path: str | Path, providers: Sequence[str] = ("cuda", "cpu"),
                 decoder: PoseDecoder | None = None, intra_op_threads: int = 0, verify_sha256: bool = True,
                 memory_arena: bool = True, memory_pattern: bool = False):
        self.manifest_path = Path(manifest_path)
        m = read_manifest(self.manifest_path, required=_REQUIRED)
        try:
            if m["keypoint_layout"] != "coco18":
                raise ManifestError(f"{self.manifest_path}: keypoint_layout {m['keypoint_layout']!r}, expected 'coco18'")
            width, height = int(m["input_size"]["width"]), int(m["input_size"]["height"])
            self.input_name: str = str(m["input"]["name"])
            self.output_name: str = str(m["output"]["name"])
            self.stride = int(m["output"]["stride"])
            out_channels = int(m["output"]["shape"][-1])
            self.channel_order: str = str(m["input"].get("channel_order", "BGR"))
            self.dynamic_batch = bool(m.get("dynamic_batch", False))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            if isinstance(exc, ManifestError):
                raise
            raise ManifestError(f"{self.manifest_path}: malformed detector manifest ({exc!r})") from exc
        if out_channels != NUM_OUTPUT_CHANNELS:
            raise ManifestError(f"{self.manifest_path}: output has {out_channels} channels, "
                                f"the COCO-18 head has {NUM_OUTPUT_CHANNELS}")
        self._size = (width, height)
        self.manifest = m

        onnx_path = verified_onnx(self.manifest_path, m if verify_sha256 else {**m, "onnx_sha256": None})
        self.model = OnnxModel(onnx_path, providers=providers, intra_op_threads=intra_op_threads,
                               memory_arena=memory_arena, memory_pattern=memory_pattern)
        self._check_graph()
        self.decoder = decoder if decoder is not None else PoseDecoder(stride=self.stride)
        if self.decoder.stride != self.stride:
            raise ValueError(f"decoder stride {self.decoder.stride} != model stride {self.stride}")
        log.info("pose detector %s: input %dx%d %s, dynamic batch %s, providers %s",
                 onnx_path.name, width, height, self.channel_order, self.dynamic_batch, self.providers)

    def _check_graph(self) -> None:
        width, height = self._size
        if self.input_name not in self.model.input_names:
            raise ModelLoadError(f"{self.model.path}: no input {self.input_name!r} (graph inputs {self.model.input_names}); "
                                 f"manifest {self.manifest_path} does not belong to this model")
        if self.output_name not in self.model.output_names:
            raise ModelLoadError(f"{self.model.path}: no output {self.output_name!r} (graph outputs {self.model.output_names})")
        shape = self.model.input_shape(self.model.input_names.index(self.input_name))
        if len(shape) != 4 or list(shape[1:]) != [height, width, 3]:
            raise ModelLoadError(f"{self.model.path}: input shape {shape} does not match the manifest's "
                                 f"(N, {height}, {width}, 3) NHWC ({self.manifest_path})")
        symbolic = not isinstance(shape[0], int)
        if self.dynamic_batch and not symbolic:
            raise ModelLoadError(f"{self.model.path}: manifest says dynamic batch but the graph's batch axis is {shape[0]}")
        if not symbolic and shape[0] != 1:
            raise ModelLoadError(f"{self.model.path}: static batch {shape[0]}, expected 1")

    @property
    def input_size(self) -> tuple[int, int]:
        """``(W, H)`` of the detector input in pixels."""
        return self._size

    @property
    def providers(self) -> list[str]:
        """onnxruntime providers the session really uses, best first."""
        return list(self.model.providers)

    def _check_images(self, images: np.ndarray) -> np.ndarray:
        width, height = self._size
        if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[1:] != (height, width, 3):
            got = images.shape if isinstance(images, np.ndarray) else type(images).__name__
            raise ValueError(f"detector expects (N, {height}, {width}, 3) images, got {got}")
        if images.dtype != np.uint8:
            raise ValueError(f"detector expects uint8 images, got {images.dtype}")
        return images

    def raw(self, images: np.ndarray) -> np.ndarray:
        """Network output for a batch.

        Args:
            images: ``(N, H, W, 3)`` uint8 frames at the detector input size, channel order
                :attr:`channel_order` (BGR).

        Returns:
            ``(N, H/8, W/8, 57)`` float32 (heatmaps, background, PAFs; ``engines.pose``).

        Raises:
            ValueError: wrong shape or dtype.
        """
        batch = self._check_images(images).astype(np.float32)  # raw 0-255, as the model was trained
        if len(batch) == 0:
            w, h = self._size
            return np.zeros((0, h // self.stride, w // self.stride, NUM_OUTPUT_CHANNELS), np.float32)
        if self.dynamic_batch:
            return self.model.run({self.input_name: batch})[self.output_name]
        return np.concatenate([self.model.run({self.input_name: frame[None]})[self.output_name] for frame in batch])

    def infer(self, images: np.ndarray) -> list[np.ndarray]:
        """Detect persons in a batch of frames.

        Args:
            images: ``(N, H, W, 3)`` uint8 frames at the detector input size (BGR).

        Returns:
            ``N`` arrays, each ``(P, 18, 3)`` float32 COCO-18 ``(x, y, score)`` in detector-input
            pixels (pixel centres on integers), persons best first, missing joints ``(0, 0, 0)``.

        Raises:
            ValueError: wrong shape or dtype.
        """
        return [self.decoder.decode(output) for output in self.raw(images)]
