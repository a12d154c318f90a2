"""``sarde bench``: throughput of the detector, the fused graph and the whole daemon, side by side.

Every figure is the median of ``repeats`` timed runs after warm-up, on real frames from the shared
videos; the output names the machine and library versions. End-to-end runs the real daemon
(reader processes, ZeroMQ, stage, events) on looped real clips for a fixed number of frames.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
import zmq

from pipeline.config import Config, SourceConfig

log = logging.getLogger(__name__)

BENCH_CLIPS = ("videos/vtest/vtest.avi", "videos/openpose/street.avi", "videos/pyskl/ntu_hug.avi", "videos/stgcn/ta_chi.mp4")


def _median_rate(fn, items: int, repeats: int, warmup: int = 1) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return {"per_s": items / med, "median_s": med, "min_s": min(times), "max_s": max(times), "repeats": repeats}


def _frames(cfg: Config, size: tuple[int, int], n: int) -> np.ndarray:
    from engines.letterbox import letterbox

    cap = cv2.VideoCapture(str(cfg.paths.data_dir / BENCH_CLIPS[0]))
    out = []
    while len(out) < n:
        ok, frame = cap.read()
        if not ok:
            cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        out.append(letterbox(frame, size)[0])
    return np.stack(out)


def bench_detector(cfg: Config, detector, repeats: int) -> dict:
    """Detector frames/s (engine + PAF grouping) and the engine alone, batch 1 and max_batch."""
    frames = _frames(cfg, detector.input_size, 8)
    res = {"input_size": list(detector.input_size), "providers": detector.providers}
    res["engine_batch1"] = _median_rate(lambda: [detector.raw(frames[i:i + 1]) for i in range(4)], 4, repeats)
    res["engine_plus_grouping_batch1"] = _median_rate(lambda: [detector.infer(frames[i:i + 1]) for i in range(4)], 4, repeats)
    b = cfg.detector.max_batch
    if b > 1:
        res[f"engine_plus_grouping_batch{b}"] = _median_rate(lambda: detector.infer(frames[:b]), b, repeats)
    return res


def _windows(shape: tuple[int, int, int, int], batch: int, manifest_path: Path | None = None) -> np.ndarray:
    """``(batch, 3, T, V, M)`` windows: the model's real parity windows (``train/parity_windows.npy``
    beside the manifest) tiled to ``batch``, else synthetic skeleton-like windows."""
    real = Path(manifest_path).parent / "train" / "parity_windows.npy" if manifest_path is not None else None
    if real is not None and real.is_file():
        w = np.load(real, allow_pickle=False).astype(np.float32)
        if w.shape[1:] == tuple(shape):
            return np.ascontiguousarray(w[np.arange(batch) % len(w)])
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.3, size=(batch, *shape)).astype(np.float32)
    x[:, 2] = 1.0
    return x


def bench_recognizer(recognizer, repeats: int, batches=(1, 8, 32), manifest_path: Path | None = None) -> dict:
    """Fused-graph windows/s at several batch sizes through the daemon's recogniser (onnxruntime)."""
    res = {"providers": recognizer.providers, "model_id": recognizer.model_id}
    shape = (3, recognizer.num_frames, recognizer.num_joints, recognizer.num_persons)
    for b in batches:
        x = _windows(shape, b, manifest_path)
        res[f"batch{b}"] = _median_rate(lambda: recognizer.classify(x), b, repeats)
    return res


