"""``sarde bench``: throughput of the detector, the fused graph and the whole daemon, side by side.

Every figure is the median of ``repeats`` timed runs after warm-up, on real frames from the shared
videos; the output names the machine and library versions. End-to-end runs the real daemon
(reader processes, ZeroMQ, stage, events) on looped real clips for a fixed number of frames.
"""
from __future__ import annotations

import json
import logging
import multiprocessing as mp
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
    from pipeline.letterbox import letterbox

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


def bench_recognizer(recognizer, repeats: int, batches=(1, 8, 32)) -> dict:
    """Fused-graph windows/s at several batch sizes (onnxruntime), on windows with real-like content."""
    rng = np.random.default_rng(0)
    res = {"providers": recognizer.providers, "model_id": recognizer.model_id}
    shape = (3, recognizer.num_frames, recognizer.num_joints, recognizer.num_persons)
    for b in batches:
        x = rng.normal(0, 0.3, size=(b, *shape)).astype(np.float32)
        x[:, 2] = 1.0
        res[f"batch{b}"] = _median_rate(lambda: recognizer.classify(x), b, repeats)
    return res


def bench_end_to_end(cfg: Config, cameras: int, frames_per_camera: int) -> dict:
    """The real daemon on ``cameras`` looped real clips: frames/s over all cameras."""
    from pipeline.daemon import build_stage, reader_settings
    from pipeline.readers import reader_main

    cfg = cfg.model_copy(deep=True)
    cfg.sources = [SourceConfig(name=f"cam{i}", url=BENCH_CLIPS[i % len(BENCH_CLIPS)], loop=True, lossless=True) for i in range(cameras)]
    cfg.events.stdout = False
    cfg.events.pub_endpoint = None
    cfg.events.journal = None
    cfg.metrics.enabled = False
    cfg.transport.frames_endpoint = f"ipc:///tmp/sarde-bench-{os.getpid()}.sock"
    ctx = zmq.Context()
    with ExitStack() as stack:
        stack.callback(ctx.term)
        stage = build_stage(cfg, ctx, stack, [], progress=False)
        procs = [mp.get_context("spawn").Process(target=reader_main, args=(reader_settings(cfg, s, stage.input_size),), daemon=True)
                 for s in cfg.sources]
        for p in procs:
            p.start()
        total = cameras * frames_per_camera
        warm = 0
        while warm < cameras * 4:  # warm-up: readers connected, engines hot
            warm += stage.step(1000)
        done, t0 = 0, time.perf_counter()
        while done < total:
            done += stage.step(1000)
        elapsed = time.perf_counter() - t0
        for p in procs:
            p.terminate()
            p.join(5)
    return {"cameras": cameras, "frames": done, "seconds": elapsed, "frames_per_s": done / elapsed,
            "windows": stage.windows_total}


def machine_info() -> dict:
    import onnxruntime

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "processor": platform.processor() or platform.machine(), "numpy": np.__version__, "opencv": cv2.__version__,
            "onnxruntime": onnxruntime.__version__, "pyzmq": zmq.__version__}
    try:
        import torch
        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def run_bench(cfg: Config, repeats: int = 5, cameras: tuple[int, ...] = (1,), frames_per_camera: int = 60) -> dict:
    """Run every benchmark; returns a JSON-able dict."""
    from pipeline.daemon import load_models

    detector, recognizer = load_models(cfg, progress=True)
    result = {"machine": machine_info(), "detector": bench_detector(cfg, detector, repeats),
              "recognizer": bench_recognizer(recognizer, repeats), "end_to_end": []}
    for n in cameras:
        result["end_to_end"].append(bench_end_to_end(cfg, n, frames_per_camera))
    det_fps = result["detector"]["engine_plus_grouping_batch1"]["per_s"]
    for row in result["end_to_end"]:
        row["ratio_to_detector_only"] = row["frames_per_s"] / det_fps
    return result


def format_table(result: dict) -> str:
    lines = [f"machine: {result['machine']['platform']}, {result['machine']['cpu_count']} cpus, onnxruntime {result['machine']['onnxruntime']}"]
    d = result["detector"]
    lines.append(f"detector {d['input_size'][0]}x{d['input_size'][1]} on {d['providers'][0]}:")
    for k, v in d.items():
        if isinstance(v, dict):
            lines.append(f"  {k:<34} {v['per_s']:9.1f} frames/s  (median of {v['repeats']})")
    r = result["recognizer"]
    lines.append(f"fused SARDE graph on {r['providers'][0]} (model {r['model_id']}):")
    for k, v in r.items():
        if isinstance(v, dict):
            lines.append(f"  {k:<34} {v['per_s']:9.1f} windows/s (median of {v['repeats']})")
    for row in result["end_to_end"]:
        lines.append(f"end to end, {row['cameras']} camera(s): {row['frames_per_s']:.1f} frames/s "
                     f"({row['frames']} frames, {row['ratio_to_detector_only']:.2f}x detector-only)")
    return "\n".join(lines)


def main(cfg: Config, out: Path | None, repeats: int, cameras: tuple[int, ...], frames_per_camera: int) -> int:
    result = run_bench(cfg, repeats, cameras, frames_per_camera)
    print(format_table(result))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"wrote {out}")
    return 0
