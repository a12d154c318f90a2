"""Parity of the ONNX graph passes (export.graph_passes) and of the SARDE variants (export.optimize) on real graphs and real inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from export.graph_passes import (OptimizeError, batchnorm_report, conv_flops, fold_scale_convs,  # noqa: E402
                                 optimize_model, pad_channels, parity, run_onnx, to_fp16)
from export.optimize import optimize_sarde  # noqa: E402


def _conv_chain(channels: int = 24):
    """Small NCHW graph: conv 3->C, Clip(0,6), depthwise 3x3, Relu, depthwise 1x1 (scale), pointwise C->19."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    c = channels
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.3, (c, 3, 3, 3)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), "b0"),
        numpy_helper.from_array(rng.normal(0, 0.3, (c, 1, 3, 3)).astype(np.float32), "w1"),
        numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.normal(1, 0.3, (c, 1, 1, 1)).astype(np.float32), "w2"),
        numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), "b2"),
        numpy_helper.from_array(rng.normal(0, 0.3, (19, c, 1, 1)).astype(np.float32), "w3"),
        numpy_helper.from_array(rng.normal(0, 0.1, 19).astype(np.float32), "b3"),
        numpy_helper.from_array(np.array(0, np.float32), "lo"),
        numpy_helper.from_array(np.array(6, np.float32), "hi"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["a"], pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["a", "lo", "hi"], ["a6"]),
        helper.make_node("Conv", ["a6", "w1", "b1"], ["d"], group=c, pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["d"], ["dr"]),
        helper.make_node("Conv", ["dr", "w2", "b2"], ["s"], group=c),
        helper.make_node("Conv", ["s", "w3", "b3"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 20, 24])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 19, 20, 24])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8)


def test_conv_flops_counted_by_hand():
    """Output 24 x 20 x 24 = 11520 values: conv 3->24 3x3 2*11520*27, depthwise 3x3 2*11520*9,
    depthwise 1x1 2*11520, pointwise 24->19 2*9120*24, plus one add per output for the biases."""
    got = conv_flops(_conv_chain(24), {"x": (1, 3, 20, 24)})
    by_hand = (2 * 11520 * 27 + 11520) + (2 * 11520 * 9 + 11520) + (2 * 11520 + 11520) + (2 * 9120 * 24 + 9120)
    assert got["flop"] == by_hand == 1_333_920 and got["conv_nodes"] == 4
    assert conv_flops(_conv_chain(24), {"x": (4, 3, 20, 24)})["flop"] == 4 * by_hand  # batch 4


def test_fold_and_pad_are_exact_and_change_the_graph():
    model = _conv_chain(24)
    x = np.random.default_rng(1).normal(size=(2, 3, 20, 24)).astype(np.float32)
    ref = run_onnx(model, {"x": x})
    folded, info = fold_scale_convs(model)
    assert info["folded"] == 1 and len(folded.graph.node) == len(model.graph.node) - 1
    padded, counts = pad_channels(folded, multiple=16)
    assert counts["padded_convs"] >= 2  # 24 -> 32 on the first conv and the depthwise conv
    shapes = {i.name: tuple(i.dims) for i in padded.graph.initializer}
    assert any(len(s) == 4 and s[0] == 32 for s in shapes.values())
    got = run_onnx(padded, {"x": x})
    assert got[0].shape == ref[0].shape == (2, 19, 20, 24)
    assert parity(ref, got)["max_abs_diff"] < 1e-4


def test_pad_keeps_clip_with_positive_minimum_exact():
    """A Clip whose range excludes 0 would turn zero padding into non-zeros: it must be sliced."""
    model = _conv_chain(24)
    for init in model.graph.initializer:
        if init.name == "lo":
            init.CopyFrom(onnx.numpy_helper.from_array(np.array(0.5, np.float32), "lo"))
    x = np.random.default_rng(2).normal(size=(1, 3, 20, 24)).astype(np.float32)
    padded, counts = pad_channels(model)
    assert counts["slices"] >= 1
    assert parity(run_onnx(model, {"x": x}), run_onnx(padded, {"x": x}))["max_abs_diff"] < 1e-4


