"""Export a trained SARDE checkpoint (``engines.sarde.train``) to one fused ONNX graph + manifest.

Input ``skeleton`` ``(N, 3, T, V, M)`` float32 (dynamic N; channels x, y, score from
``engines.skeleton``); outputs ``scores`` ``(N, K)`` softmax probabilities and ``depth``
``(N, T, V, M)`` metres. The manifest (``engines.manifest``) records labels, shapes, layout,
normalisation, fps, held-out accuracy, hashes and the ONNX-vs-torch parity on real windows.
torch is imported here only; the daemon reads the manifest and the ONNX file without torch.

``python -m export.sarde CHECKPOINT OUT_DIR``
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
import warnings
from pathlib import Path

import numpy as np

from engines.manifest import atomic_write_bytes, sha256_file, write_manifest
from engines.skeleton import WINDOW_CHANNELS
from engines.errors import UserError

log = logging.getLogger(__name__)

PARITY_TOLERANCE = 1e-4
OPSET = 17
ONNX_NAME = "sarde.onnx"
MANIFEST_NAME = "sarde.json"


class ParityError(UserError, RuntimeError):
    """The exported graph disagrees with the torch module beyond :data:`PARITY_TOLERANCE`."""


def load_checkpoint(checkpoint: str | Path):
    """Rebuild the trained :class:`engines.sarde.models.SardeNet` in eval mode.

    Returns:
        ``(model, info)`` with ``info`` the ``model.json`` written beside the checkpoint.

    Raises:
        FileNotFoundError: if the checkpoint or its ``model.json`` is missing.
    """
    import torch

    from engines.sarde.architectures import build_model

    checkpoint = Path(checkpoint)
    info = json.loads((checkpoint.parent / "model.json").read_text(encoding="utf-8"))
    model = build_model(info["recipe"].get("model", {}), len(info["labels"]))
    model.load_state_dict(torch.load(checkpoint, map_location="cpu", weights_only=True))
    return model.eval(), info


def export_sarde(checkpoint: str | Path, out_dir: str | Path, parity_windows: np.ndarray | None = None) -> Path:
    """Export the fused graph and write ``sarde.onnx`` + ``sarde.json`` into ``out_dir``.

    Args:
        checkpoint: ``model.pt`` from :func:`engines.sarde.train.train` (with ``model.json`` and
            ``parity_windows.npy`` beside it).
        out_dir: destination folder (created).
        parity_windows: ``(B, 3, T, V, M)`` real windows for the parity check; default the
            checkpoint's ``parity_windows.npy``.

    Returns:
        The manifest path.

    Raises:
        ParityError: if ONNX and torch differ by more than 1e-4 (scores or depth), checked at
            batch 1 and at the full parity batch; nothing is written then.
    """
    import onnx
    import onnxruntime
    import torch

    t0 = time.perf_counter()
    checkpoint, out_dir = Path(checkpoint), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, info = load_checkpoint(checkpoint)
    model_cfg = info["recipe"].get("model") or {}
    window = info["recipe"].get("window", {})
    t, m = int(window.get("num_frames", 150)), int(window.get("num_persons", 2))
    v = 18
    if parity_windows is None:
        parity_windows = np.load(checkpoint.parent / "parity_windows.npy", allow_pickle=False)
    parity_windows = np.ascontiguousarray(parity_windows, dtype=np.float32)
    if parity_windows.shape[1:] != (3, t, v, m):
        raise ValueError(f"parity windows must be (B, 3, {t}, {v}, {m}), got {parity_windows.shape}")

    tmp = out_dir / f".{ONNX_NAME}.export"
    dummy = torch.from_numpy(parity_windows[:1])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # dynamo=False is the legacy exporter, on purpose
        torch.onnx.export(model, (dummy,), str(tmp), input_names=["skeleton"], output_names=["scores", "depth"],
                          dynamic_axes={"skeleton": {0: "N"}, "scores": {0: "N"}, "depth": {0: "N"}},
                          opset_version=OPSET, dynamo=False, do_constant_folding=True)
    onnx_model = onnx.load(str(tmp))
    onnx.checker.check_model(onnx_model)

    from engines.runtime import create_session

    sess = create_session(tmp, ("cpu",))
    parity = {}
    with torch.no_grad():
        for name, batch in (("batch1", parity_windows[:1]), (f"batch{len(parity_windows)}", parity_windows)):
            ref_scores, ref_depth = (x.numpy() for x in model(torch.from_numpy(batch)))
            got_scores, got_depth = sess.run(["scores", "depth"], {"skeleton": batch})
            parity[name] = {"scores_max_abs_diff": float(np.abs(ref_scores - got_scores).max()),
                            "depth_max_abs_diff": float(np.abs(ref_depth - got_depth).max())}
    worst = max(max(p.values()) for p in parity.values())
    if not worst <= PARITY_TOLERANCE:
        tmp.unlink(missing_ok=True)
        raise ParityError(f"ONNX vs torch max abs difference {worst:.3g} > {PARITY_TOLERANCE}: {parity}")
    onnx_path = atomic_write_bytes(out_dir / ONNX_NAME, tmp.read_bytes())
    tmp.unlink(missing_ok=True)
    onnx_sha = sha256_file(onnx_path)
    ckpt_sha = sha256_file(checkpoint)
    metrics = info.get("metrics", {})
    manifest = {
        "format": "onnx",
        "kind": "sarde",
        "onnx": onnx_path.name,
        "onnx_sha256": onnx_sha,
        "model_id": hashlib.sha256(onnx_sha.encode()).hexdigest()[:12],
        "source": {"checkpoint": str(checkpoint), "checkpoint_sha256": ckpt_sha},
        "labels": list(info["labels"]),
        "T": t, "V": v, "M": m, "C": list(WINDOW_CHANNELS),
        "fps": float(window.get("fps", 15.0)),
        "layout": "NCTVM",
        "normalisation": "image-centred, height-normalised: x' = (x - W/2)/H, y' = (y - H/2)/H; missing joints 0",
        "inputs": {"skeleton": {"shape": ["N", 3, t, v, m], "dtype": "float32"}},
        "outputs": {"scores": {"shape": ["N", len(info["labels"])], "dtype": "float32", "meaning": "softmax probabilities"},
                    "depth": {"shape": ["N", t, v, m], "dtype": "float32", "unit": "m", "meaning": "camera-space joint depth, 0 where missing"}},
        # held-out top-1 of every split the checkpoint was evaluated on (its own data: a user's split, SBU, ...)
        "heldout": {name: m.get("top1") for name, m in metrics.items()},
        "trained_on": info.get("trained_on") or {name: split for name, split in (info.get("splits") or {}).items()},
        "masked_joints": list(info.get("masked_joints", [])),  # zeroed in every window, training and daemon
        "background": info.get("background", "other"),
        "splits": info.get("splits"),
        "heldout_metrics": metrics,  # every held-out split of model.json (default model: sbu, msr; eval runs: the protocol)
        "parity": {"reference": "torch eager (same checkpoint)", "windows": "real held-out SBU/MSR windows",
                   "tolerance": PARITY_TOLERANCE, **parity},
        "opset": OPSET,
        "recipe_name": info["recipe"].get("name"),
        # the back end behind the depth front end (engines.sarde.architectures): stgcn (SARDE) or a seed model
        "architecture": {"recognizer": str(model_cfg.get("recognizer", "stgcn")),
                         "depth_net": str(model_cfg.get("depth_net", "series")) if model.estimates_depth else None,
                         "head": dict(model_cfg.get("head") or {})},
        "train_seconds": info.get("train_seconds"),
    }
    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                "numpy": np.__version__}
    path = write_manifest(out_dir / MANIFEST_NAME, manifest, versions)
    log.info("exported %s (model_id %s, parity %.2g) in %.1f s", onnx_path, manifest["model_id"], worst,
             time.perf_counter() - t0)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Export a SARDE checkpoint to ONNX + manifest.")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    print(export_sarde(args.checkpoint, args.out_dir))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