def _torch_runners(checkpoint: Path, device: str, batches) -> dict:
    """name -> (batch -> callable) for torch eager / compiled / CUDA graphs on ``device``."""
    import torch

    from export.sarde import load_checkpoint

    model, _info = load_checkpoint(checkpoint)
    model = model.to(device).eval()
    runners: dict = {}

    def eager(x):
        xt = torch.from_numpy(x).to(device)
        with torch.inference_mode():
            out = model(xt)
        return [o.cpu() for o in out]

    runners[f"torch_eager_{device}"] = eager
    if device == "cuda":
        compiled = torch.compile(model, mode="max-autotune-no-cudagraphs", dynamic=False)

        def comp(x):
            with torch.inference_mode():
                out = compiled(torch.from_numpy(x).to(device))
            return [o.cpu() for o in out]

        runners["torch_compiled_cuda"] = comp
        graphs: dict = {}

        def cudagraph(x):
            b = len(x)
            if b not in graphs:
                static_in = torch.from_numpy(x).to(device)
                s = torch.cuda.Stream()
                s.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(s), torch.inference_mode():
                    for _ in range(3):
                        model(static_in)
                torch.cuda.current_stream().wait_stream(s)
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g), torch.inference_mode():
                    static_out = model(static_in)
                graphs[b] = (g, static_in, static_out)
            g, static_in, static_out = graphs[b]
            static_in.copy_(torch.from_numpy(x), non_blocking=True)
            g.replay()
            return [o.cpu() for o in static_out]

        runners["torch_cudagraph_cuda"] = cudagraph
    return runners


def _checkpoint_of(manifest_path: Path) -> Path | None:
    try:
        m = json.loads(Path(manifest_path).read_text())
    except (OSError, ValueError):
        return None
    for cand in (Path(str(m.get("source", {}).get("checkpoint", ""))), Path(manifest_path).parent / "train" / "model.pt"):
        if cand.name and cand.is_file() and (cand.parent / "model.json").is_file():
            return cand
    return None


def bench_backends(manifest_path: Path, repeats: int, batches=(1, 8, 32), threads: int = 0,
                   backends: tuple[str, ...] | None = None) -> dict:
    """Fused SARDE graph on every available backend, side by side, with ratios.

    Backends: ``torch_eager_cpu``, ``onnxruntime_cpu``; with a CUDA GPU also ``torch_eager_cuda``,
    ``torch_compiled_cuda``, ``torch_cudagraph_cuda``, ``onnxruntime_cuda``, ``onnxruntime_tensorrt``
    and ``tensorrt_native``. A backend that cannot run here is listed under ``skipped`` with the
    reason. Ratios: windows/s of each backend over ``torch_eager_cpu`` at the same batch.

    Returns:
        ``{"results": {backend: {"batchB": rate dict}}, "ratios_vs_torch_eager_cpu": {...},
        "skipped": {backend: reason}}``.
    """
    from engines.runtime import OnnxModel, cuda_driver_present

    manifest_path = Path(manifest_path)
    m = json.loads(manifest_path.read_text())
    onnx_path = manifest_path.parent / m["onnx"]
    shape = (3, int(m["T"]), int(m["V"]), int(m["M"]))

    inputs = {b: _windows(shape, b, manifest_path) for b in batches}
    runners: dict = {}
    skipped: dict = {}
    ckpt = _checkpoint_of(manifest_path)
    gpu = False
    try:
        import torch
        gpu = torch.cuda.is_available()
        if ckpt is None:
            skipped["torch_eager_cpu"] = "checkpoint (model.pt + model.json) not found beside the manifest"
        else:
            torch.set_num_threads(threads or torch.get_num_threads())
            runners.update(_torch_runners(ckpt, "cpu", batches))
            if gpu:
                runners.update(_torch_runners(ckpt, "cuda", batches))
    except ImportError:
        skipped["torch"] = "torch not installed"

    def ort_runner(providers):
        model = OnnxModel(onnx_path, providers, threads)
        name = model.input_names[0]
        return (lambda x: model.run({name: x})), model.providers

    runners["onnxruntime_cpu"] = ort_runner(("cpu",))[0]
    if gpu and cuda_driver_present():
        for key, prov in (("onnxruntime_cuda", ("cuda",)), ("onnxruntime_tensorrt", ("tensorrt",))):
            try:
                fn, used = ort_runner(prov)
                if used[0] == "CPUExecutionProvider":
                    skipped[key] = "provider fell back to CPU (libraries missing)"
                else:
                    runners[key] = fn
            except Exception as exc:  # onnxruntime raises several unrelated types for a provider it cannot create
                skipped[key] = f"{type(exc).__name__}: {exc}"
        try:
            from engines.trt import TrtModel
            trt_model = TrtModel(onnx_path)
            runners["tensorrt_native"] = lambda x: trt_model.run({trt_model.input_names[0]: x})
        except Exception as exc:  # ImportError (no tensorrt), RuntimeError (build), CUDA errors
            skipped["tensorrt_native"] = f"{type(exc).__name__}: {exc}"
    else:
        for key in ("torch_eager_cuda", "torch_compiled_cuda", "torch_cudagraph_cuda", "onnxruntime_cuda",
                    "onnxruntime_tensorrt", "tensorrt_native"):
            skipped[key] = "no CUDA GPU on this machine"
    if backends:
        runners = {k: v for k, v in runners.items() if k in backends}

    results: dict = {}
    for name, fn in runners.items():
        results[name] = {}
        for b in batches:
            x = inputs[b]
            try:
                results[name][f"batch{b}"] = _median_rate(lambda: fn(x), b, repeats)
            except Exception as exc:  # a compiled/graph path failing must not lose the other figures
                skipped[f"{name}/batch{b}"] = f"{type(exc).__name__}: {exc}"
                log.warning("backend %s batch %d failed: %s", name, b, exc)
    ratios: dict = {}
    base = results.get("torch_eager_cpu", {})
    for name, rows in results.items():
        ratios[name] = {k: round(v["per_s"] / base[k]["per_s"], 3) for k, v in rows.items() if k in base}
    return {"onnx": str(onnx_path), "checkpoint": str(ckpt) if ckpt else None, "results": results,
            "ratios_vs_torch_eager_cpu": ratios, "skipped": skipped}


