"""TensorRT: cache-key logic and backend fallback (CPU), engine build and run (TensorRT + GPU only)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from engines.runtime import BACKENDS, PROVIDERS, OnnxModel, backend_class, open_model, provider_options, select_providers
from engines.trt_build import (EngineSpec, TensorRTUnavailable, batch_profile, engine_cache_key,
                             import_tensorrt)

SPEC = EngineSpec("ab" * 32, "10.3.0", "NVIDIA H100 80GB HBM3", "9.0", "fp16",
                  {"skeleton": [[1, 3, 150, 18, 2], [8, 3, 150, 18, 2], [32, 3, 150, 18, 2]]})


def test_cache_key_changes_with_every_field():
    import dataclasses

    base = engine_cache_key(SPEC)
    assert base == SPEC.key() and len(base) == 20
    changes = {"onnx_sha256": "cd" * 32, "tensorrt_version": "10.4.0", "gpu_name": "NVIDIA H200",
               "compute_capability": "8.9", "precision": "fp32",
               "profiles": {"skeleton": [[1, 3, 150, 18, 2], [8, 3, 150, 18, 2], [64, 3, 150, 18, 2]]}}
    keys = {engine_cache_key(dataclasses.replace(SPEC, **{k: v})) for k, v in changes.items()}
    assert base not in keys and len(keys) == len(changes)


def test_cache_key_is_canonical():
    """Same content, different container types / key order -> same key."""
    import dataclasses

    other = dataclasses.replace(SPEC, profiles={"skeleton": [tuple(s) for s in SPEC.profiles["skeleton"]]})
    assert engine_cache_key(other) == engine_cache_key(SPEC)
    with pytest.raises(ValueError, match="precision"):
        engine_cache_key(dataclasses.replace(SPEC, precision="fp8"))


def test_batch_profile():
    assert batch_profile(["N", 3, 150, 18, 2]) == ([1, 3, 150, 18, 2], [8, 3, 150, 18, 2], [32, 3, 150, 18, 2])
    with pytest.raises(ValueError):
        batch_profile(["N", "T", 18])
    with pytest.raises(ValueError):
        batch_profile(["N", 3], (8, 1, 32))


def test_provider_selection_and_options(monkeypatch):
    import engines.runtime as rt

    full = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(rt, "cuda_driver_present", lambda: True)
    assert select_providers(["tensorrt", "cuda", "cpu"], full) == full
    assert select_providers(["cuda"], full) == full[1:]
    assert select_providers(["tensorrt", "cuda"], ["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    monkeypatch.setattr(rt, "cuda_driver_present", lambda: False)  # onnxruntime-gpu on a CPU-only host
    assert select_providers(["tensorrt", "cuda", "cpu"], full) == ["CPUExecutionProvider"]
    with pytest.raises(ValueError, match="unknown"):
        select_providers(["tpu"], full)
    opts = provider_options(PROVIDERS["tensorrt"], None, True,
                            {"skeleton": batch_profile(["N", 3, 150, 18, 2])})
    assert opts["trt_fp16_enable"] is True and "trt_engine_cache_enable" not in opts
    assert opts["trt_profile_max_shapes"] == "skeleton:32x3x150x18x2"


def test_provider_options_engine_cache(tmp_path):
    opts = provider_options(PROVIDERS["tensorrt"], tmp_path / "cache")
    assert opts["trt_engine_cache_enable"] and opts["trt_engine_cache_path"] == str(tmp_path / "cache")
    assert opts["trt_timing_cache_enable"] and (tmp_path / "cache").is_dir()


def test_registry_and_fallback_to_onnxruntime(default_model, monkeypatch, caplog):
    """Native TensorRT missing (or no GPU) -> onnxruntime with one log line naming what runs."""
    import engines.runtime as rt

    assert set(BACKENDS) == {"onnxruntime", "tensorrt"}
    assert backend_class("onnxruntime") is OnnxModel
    with pytest.raises(ValueError):
        backend_class("tvm")

    def no_trt():
        raise TensorRTUnavailable("TensorRT is not installed")

    monkeypatch.setitem(rt.BACKENDS, "tensorrt", no_trt)
    monkeypatch.setenv("SARDE_FORCE_CPU", "1")
    rt.cuda_driver_present.cache_clear()
    onnx_path = Path(default_model).parent / json.loads(Path(default_model).read_text())["onnx"]
    with caplog.at_level(logging.INFO, logger="engines.runtime"):
        model = open_model(onnx_path, "tensorrt", ("tensorrt", "cuda", "cpu"))
    rt.cuda_driver_present.cache_clear()
    assert model.backend == "onnxruntime" and model.providers == ["CPUExecutionProvider"]
    lines = [r.getMessage() for r in caplog.records]
    assert any("falling back to onnxruntime" in m for m in lines)
    assert sum("runs on onnxruntime CPU" in m for m in lines) == 1
    out = model.run({model.input_names[0]: np.zeros((1, 3, 150, 18, 2), np.float32)})
    assert out["scores"].shape[0] == 1


def test_clear_error_without_tensorrt():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(TensorRTUnavailable, match="pip install"):
            import_tensorrt()
    else:
        pytest.skip("tensorrt is installed")


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_native_engine_build_cache_and_parity(default_model, tmp_path):
    pytest.importorskip("tensorrt")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    from engines.trt import TrtModel
    from engines.trt_build import build_engine

    m = json.loads(Path(default_model).read_text())
    onnx_path = Path(default_model).parent / m["onnx"]
    windows = np.load(Path(default_model).parent / "train" / "parity_windows.npy").astype(np.float32)
    engine, record = build_engine(onnx_path, tmp_path, "fp32")
    assert not record["from_cache"] and engine.is_file()
    engine2, record2 = build_engine(onnx_path, tmp_path, "fp32")
    assert engine2 == engine and record2["from_cache"]
    ref = OnnxModel(onnx_path, ("cpu",)).run({"skeleton": windows})
    got = TrtModel(onnx_path, engine_path=engine).run({"skeleton": windows})
    assert np.abs(ref["scores"] - got["scores"]).max() < 1e-3
    assert np.abs(ref["depth"] - got["depth"]).max() < 1e-2
