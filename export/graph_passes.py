"""Generic inference-friendly ONNX graph passes, each checked for parity and recorded.

Passes (all pure functions ``ModelProto -> ModelProto``; onnx / onnxruntime imported lazily):

* :func:`pad_channels` - zero-pads convolution channel counts to a multiple of 16 so that
  onnxruntime's CPU NCHWc kernels take every convolution. Exact: padded output channels have zero
  weights and bias, stay zero through ReLU / Clip(min <= 0) / Add, and meet zero weight columns in
  the consuming convolution. Measured on the 2-core AVX-512 box (onnxruntime 1.23, 2 threads,
  batch 1): the dm14 pose detector has 241-, 184-, 136-, 88- and 24-channel tensors; depthwise
  convolutions over them fall back to onnxruntime's generic grouped convolution (one tiny GEMM per
  channel). Padding takes it from about 72 ms to the figure recorded in the detector manifest.
* :func:`fold_scale_convs` - folds per-channel 1x1 depthwise convolutions into the pointwise
  convolution they feed (exact up to float summation order).
* :func:`simplify` - constant folding and graph simplification with ``onnxsim`` when installed,
  otherwise onnxruntime's basic (portable) level saved offline.
* :func:`batchnorm_report` - checks that BatchNorm was folded into the preceding convolution by
  the exporter (counts ``BatchNormalization`` nodes left, and those still fed by a Conv).
* :func:`to_fp16` - FP16 weights and activations (``onnxconverter-common``), float32 graph inputs
  and outputs kept, for GPU providers (CPU onnxruntime runs FP16 convolutions slowly or not at all).

:func:`optimize_model` chains them with a parity check after every step against the previous graph
(and, when given, the reference implementation's outputs) and returns the report that goes into a
manifest under ``optimisation``. Model-specific drivers: ``export.detector`` (fold + pad) and
``export.optimize.optimize_sarde`` (simplify, FP16).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from engines.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["OptimizeError", "pad_channels", "simplify", "batchnorm_report", "fold_scale_convs", "to_fp16", "run_onnx",
           "parity", "optimize_model", "NCHWC_MULTIPLE", "FP16_TOLERANCE"]

#: Channel multiple of onnxruntime's NCHWc block on AVX-512 (16; AVX2 uses 8, a divisor).
NCHWC_MULTIPLE: int = 16
#: Default max-abs parity tolerance of an FP16 graph vs its FP32 source, relative to the output range.
FP16_TOLERANCE: float = 1e-2

_UNARY_ZERO_PRESERVING = {"Relu", "LeakyRelu", "Identity"}


class OptimizeError(UserError, RuntimeError):
    """An optimisation step failed or broke parity; the message names the step."""


def _ceil(c: int, m: int) -> int:
    return -(-c // m) * m


def _editable_copy(model):
    """A copy of ``model`` to edit, its graph, ``{initializer name: tensor}`` and ``{tensor: consuming nodes}``."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    uses: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            uses.setdefault(i, []).append(n)
    return m, g, inits, uses