class _Recorder:
    """Stands in for a prometheus Histogram: records every observation and forwards it."""

    def __init__(self, inner):
        self.inner = inner
        self.values: list[float] = []

    def observe(self, value: float) -> None:
        self.values.append(float(value))
        self.inner.observe(value)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _rss_mb(pid: int | None = None) -> float | None:
    try:
        import psutil
        return psutil.Process(pid).memory_info().rss / 2**20
    except ImportError:
        path = f"/proc/{pid or 'self'}/status"
        try:
            for line in open(path, encoding="ascii"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
    except Exception:  # psutil.NoSuchProcess and friends: the process is gone
        return None
    return None


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def bench_end_to_end(cfg: Config, cameras: int, frames_per_camera: int) -> dict:
    """The real daemon on ``cameras`` looped real clips: frames/s over all cameras.

    Also: event latency (receipt of the frame that completes a window -> event published on the
    PUB socket) p50/p99 in ms, with event thresholds lowered so every classified window publishes
    an event; resident memory of the stage process and of each reader process; the mean detector
    batch the stage formed.
    """
    from pipeline.daemon import build_stage, reader_settings, start_readers

    cfg = cfg.model_copy(deep=True)
    cfg.sources = [SourceConfig(name=f"cam{i}", url=BENCH_CLIPS[i % len(BENCH_CLIPS)], loop=True, lossless=True) for i in range(cameras)]
    cfg.events.stdout = False
    cfg.events.pub_endpoint = f"ipc:///tmp/sarde-bench-events-{os.getpid()}.sock"
    cfg.events.journal = None
    cfg.events = cfg.events.model_copy(update={"threshold": 0.01, "end_threshold": 0.005, "ignore_labels": []})
    cfg.metrics.enabled = False
    cfg.transport.frames_endpoint = f"ipc:///tmp/sarde-bench-{os.getpid()}.sock"
    ctx = zmq.Context()
    with ExitStack() as stack:
        stack.callback(ctx.term)
        stage = build_stage(cfg, ctx, stack, [], progress=False)
        latency = _Recorder(stage.metrics.event_latency)
        stage.metrics.event_latency = latency
        batch_sizes = _Recorder(stage.metrics.detector_batch)
        stage.metrics.detector_batch = batch_sizes
        procs = start_readers([reader_settings(cfg, s, stage.input_size) for s in cfg.sources])
        total = cameras * frames_per_camera
        warm = 0
        while warm < cameras * 4:  # warm-up: readers connected, engines hot
            warm += stage.step(1000)
        latency.values.clear()
        batch_sizes.values.clear()
        rss_models = _rss_mb()  # engines hot (arenas allocated), cameras just started
        done, t0 = 0, time.perf_counter()
        while done < total:
            done += stage.step(1000)
        elapsed = time.perf_counter() - t0
        rss_stage = _rss_mb()
        rss_readers = [_rss_mb(p.pid) for p in procs]
        tracks = sum(len(c.buffers.track_ids) for c in stage.cameras.values())
        ring_bytes = [c.buffers.keypoints.nbytes + c.buffers.frames.nbytes + c.buffers.timestamps.nbytes
                      for c in stage.cameras.values()]
        max_tracks = [c.buffers.max_tracks for c in stage.cameras.values()]
        for p in procs:
            p.terminate()
            p.join(5)
    readers = [r for r in rss_readers if r is not None]
    stage_delta = (rss_stage - rss_models) if rss_stage is not None and rss_models is not None else None
    return {
        "cameras": cameras, "frames": done, "seconds": elapsed, "frames_per_s": done / elapsed,
        "windows": stage.windows_total, "events": stage.events_total,
        "mean_detector_batch": float(np.mean(batch_sizes.values)) if batch_sizes.values else None,
        "event_latency_ms": {"p50": _round(_percentile(latency.values, 50), 1000),
                             "p99": _round(_percentile(latency.values, 99), 1000), "samples": len(latency.values)},
        "memory_mb": {
            "stage_after_warmup": _round(rss_models), "stage_end": _round(rss_stage),
            "stage_growth_per_camera": _round(stage_delta / cameras if stage_delta is not None else None),
            "reader_per_camera": _round(float(np.mean(readers)) if readers else None),
            "per_camera_total": _round((stage_delta / cameras + float(np.mean(readers)))
                                       if stage_delta is not None and readers else None),
            "live_tracks_at_end": tracks,
            "ring_buffer_per_track_kib": _round(ring_bytes[0] / max_tracks[0] / 1024 if ring_bytes else None),
            "ring_buffers_per_camera_mib": _round(ring_bytes[0] / 2**20 if ring_bytes else None),
        },
    }


def _round(v: float | None, scale: float = 1.0, nd: int = 2) -> float | None:
    return None if v is None else round(v * scale, nd)


def machine_info() -> dict:
    import onnxruntime

    cpu_model = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"load_average_1m": round(os.getloadavg()[0], 2), "platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "processor": cpu_model, "numpy": np.__version__, "opencv": cv2.__version__,
            "onnxruntime": onnxruntime.__version__, "onnxruntime_providers": onnxruntime.get_available_providers(),
            "pyzmq": zmq.__version__}
    try:
        import torch
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
        info["cuda"] = None
    try:
        import tensorrt
        info["tensorrt"] = tensorrt.__version__
    except ImportError:
        info["tensorrt"] = None
    return info


