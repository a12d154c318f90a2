"""Recogniser architectures side by side: params, FLOPs and windows/s per window (``sarde bench --models``).

For each variant of ``configs/experiments/variants.yaml`` (SARDE's and the seed papers' back ends,
``engines.sarde.architectures``), merged over a protocol recipe for its widths, the fused graph is
built with the daemon's labels, exported to ONNX opset 17 exactly as ``export.sarde`` does (dynamic
batch; parity against torch checked at 1e-4 on the timing windows) and timed side by side in one
process: onnxruntime CPU (the daemon's path, :func:`engines.runtime.create_session`) and torch eager.
Throughput does not depend on the trained weights, so freshly initialised models are timed; the
windows are the default model's real parity windows when they exist (:func:`export.backends.bench_windows`).

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` on one full 150-frame window in
eval mode (multiply-add = 2 FLOPs; it counts convolutions, matrix products and linear layers, not
element-wise ops, normalisation or the recurrent cell of a GRU: such rows carry ``flops_note``).
"""
from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path

import numpy as np

from export.backends import bench_windows, median_rate

log = logging.getLogger(__name__)

#: Variants compared by default: SARDE Series and the 2D ST-GCN baseline, then the four seed models.
DEFAULT_VARIANTS: tuple[str, ...] = ("series", "2d", "posec3d", "pham", "tarm", "deepactsnet")


def count_flops(model, window) -> int:
    """FLOPs of one forward pass of ``model`` on ``window`` (``(1, 3, T, V, M)`` tensor), eval mode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(window)
    return int(counter.get_total_flops())


def compare_models(variants: tuple[str, ...] = DEFAULT_VARIANTS, protocol: str = "msr-as1", num_classes: int = 8,
                   repeats: int = 5, batches: tuple[int, ...] = (1, 8), manifest_path: str | Path | None = None,
                   threads: int = 0) -> dict:
    """Params, FLOPs per window and windows/s (onnxruntime CPU, torch eager CPU) of each variant.

    Args:
        variants: names in ``variants.yaml``.
        protocol: whose recipe supplies the widths (``engines.sarde.recipes.build_recipe``).
        num_classes: K of the head (the daemon's default model has 8 labels).
        repeats, batches: timing (:func:`export.backends.median_rate`: median of ``repeats``).
        manifest_path: a SARDE manifest whose parity windows are timed (else synthetic windows).
        threads: onnxruntime intra-op threads (0: its default) and torch threads (0: unchanged).

    Returns:
        ``{"rows": {variant: {"recognizer", "depth", "params", "gflops_per_window", "parity_max_abs_diff",
        "onnxruntime_cpu": {"batch<b>": rate}, "torch_eager_cpu": {...}, "ort_vs_torch": {"batch<b>": x}}},
        "windows": "real" | "synthetic", "protocol", "num_classes"}``.

    Raises:
        KeyError: an unknown variant. RuntimeError: exported graph disagrees with torch by > 1e-4.
    """
    import torch

    from engines.runtime import create_session
    from engines.sarde.architectures import build_model
    from engines.sarde.recipes import build_recipe

    if threads:
        torch.set_num_threads(threads)
    shape = (3, 150, 18, 2)
    wins = {b: bench_windows(shape, b, manifest_path) for b in batches}
    real = manifest_path is not None and (Path(manifest_path).parent / "train" / "parity_windows.npy").is_file()
    rows: dict = {}
    with tempfile.TemporaryDirectory(prefix="sarde-compare-") as tmp:
        for variant in variants:
            recipe = build_recipe(protocol, variant)
            cfg = dict(recipe.get("model") or {})
            if cfg.get("depth_mode") == "oracle":  # needs ground-truth depth: not a deployable graph
                cfg["depth_mode"] = "estimated"
            torch.manual_seed(0)
            model = build_model(cfg, num_classes).eval()
            one = torch.from_numpy(wins[batches[0]][:1])
            flops = count_flops(model, one)
            path = Path(tmp) / f"{variant}.onnx"
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (one,), str(path), input_names=["skeleton"], output_names=["scores", "depth"],
                                  dynamic_axes={"skeleton": {0: "N"}, "scores": {0: "N"}, "depth": {0: "N"}},
                                  opset_version=17, dynamo=False, do_constant_folding=True)
            sess = create_session(path, ("cpu",), intra_op_threads=threads)
            row = {"recognizer": cfg.get("recognizer", "stgcn"), "depth": cfg.get("depth_net", "series")
                   if cfg.get("depth_mode", "estimated") == "estimated" else "none",
                   "params": int(sum(p.numel() for p in model.parameters())),
                   "gflops_per_window": round(flops / 1e9, 4), "onnxruntime_cpu": {}, "torch_eager_cpu": {},
                   "ort_vs_torch": {}}
            if row["recognizer"] == "tarm":
                row["flops_note"] = "GRU cells not counted"
            worst = 0.0
            for b, x in wins.items():
                with torch.inference_mode():
                    ref = model(torch.from_numpy(x))[0].numpy()
                got = sess.run(["scores"], {"skeleton": x})[0]
                worst = max(worst, float(np.abs(ref - got).max()))
                key = f"batch{b}"
                row["onnxruntime_cpu"][key] = median_rate(lambda x=x: sess.run(None, {"skeleton": x}), b, repeats)
                with torch.inference_mode():
                    row["torch_eager_cpu"][key] = median_rate(lambda x=x: model(torch.from_numpy(x)), b, repeats)
                row["ort_vs_torch"][key] = row["onnxruntime_cpu"][key]["per_s"] / row["torch_eager_cpu"][key]["per_s"]
            if worst > 1e-4:
                raise RuntimeError(f"{variant}: ONNX vs torch max abs difference {worst:.3g} > 1e-4")
            row["parity_max_abs_diff"] = worst
            rows[variant] = row
            log.info("%s: %d params, %.3f GFLOP/window, ort batch1 %.1f windows/s", variant, row["params"],
                     row["gflops_per_window"], row["onnxruntime_cpu"][f"batch{batches[0]}"]["per_s"])
    return {"rows": rows, "windows": "real" if real else "synthetic", "protocol": protocol,
            "num_classes": num_classes, "batches": list(batches)}


def format_comparison(result: dict) -> str:
    """The comparison as a text table."""
    batches = [f"batch{b}" for b in result["batches"]]
    head = f"{'variant':<14}{'recognizer':<13}{'depth':<9}{'params':>10}{'GFLOP/win':>11}"
    head += "".join(f"{'ort ' + b:>16}{'torch ' + b:>16}" for b in batches)
    lines = [f"recogniser architectures side by side (windows/s, {result['windows']} windows, widths of "
             f"{result['protocol']}, K={result['num_classes']}):", head]
    for name, r in result["rows"].items():
        line = f"{name:<14}{r['recognizer']:<13}{r['depth']:<9}{r['params']:>10,}{r['gflops_per_window']:>11.3f}"
        for b in batches:
            line += f"{r['onnxruntime_cpu'][b]['per_s']:>9.1f} ({r['ort_vs_torch'][b]:.2f}x)"
            line += f"{r['torch_eager_cpu'][b]['per_s']:>16.1f}"
        if r.get("flops_note"):
            line += f"  [{r['flops_note']}]"
        lines.append(line)
    return "\n".join(lines)