def pad_channels(model, multiple: int = NCHWC_MULTIPLE, min_channels: int = 8):
    """Zero-pad convolution channels to a multiple of ``multiple`` (NCHW convolutions, axis 1).

    Args:
        model: ``onnx.ModelProto`` with 2-D ``Conv`` nodes whose weights are initializers.
        multiple: channel multiple (16 = onnxruntime's NCHWc block on AVX-512, 8 on AVX2).
        min_channels: tensors with fewer channels are left alone (the 3-channel image input).

    Returns:
        ``(model, info)``: a new ModelProto computing the same function (exactly, up to float
        summation order) and ``{"padded_convs": n, "pads": n, "slices": n}``.

    Raises:
        OptimizeError: if a padded tensor reaches a Clip whose range excludes 0.
    """
    import onnx
    from onnx import helper, numpy_helper

    m, g, inits, uses = _editable_copy(model)
    padded: dict[str, tuple[int, int]] = {}  # tensor -> (original channels, padded channels), zeros at the end
    pad_of: dict[str, str] = {}  # unpadded tensor -> its padded copy
    slice_of: dict[str, str] = {}  # padded tensor -> its sliced (original) copy
    new_nodes: list = []
    new_inits: list = []
    counts = {"padded_convs": 0, "pads": 0, "slices": 0}

    def const(name: str, arr: np.ndarray) -> str:
        new_inits.append(numpy_helper.from_array(arr, name))
        return name

    def sliced(t: str) -> str:
        if t not in padded:
            return t
        if t not in slice_of:
            c = padded[t][0]
            out = f"{t}__unpad"
            new_nodes.append(helper.make_node("Slice", [t, const(f"{out}_s", np.array([0], np.int64)),
                                                        const(f"{out}_e", np.array([c], np.int64)),
                                                        const(f"{out}_a", np.array([1], np.int64))], [out], name=out))
            slice_of[t] = out
            counts["slices"] += 1
        return slice_of[t]

    def padded_input(t: str, c: int) -> str:
        cp = _ceil(c, multiple)
        if t not in pad_of:
            out = f"{t}__pad{cp}"
            pads = np.array([0, 0, 0, 0, 0, cp - c, 0, 0], np.int64)
            new_nodes.append(helper.make_node("Pad", [t, const(f"{out}_p", pads)], [out], name=out, mode="constant"))
            pad_of[t] = out
            padded[out] = (c, cp)
            counts["pads"] += 1
        return pad_of[t]

    for node in g.node:
        op = node.op_type
        if op == "Conv" and len(node.input) >= 2 and node.input[1] in inits and len(uses.get(node.input[1], [])) == 1:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            w = numpy_helper.to_array(inits[node.input[1]])
            b = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else None
            group = int(attrs.get("group", 1))
            if w.ndim != 4 or (group > 1 and w.shape[1] != 1):
                node.input[0] = sliced(node.input[0])
                new_nodes.append(node)
                continue
            x = node.input[0]
            cin = padded[x][0] if x in padded else (w.shape[0] if group > 1 else w.shape[1])
            cout = w.shape[0]
            if x not in padded and cin % multiple and cin >= min_channels:
                x = padded_input(x, cin)
            cin_p = padded[x][1] if x in padded else cin
            depthwise = group > 1
            cout_p = cin_p if depthwise else (_ceil(cout, multiple) if cout % multiple and cout >= min_channels else cout)
            if (cin_p, cout_p) == (cin, cout):
                new_nodes.append(node)
                continue
            if depthwise:
                w2 = np.zeros((cout_p, 1, *w.shape[2:]), w.dtype)
            else:
                w2 = np.zeros((cout_p, cin_p, *w.shape[2:]), w.dtype)
            w2[:cout, :w.shape[1]] = w
            b2 = np.zeros(cout_p, w.dtype)
            if b is not None:
                b2[:cout] = b
            wname = const(f"{node.input[1]}__pad", w2)
            bname = const(f"{node.name or node.output[0]}__bias_pad", b2)
            del node.input[:]
            node.input.extend([x, wname, bname])
            if depthwise:
                for a in node.attribute:
                    if a.name == "group":
                        a.i = cout_p
            if cout_p != cout:
                padded[node.output[0]] = (cout, cout_p)
            counts["padded_convs"] += 1
            new_nodes.append(node)
        elif op in _UNARY_ZERO_PRESERVING and node.input[0] in padded:
            padded[node.output[0]] = padded[node.input[0]]
            new_nodes.append(node)
        elif op == "Clip" and node.input[0] in padded:
            lo = numpy_helper.to_array(inits[node.input[1]]) if len(node.input) > 1 and node.input[1] in inits else None
            hi = numpy_helper.to_array(inits[node.input[2]]) if len(node.input) > 2 and node.input[2] in inits else None
            if (lo is not None and float(lo) > 0) or (hi is not None and float(hi) < 0):
                node.input[0] = sliced(node.input[0])
            else:
                padded[node.output[0]] = padded[node.input[0]]
            new_nodes.append(node)
        elif op == "Add" and len(node.input) == 2 and node.input[0] in padded and padded.get(node.input[0]) == padded.get(node.input[1]):
            padded[node.output[0]] = padded[node.input[0]]
            new_nodes.append(node)
        else:
            for k, t in enumerate(node.input):
                if t in padded:
                    node.input[k] = sliced(t)
            new_nodes.append(node)
    # graph outputs must keep their shapes
    for out in g.output:
        if out.name in padded:
            inner = f"{out.name}__padded"
            for n in new_nodes:
                for k, o in enumerate(n.output):
                    if o == out.name:
                        n.output[k] = inner
                for k, i in enumerate(n.input):
                    if i == out.name:
                        n.input[k] = inner
            padded[inner] = padded.pop(out.name)
            c = padded[inner][0]
            new_nodes.append(helper.make_node("Slice", [inner, const(f"{inner}_s", np.array([0], np.int64)),
                                                        const(f"{inner}_e", np.array([c], np.int64)),
                                                        const(f"{inner}_a", np.array([1], np.int64))], [out.name]))
    used = {i for n in new_nodes for i in n.input}
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep + [i for i in new_inits if i.name in used])
    # Pad/Slice nodes were appended after their producers; restore a topological order
    del g.node[:]
    g.node.extend(_toposort(new_nodes, {i.name for i in g.input} | {i.name for i in g.initializer}))
    del g.value_info[:]
    onnx.checker.check_model(m)
    return m, counts