def run_bench(cfg: Config, repeats: int = 5, cameras: tuple[int, ...] = (1,), frames_per_camera: int = 60,
              batches: tuple[int, ...] = (1, 8, 32), backends: tuple[str, ...] | None = None) -> dict:
    """Run every benchmark; returns a JSON-able dict.

    Keys: ``machine``, ``detector`` (engine and engine + PAF grouping, frames/s), ``recognizer``
    (the daemon's recogniser, windows/s per batch), ``backends`` (:func:`bench_backends`),
    ``end_to_end`` (one row per camera count: frames/s, event latency, memory,
    ``ratio_to_detector_only`` = end-to-end frames/s over detector-only frames/s at the batch size
    the stage formed, i.e. 1 - daemon overhead).
    """
    from pipeline.assets import recognizer_manifest
    from pipeline.daemon import load_models

    detector, recognizer = load_models(cfg, progress=True)
    rec_manifest = recognizer_manifest(cfg)
    result = {"machine": machine_info(), "settings": {"repeats": repeats, "cameras": list(cameras),
                                                      "frames_per_camera": frames_per_camera, "batches": list(batches)},
              "detector": bench_detector(cfg, detector, repeats),
              "recognizer": bench_recognizer(recognizer, repeats, batches, rec_manifest)}
    result["backends"] = bench_backends(rec_manifest, repeats, batches, cfg.recognizer.intra_op_threads, backends)
    del detector, recognizer
    result["end_to_end"] = [bench_end_to_end(cfg, n, frames_per_camera) for n in cameras]
    d = result["detector"]
    for row in result["end_to_end"]:
        b = cfg.detector.max_batch
        ref = d.get(f"engine_plus_grouping_batch{b}") if (row["mean_detector_batch"] or 1) > 1.5 else None
        ref = ref or d["engine_plus_grouping_batch1"]
        row["detector_only_per_s"] = ref["per_s"]
        row["ratio_to_detector_only"] = row["frames_per_s"] / ref["per_s"]
        row["daemon_overhead"] = 1 - row["ratio_to_detector_only"]
    return result


