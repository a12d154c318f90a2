"""``sarde export recognizer --optimize / --fp16``: the fused SARDE graph made inference-friendly.

:func:`optimize_sarde` runs the generic passes of :mod:`export.graph_passes` (simplify, optionally
FP16) on the exported ``sarde.onnx`` with parity against the exported graph and torch eager, and
writes each variant beside the source with its own manifest (``optimisation`` = the pass report).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from export.graph_passes import OptimizeError, optimize_model

log = logging.getLogger(__name__)

__all__ = ["optimize_sarde", "SARDE_FP16_TOLERANCE"]


#: FP16 tolerance of the SARDE graph: class probabilities and depth (metres) within 0.05 of FP32.
SARDE_FP16_TOLERANCE: float = 0.05


def optimize_sarde(manifest_path: str | Path, fp16: bool = False, out_dir: str | Path | None = None) -> list[Path]:
    """Write the simplified (and optionally FP16) fused SARDE graph beside its manifest.

    Writes ``sarde-opt.onnx`` + ``sarde-opt.json`` and, with ``fp16``, ``sarde-fp16.onnx`` +
    ``sarde-fp16.json``: copies of the source manifest with ``onnx``, ``onnx_sha256`` and
    ``optimisation`` (per-step parity vs the previous graph and vs torch eager when the checkpoint
    is found) replaced. Parity windows: ``train/parity_windows.npy`` beside the manifest (real
    held-out windows), else the checkpoint's.

    Returns:
        The manifest paths written.

    Raises:
        export.graph_passes.OptimizeError: a step breaks parity (float32 steps: 1e-4, FP16:
            :data:`SARDE_FP16_TOLERANCE`).
        export.graph_passes.OptimizeError: no parity windows found.
        engines.runtime.ModelLoadError: the manifest's ONNX file is missing or not its sha256.
    """
    import json

    import onnx

    from engines.manifest import atomic_write_bytes, read_manifest, sha256_file, write_manifest
    from engines.runtime import verified_onnx

    manifest_path = Path(manifest_path)
    base = read_manifest(manifest_path, required=("onnx", "T", "V", "M"))
    out = Path(out_dir) if out_dir is not None else manifest_path.parent
    src = verified_onnx(manifest_path, base)
    ckpt = Path(str(base.get("source", {}).get("checkpoint", "")))
    candidates = [manifest_path.parent / "train" / "parity_windows.npy", ckpt.parent / "parity_windows.npy"]
    windows_path = next((p for p in candidates if p.is_file()), None)
    if windows_path is None:
        raise OptimizeError(f"no parity windows beside {manifest_path} or its checkpoint ({', '.join(map(str, candidates))}); re-export the model")
    windows = np.load(windows_path, allow_pickle=False).astype(np.float32)
    model = onnx.load(str(src))
    name = model.graph.input[0].name
    feeds = {name: windows}
    reference = None
    if ckpt.is_file():
        try:
            import torch

            from export.sarde import load_checkpoint

            net, _ = load_checkpoint(ckpt)
            with torch.no_grad():
                reference = [t.numpy() for t in net(torch.from_numpy(windows))]
        except (ImportError, RuntimeError, KeyError, OSError, ValueError) as exc:
            log.warning("torch reference unavailable (%s); parity vs the exported ONNX only", exc)
    written = []
    opt, report = optimize_model(model, feeds, tolerance=1e-4, reference=reference, steps=("simplify",))
    variants = [("sarde-opt", opt, report)]
    if fp16:
        half, half_report = optimize_model(opt, feeds, tolerance=1e-4, reference=reference, steps=(),
                                           fp16=True, fp16_tolerance=SARDE_FP16_TOLERANCE)
        half_report["base"] = "sarde-opt.onnx"
        variants.append(("sarde-fp16", half, half_report))
    for stem, proto, rep in variants:
        onnx_path = atomic_write_bytes(out / f"{stem}.onnx", proto.SerializeToString())
        record = {k: v for k, v in base.items() if k not in ("created_at",)}
        record.update(onnx=onnx_path.name, onnx_sha256=sha256_file(onnx_path), optimisation=rep,
                      source_onnx={"file": str(src), "sha256": base.get("onnx_sha256")}, parity_windows=str(windows_path))
        record["model_id"] = base.get("model_id")
        written.append(write_manifest(out / f"{stem}.json", json.loads(json.dumps(record))))
    return written