def fold_scale_convs(model):
    """Fold per-channel 1x1 depthwise convolutions into the pointwise convolution they feed.

    A depthwise 1x1 convolution (``group = C``, weight ``(C, 1, 1, 1)``) is ``y_c = s_c x_c + b_c``;
    when its only consumer is a 1x1 convolution ``z = W y + d`` (no padding, group 1) the pair is
    ``z = (W diag(s)) x + (W b + d)``: exact up to float summation order. The dm14 detector's
    OpenPose stages hold 24 such layers (about 8 % of its CPU time).

    Returns:
        ``(model, {"folded": n})``, a new ModelProto.
    """
    import onnx
    from onnx import helper, numpy_helper

    m, g, inits, uses = _editable_copy(model)
    graph_outputs = {o.name for o in g.output}

    def attrs(n) -> dict:
        return {a.name: helper.get_attribute_value(a) for a in n.attribute}

    def is_1x1(n) -> bool:
        a = attrs(n)
        return (not any(a.get("pads", [0])) and set(a.get("strides", [1])) == {1}
                and set(a.get("dilations", [1])) == {1} and a.get("auto_pad", b"NOTSET") in (b"NOTSET", "NOTSET"))

    drop, folded, new_inits = set(), 0, []
    for n in g.node:
        if n.op_type != "Conv" or len(n.input) < 2 or n.input[1] not in inits:
            continue
        w = numpy_helper.to_array(inits[n.input[1]])
        if w.ndim != 4 or w.shape[1:] != (1, 1, 1) or int(attrs(n).get("group", 1)) != w.shape[0] or not is_1x1(n):
            continue
        consumers = uses.get(n.output[0], [])
        if len(consumers) != 1 or n.output[0] in graph_outputs:
            continue
        c = consumers[0]
        if c.op_type != "Conv" or c.input[0] != n.output[0] or c.input[1] not in inits or not is_1x1(c):
            continue
        wc = numpy_helper.to_array(inits[c.input[1]])
        if wc.ndim != 4 or wc.shape[2:] != (1, 1) or int(attrs(c).get("group", 1)) != 1 or len(uses[c.input[1]]) != 1:
            continue
        s = w[:, 0, 0, 0].astype(np.float64)
        b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64) if len(n.input) > 2 and n.input[2] else np.zeros_like(s)
        d = (numpy_helper.to_array(inits[c.input[2]]).astype(np.float64) if len(c.input) > 2 and c.input[2]
             else np.zeros(wc.shape[0]))
        w2 = (wc[:, :, 0, 0].astype(np.float64) * s[None, :])[:, :, None, None].astype(wc.dtype)
        d2 = (wc[:, :, 0, 0].astype(np.float64) @ b + d).astype(wc.dtype)
        wname, bname = f"{c.input[1]}__fold", f"{c.name or c.output[0]}__bias_fold"
        new_inits += [numpy_helper.from_array(w2, wname), numpy_helper.from_array(d2, bname)]
        del c.input[:]
        c.input.extend([n.input[0], wname, bname])
        drop.add(id(n))
        folded += 1
    keep_nodes = [n for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(keep_nodes)
    used = {i for n in g.node for i in n.input}
    keep = [i for i in list(g.initializer) + new_inits if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(m)
    return m, {"folded": folded}


def _toposort(nodes: Sequence, available: set[str]) -> list:
    avail = set(available) | {""}
    pending = list(nodes)
    out = []
    while pending:
        rest = []
        for n in pending:
            if all(i in avail for i in n.input):
                out.append(n)
                avail.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise OptimizeError(f"graph has a cycle or dangling inputs at {[n.name for n in rest[:3]]}")
        pending = rest
    return out


def simplify(model):
    """Constant folding + simplification.

    Uses ``onnxsim.simplify`` (with its own check) when ``onnxsim`` is installed, otherwise saves
    onnxruntime's ``ORT_ENABLE_BASIC`` graph (constant folding, redundant-node elimination, and
    provider-independent fusions only, so the result stays portable).

    Returns:
        ``(model, tool)`` with ``tool`` ``"onnxsim <version>"`` or ``"onnxruntime-basic <version>"``.
    """
    import onnx

    try:
        import onnxsim
    except ImportError:
        onnxsim = None
    if onnxsim is not None:
        try:
            simplified, ok = onnxsim.simplify(model)
            if ok:
                return simplified, f"onnxsim {getattr(onnxsim, '__version__', '?')}"
            log.warning("onnxsim could not validate its result; falling back to onnxruntime basic level")
        except Exception as exc:  # onnxsim raises plain RuntimeError / ValueError from C++ for unsupported graphs
            log.warning("onnxsim failed (%s); falling back to onnxruntime basic level", exc)
    import tempfile

    import onnxruntime as ort

    from engines.runtime import create_session

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "basic.onnx"
        create_session(model.SerializeToString(), ("cpu",), graph_optimization="basic", optimized_model_path=out)
        return onnx.load(str(out)), f"onnxruntime-basic {ort.__version__}"


def batchnorm_report(model) -> dict:
    """BatchNorm folding check.

    Returns:
        ``{"batchnorm_nodes": n, "batchnorm_after_conv": k}``; ``k`` must be 0 after export in eval
        mode (a Conv followed by BatchNorm is folded by the exporter). BatchNorm over reshaped data
        (ST-GCN's data BN) cannot be folded into a convolution and is counted in ``n`` only.
    """
    producers = {o: n for n in model.graph.node for o in n.output}
    bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
    after_conv = sum(1 for n in bns if producers.get(n.input[0]) is not None and producers[n.input[0]].op_type == "Conv")
    return {"batchnorm_nodes": len(bns), "batchnorm_after_conv": after_conv}


def to_fp16(model, keep_io_types: bool = True):
    """FP16 copy of ``model`` (weights and activations), float32 inputs/outputs kept by default.

    Raises:
        ImportError: ``onnxconverter-common`` is not installed (``export`` extra).
    """
    import onnx
    from onnxconverter_common import float16

    src = onnx.ModelProto()
    src.CopyFrom(model)
    del src.graph.value_info[:]  # stale float32 intermediate types would survive the conversion
    half = float16.convert_float_to_float16(src, keep_io_types=keep_io_types)
    # onnxconverter-common 1.16 leaves Cast(to=FLOAT) inside the graph (e.g. the joint mask's
    # ``(score > 0).to(x.dtype)``), which then feeds float16 ops; retarget those to FLOAT16. The
    # casts it inserted at graph inputs/outputs (keep_io_types) stay float32.
    io = {v.name for v in half.graph.input} | {v.name for v in half.graph.output}
    for node in half.graph.node:
        if node.op_type == "Cast" and not (set(node.input) | set(node.output)) & io:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == onnx.TensorProto.FLOAT:
                    attr.i = onnx.TensorProto.FLOAT16
    del half.graph.value_info[:]
    onnx.checker.check_model(half)
    return half


def run_onnx(model, feeds: Mapping[str, np.ndarray], providers: Sequence[str] = ("cpu",),
             threads: int = 0) -> list[np.ndarray]:
    """Run a ModelProto (or an ``.onnx`` path) once in onnxruntime and return all outputs.

    Args:
        model: ``onnx.ModelProto``, or a path.
        feeds: ``{input name: array}`` (dtypes and shapes as the graph declares).
        providers: short provider names (``cpu``, ``cuda``, ``tensorrt``), CPU as the fallback.
        threads: intra-op threads (0 = onnxruntime's default).

    Returns:
        Every graph output, in graph order.

    Raises:
        engines.runtime.ModelLoadError: onnxruntime cannot load the graph.
    """
    from engines.runtime import create_session

    src = model if isinstance(model, (str, Path)) else model.SerializeToString()
    return create_session(src, providers, threads).run(None, dict(feeds))


def parity(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> dict:
    """Max and mean absolute difference per output, and the worst over all outputs."""
    per = []
    for r, c in zip(reference, candidate):
        d = np.abs(np.asarray(r, np.float64) - np.asarray(c, np.float64))
        per.append({"max_abs_diff": float(d.max()) if d.size else 0.0, "mean_abs_diff": float(d.mean()) if d.size else 0.0})
    return {"outputs": per, "max_abs_diff": max((p["max_abs_diff"] for p in per), default=0.0)}


def optimize_model(model, feeds: Mapping[str, np.ndarray], tolerance: float,
                   reference: Sequence[np.ndarray] | None = None, steps: Sequence[str] = ("simplify", "pad_channels"),
                   fp16: bool = False, fp16_tolerance: float | None = None) -> tuple[object, dict]:
    """Apply ``steps`` (then FP16 when asked), checking parity after each.

    Args:
        model: the exported ``onnx.ModelProto`` (float32).
        feeds: real inputs ``{name: array}`` for the parity checks.
        tolerance: max abs difference allowed between a float32 step's outputs and the previous
            graph's (and ``reference``'s, when given).
        reference: outputs of the source implementation (torch eager, TFLite) on ``feeds``.
        steps: any of ``"simplify"``, ``"fold_scale_convs"``, ``"pad_channels"``, in order.
        fp16: convert to FP16 at the end (parity vs the float32 result, ``fp16_tolerance``).
        fp16_tolerance: default ``max(FP16_TOLERANCE, tolerance)``.

    Returns:
        ``(model, report)``; ``report`` = ``{"steps": [{"name", "parity_vs_previous", "kept", ...}],
        "batchnorm": batchnorm_report, "fp16": bool}`` (JSON-able).

    Raises:
        OptimizeError: a step breaks parity (nothing is returned then).
    """
    current = model
    base_out = run_onnx(current, feeds)
    report: dict = {"steps": [], "batchnorm": batchnorm_report(model), "fp16": False, "tolerance": tolerance}
    if reference is not None:
        report["exported_vs_reference"] = parity(reference, base_out)
    for step in steps:
        t0 = time.perf_counter()
        if step == "simplify":
            cand, tool = simplify(current)
            extra = {"tool": tool}
        elif step == "pad_channels":
            cand, extra = pad_channels(current)
        elif step == "fold_scale_convs":
            cand, extra = fold_scale_convs(current)
        else:
            raise ValueError(f"unknown optimisation step {step!r}")
        out = run_onnx(cand, feeds)
        entry = {"name": step, **extra, "seconds": round(time.perf_counter() - t0, 2),
                 "nodes": len(cand.graph.node), "parity_vs_previous": parity(base_out, out)}
        worst = entry["parity_vs_previous"]["max_abs_diff"]
        if reference is not None:
            entry["parity_vs_reference"] = parity(reference, out)
        if not worst <= tolerance:
            raise OptimizeError(f"step {step}: outputs differ from the previous graph by {worst:.3g} > {tolerance}")
        entry["kept"] = True
        log.info("optimisation step %s: max abs diff %.3g, kept", step, worst)
        report["steps"].append(entry)
        current, base_out = cand, out
    if fp16:
        cand = to_fp16(current)
        entry = {"name": "fp16", "parity_vs_fp32": parity(base_out, run_onnx(cand, feeds))}
        tol = fp16_tolerance if fp16_tolerance is not None else max(FP16_TOLERANCE, tolerance)
        entry["tolerance"] = tol
        if not entry["parity_vs_fp32"]["max_abs_diff"] <= tol:
            raise OptimizeError(f"FP16 graph differs from FP32 by {entry['parity_vs_fp32']['max_abs_diff']:.3g} > {tol}")
        report["steps"].append(entry)
        report["fp16"] = True
        current = cand
    return current, report


def conv_flops(model, input_shapes: Mapping[str, Sequence[int]]) -> dict:
    """Floating-point operations of the convolutions (and MatMul / Gemm) of one run of ``model``.

    A multiply-add counts 2 FLOP: a Conv costs ``2 * prod(output shape) * C_in / group * prod(kernel)``
    (plus the output size for a bias), a MatMul / Gemm ``2 * M * N * K``; element-wise ops, pads and
    concatenations are not counted (they are memory-bound and a few per cent of the work here).

    Args:
        model: ``ModelProto`` or path of an ONNX file.
        input_shapes: fixed shape of every graph input, e.g. ``{"image": (1, 368, 432, 3)}``.

    Returns:
        ``{"flop": int, "gflop": float, "conv_nodes": int, "matmul_nodes": int}`` (per run).

    Raises:
        ValueError: a counted node's shapes cannot be inferred.
    """
    import onnx
    from onnx import shape_inference

    m = onnx.load(str(model)) if isinstance(model, (str, Path)) else _editable_copy(model)[0]
    for inp in m.graph.input:
        if inp.name in input_shapes:
            dims = inp.type.tensor_type.shape.dim
            for d, v in zip(dims, input_shapes[inp.name]):
                d.ClearField("dim_param")
                d.dim_value = int(v)
    m = shape_inference.infer_shapes(m)
    shapes: dict[str, list[int]] = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    flops, convs, matmuls = 0.0, 0, 0
    for node in m.graph.node:
        if node.op_type == "Conv":
            out, w = shapes.get(node.output[0]), shapes.get(node.input[1])
            if not out or not w or 0 in out:
                raise ValueError(f"Conv {node.name}: shapes not inferred")
            flops += 2.0 * float(np.prod(out)) * w[1] * float(np.prod(w[2:]))  # w[1] is C_in / group
            if len(node.input) > 2:
                flops += float(np.prod(out))
            convs += 1
        elif node.op_type in ("MatMul", "Gemm"):
            a, out = shapes.get(node.input[0]), shapes.get(node.output[0])
            if not a or not out:
                raise ValueError(f"{node.op_type} {node.name}: shapes not inferred")
            flops += 2.0 * float(np.prod(out)) * a[-1]
            matmuls += 1
    return {"flop": int(flops), "gflop": round(flops / 1e9, 4), "conv_nodes": convs, "matmul_nodes": matmuls}