def test_optimize_model_rejects_a_broken_step(monkeypatch):
    import export.graph_passes as opt

    model = _conv_chain(24)
    x = np.random.default_rng(3).normal(size=(1, 3, 20, 24)).astype(np.float32)

    def broken(m, multiple=16, min_channels=8):
        out, counts = pad_channels(m, multiple, min_channels)
        for init in out.graph.initializer:
            if init.name.startswith("w3"):
                arr = onnx.numpy_helper.to_array(init) * 1.1
                init.CopyFrom(onnx.numpy_helper.from_array(arr.astype(np.float32), init.name))
        return out, counts

    monkeypatch.setattr(opt, "pad_channels", broken)
    with pytest.raises(OptimizeError, match="pad_channels"):
        optimize_model(model, {"x": x}, tolerance=1e-4, steps=("pad_channels",))


def test_detector_graph_optimised_with_recorded_parity(detector_onnx):
    """The exported detector carries the optimisation report; its graph is padded and BN-free."""
    manifest = json.loads(detector_onnx.read_text())
    opt = manifest.get("optimisation")
    assert opt is not None, "detector exported before export.graph_passes existed; re-export it"
    names = [s["name"] for s in opt["steps"]]
    assert names == ["fold_scale_convs", "pad_channels"]
    assert all(s["parity_vs_previous"]["max_abs_diff"] <= opt["tolerance"] for s in opt["steps"])
    model = onnx.load(str(detector_onnx.parent / manifest["onnx"]))
    assert batchnorm_report(model)["batchnorm_nodes"] == 0
    inits = {i.name: tuple(i.dims) for i in model.graph.initializer}
    depthwise = [n for n in model.graph.node if n.op_type == "Conv"
                 and any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert depthwise and all(inits[n.input[1]][0] % 16 == 0 for n in depthwise)
    assert all(inits[n.input[1]][1:] != (1, 1, 1) for n in depthwise)  # the 1x1 scale layers are folded


def test_sarde_simplified_and_fp16_parity(default_model, tmp_path):
    """simplify: exact vs the exported graph and within 1e-4 of torch; FP16 within 0.05 of FP32."""
    pytest.importorskip("onnxconverter_common")
    paths = optimize_sarde(default_model, fp16=True, out_dir=tmp_path)
    assert [p.name for p in paths] == ["sarde-opt.json", "sarde-fp16.json"]
    opt = json.loads(paths[0].read_text())["optimisation"]
    assert opt["batchnorm"]["batchnorm_after_conv"] == 0
    step = opt["steps"][0]
    assert step["parity_vs_previous"]["max_abs_diff"] <= 1e-4
    if "parity_vs_reference" in step:
        assert step["parity_vs_reference"]["max_abs_diff"] <= 1e-4
    half = json.loads(paths[1].read_text())
    assert half["optimisation"]["fp16"] is True
    fp16_step = half["optimisation"]["steps"][-1]
    assert 0 < fp16_step["parity_vs_fp32"]["max_abs_diff"] <= 0.05  # > 0: the graph really is FP16
    model = onnx.load(str(tmp_path / half["onnx"]))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in model.graph.initializer)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # float32 I/O kept


def test_to_fp16_runs_on_the_small_graph():
    pytest.importorskip("onnxconverter_common")
    model = _conv_chain(16)
    x = np.random.default_rng(4).normal(size=(1, 3, 20, 24)).astype(np.float32)
    ref = run_onnx(model, {"x": x})
    got = run_onnx(to_fp16(model), {"x": x})
    scale = float(np.abs(ref[0]).max())
    assert parity(ref, got)["max_abs_diff"] <= 1e-2 * max(scale, 1.0)