def format_table(result: dict) -> str:
    """The result as a readable text table."""
    mach = result["machine"]
    lines = [f"machine: {mach['platform']}, {mach['cpu_count']} cpus ({mach['processor']}), onnxruntime {mach['onnxruntime']}, "
             f"torch {mach.get('torch')}, gpu {mach.get('cuda')}, tensorrt {mach.get('tensorrt')}, "
             f"load average {mach.get('load_average_1m')} at start"]
    d = result["detector"]
    lines.append(f"detector {d['input_size'][0]}x{d['input_size'][1]} on {d['providers'][0]}:")
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"  {k:<34} {v['per_s']:9.1f} frames/s  ({1000 / v['per_s']:.1f} ms/frame, median of {v['repeats']})")
    r = result["recognizer"]
    lines.append(f"fused SARDE graph in the daemon, {r['providers'][0]} (model {r['model_id']}):")
    for k, v in r.items():
        if isinstance(v, dict):
            lines.append(f"  {k:<34} {v['per_s']:9.1f} windows/s (median of {v['repeats']})")
    bk = result.get("backends")
    if bk:
        batches = sorted({k for rows in bk["results"].values() for k in rows}, key=lambda s: int(s[5:]))
        lines.append("fused SARDE graph by backend, windows/s (x torch eager CPU):")
        lines.append("  " + f"{'backend':<24}" + "".join(f"{b:>20}" for b in batches))
        for name, rows in bk["results"].items():
            cells = []
            for b in batches:
                if b in rows:
                    ratio = bk["ratios_vs_torch_eager_cpu"].get(name, {}).get(b)
                    cells.append(f"{rows[b]['per_s']:9.1f} ({ratio:.2f}x)" if ratio is not None else f"{rows[b]['per_s']:9.1f}")
                else:
                    cells.append("-")
            lines.append("  " + f"{name:<24}" + "".join(f"{c:>20}" for c in cells))
        for name, why in bk["skipped"].items():
            lines.append(f"  skipped {name}: {why}")
    for row in result["end_to_end"]:
        lat, mem = row["event_latency_ms"], row["memory_mb"]
        lines.append(f"end to end, {row['cameras']} camera(s): {row['frames_per_s']:.1f} frames/s "
                     f"({row['frames']} frames, mean detector batch {row['mean_detector_batch']:.1f}, "
                     f"{row['ratio_to_detector_only']:.2f}x detector-only {row['detector_only_per_s']:.1f}/s, "
                     f"daemon overhead {100 * row['daemon_overhead']:.0f}%)")
        lines.append(f"  event latency p50 {lat['p50']} ms, p99 {lat['p99']} ms ({lat['samples']} events); "
                     f"memory: stage {mem['stage_end']} MiB, +{mem['stage_growth_per_camera']} MiB/camera in the stage, "
                     f"reader {mem['reader_per_camera']} MiB/camera, ring buffer {mem['ring_buffer_per_track_kib']} KiB/track "
                     f"({mem['live_tracks_at_end']} live tracks)")
    return "\n".join(lines)


def main(cfg: Config, out: Path | None, repeats: int, cameras: tuple[int, ...], frames_per_camera: int,
         batches: tuple[int, ...] = (1, 8, 32), backends: tuple[str, ...] | None = None) -> int:
    result = run_bench(cfg, repeats, cameras, frames_per_camera, batches, backends)
    print(format_table(result))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"wrote {out}")
    return 0
