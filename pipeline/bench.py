"""``sarde bench``: throughput of the detector, the fused graph and the whole daemon, side by side.

Every model figure is the median of ``repeats`` timed runs after warm-up
(:func:`export.backends.median_rate`), on real frames from the shared videos; the output names the
machine and library versions. The fused graph on every model backend (torch, CUDA graphs,
TensorRT, onnxruntime providers) is :func:`export.backends.bench_backends`. End-to-end runs the
real daemon's threaded path (reader processes, ZeroMQ, ``Stage.run``, events) on looped real clips
for a fixed number of frames. This module orchestrates them and formats the table; it imports
without torch or onnx.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import cv2
import numpy as np
import zmq

from export.backends import bench_backends, bench_windows, library_versions, median_rate
from pipeline.config import Config, SourceConfig

log = logging.getLogger(__name__)

BENCH_CLIPS = ("videos/vtest/vtest.avi", "videos/openpose/street.avi", "videos/pyskl/ntu_hug.avi", "videos/stgcn/ta_chi.mp4")

#: What an end-to-end ``frames_per_s`` means (the ``definition`` of every ``end_to_end`` row).
END_TO_END_DEFINITION = (
    "frames that reached the detector (sarde_frames_processed_total: through the pose engine and PAF "
    "grouping, as the detector-only figure counts them), all cameras, from the end of warm-up "
    "(4 frames per camera) until cameras x frames_per_camera more were counted, divided by that wall "
    "time; the daemon's threaded path (Stage.run: engine thread + post-processing thread) fed by one "
    "reader process per camera in lossless looping file mode over ZeroMQ ipc")

#: Frames per camera through the detector before the end-to-end clock starts.
WARMUP_FRAMES_PER_CAMERA = 4


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
    """Detector frames/s (engine + PAF grouping) and the engine alone, batch 1 and max_batch; the
    same weights with onnxruntime's CPU memory arena the other way (``detector.cpu_memory_arena``)
    and with memory patterns on (the session default the daemon turns off,
    ``engines.runtime.create_session``), side by side; compute figures; INT8 side by side."""
    frames = _frames(cfg, detector.input_size, 8)
    res = {"input_size": list(detector.input_size), "providers": detector.providers}
    res["engine_batch1"] = median_rate(lambda: [detector.raw(frames[i:i + 1]) for i in range(4)], 4, repeats)
    b = cfg.detector.max_batch
    res.update(_grouped_rates(detector, frames, b, repeats, ""))
    arena = bool(cfg.detector.cpu_memory_arena)
    res.update(_grouped_rates(_variant(cfg, detector, memory_arena=not arena), frames, b, repeats,
                              "_arena_off" if arena else "_arena_on"))
    res["cpu_memory_arena"] = arena
    res.update(_grouped_rates(_variant(cfg, detector, memory_arena=arena, memory_pattern=True), frames, b, repeats,
                              "_pattern_on"))
    res["compute"] = detector_compute(detector, res["engine_batch1"]["per_s"])
    res["int8"] = bench_int8(cfg, detector, frames, repeats)
    return res


def _variant(cfg: Config, detector, manifest: Path | None = None, **session):
    """A new detector session with the configured detector's decoder and threads: its weights (or
    ``manifest``'s) with other onnxruntime ``session`` options."""
    from engines.detector import PoseDetector

    return PoseDetector(manifest or detector.manifest_path, providers=cfg.detector.providers, decoder=detector.decoder,
                        intra_op_threads=cfg.detector.intra_op_threads, **session)


def _grouped_rates(detector, frames, batch: int, repeats: int, tag: str) -> dict:
    """Engine + PAF grouping frames/s at batch 1 (and ``batch`` if > 1), keyed with ``tag``."""
    res = {f"engine_plus_grouping_batch1{tag}": median_rate(lambda: [detector.infer(frames[i:i + 1]) for i in range(4)],
                                                            4, repeats)}
    if batch > 1:
        res[f"engine_plus_grouping_batch{batch}{tag}"] = median_rate(lambda: detector.infer(frames[:batch]), batch, repeats)
    return res


def cpu_peak_gflops() -> dict:
    """Estimated FP32 peak of this CPU: cores x clock x FLOP per cycle.

    FLOP per cycle = 2 (a fused multiply-add) x FP32 lanes per FMA pipe x FMA pipes, from the
    ``/proc/cpuinfo`` flags: AVX-512 (``avx512f``) 16 lanes on Intel, 8 on AMD (Zen 4 executes 512-bit
    operations on 256-bit units), AVX2 + FMA 8 lanes, else 4 (SSE); 2 FMA pipes. The clock is
    ``cpu MHz`` of ``/proc/cpuinfo`` (nominal in a VM; turbo is not counted), cores ``os.cpu_count()``
    (the vCPUs onnxruntime's intra-op pool uses by default). An estimate, stated with its inputs."""
    flags, mhz, vendor = set(), None, ""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "flags" and not flags:
                flags = set(value.split())
            elif key == "cpu MHz" and mhz is None:
                mhz = float(value)
            elif key == "vendor_id" and not vendor:
                vendor = value.strip()
    except (OSError, ValueError):
        pass
    if "avx512f" in flags:
        lanes, isa = (8 if vendor == "AuthenticAMD" else 16), "AVX-512"
    elif "avx2" in flags and "fma" in flags:
        lanes, isa = 8, "AVX2+FMA"
    else:
        lanes, isa = 4, "SSE"
    cores = os.cpu_count() or 1
    per_cycle = 2 * lanes * 2
    peak = cores * (mhz or 0.0) / 1000.0 * per_cycle
    return {"peak_gflops": round(peak, 1) if mhz else None, "cores": cores, "clock_mhz": mhz, "isa": isa,
            "vendor": vendor, "flop_per_cycle_per_core": per_cycle,
            "how": f"{cores} cores x {mhz} MHz x {per_cycle} FLOP/cycle (2 FMA x {lanes} FP32 lanes x 2 pipes, {isa})"}


def detector_compute(detector, frames_per_s: float) -> dict:
    """GFLOP per frame of the detector graph (:func:`export.graph_passes.conv_flops`, needs onnx),
    the GFLOP/s it achieves at ``frames_per_s`` and its share of :func:`cpu_peak_gflops`."""
    peak = cpu_peak_gflops()
    try:
        from export.graph_passes import conv_flops

        w, h = detector.input_size
        g = conv_flops(detector.model.path, {detector.input_name: (1, h, w, 3)})["gflop"]
    except (ImportError, ValueError, AttributeError) as exc:
        return {"skipped": f"cannot count the detector's FLOP ({exc})", **peak}
    achieved = g * frames_per_s
    return {"gflop_per_frame": g, "achieved_gflops": round(achieved, 1),
            "share_of_peak": round(achieved / peak["peak_gflops"], 3) if peak["peak_gflops"] else None, **peak}


def bench_int8(cfg: Config, detector, frames, repeats: int) -> dict:
    """The INT8 model of the same weights (:func:`pipeline.assets.ensure_int8_detector`, made on
    first use) side by side with the FP32 one: engine frames/s at batch 1 of both in the same run,
    their ratio, and the INT8 model's gate verdict against this config's limits (what decides
    whether the daemon uses it, :func:`pipeline.assets.detector_manifest`)."""
    from pipeline.assets import StartupError, ensure_int8_detector, int8_gate

    fp32 = Path(detector.manifest_path)
    if json.loads(fp32.read_text()).get("precision", "fp32") != "fp32":
        return {"skipped": "the configured detector is already the INT8 model"}
    try:
        path = ensure_int8_detector(cfg, fp32)
    except StartupError as exc:
        return {"skipped": str(exc)}
    int8 = _variant(cfg, detector, path, memory_arena=cfg.detector.cpu_memory_arena)
    a = median_rate(lambda: [detector.raw(frames[i:i + 1]) for i in range(4)], 4, repeats)
    b = median_rate(lambda: [int8.raw(frames[i:i + 1]) for i in range(4)], 4, repeats)
    gate = int8_gate(cfg, path)
    return {"manifest": path.name, "fp32_engine_batch1": a, "int8_engine_batch1": b,
            "speedup": round(b["per_s"] / a["per_s"], 3),
            "gate": {k: gate[k] for k in ("passed", "failed", "persons_lost", "persons_added", "median_joint_error_px",
                                          "p95_joint_error_px")}}


def bench_recognizer(recognizer, repeats: int, batches=(1, 8, 32), manifest_path: Path | None = None) -> dict:
    """Fused-graph windows/s at several batch sizes through the daemon's recogniser (onnxruntime)."""
    res = {"providers": recognizer.providers, "model_id": recognizer.model_id}
    shape = (3, recognizer.num_frames, recognizer.num_joints, recognizer.num_persons)
    for b in batches:
        x = bench_windows(shape, b, manifest_path)
        res[f"batch{b}"] = median_rate(lambda: recognizer.classify(x), b, repeats)
    return res


class _Recorder:
    """Stands in for a prometheus Histogram (labelled or not): records every observation and forwards it."""

    def __init__(self, inner, values: list[float] | None = None):
        self.inner = inner
        self.values: list[float] = [] if values is None else values

    def labels(self, *args, **kwargs) -> "_Recorder":
        return _Recorder(self.inner.labels(*args, **kwargs), self.values)

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


def _frames_at_detector(stage, cameras: list[str]) -> int:
    """Frames of ``cameras`` through the pose engine and PAF grouping so far (``sarde_frames_processed_total``)."""
    reg = stage.metrics.registry
    return int(sum(reg.get_sample_value("sarde_frames_processed_total", {"camera": c}) or 0 for c in cameras))


#: Stage histograms whose sums make the per-stage breakdown: name -> (histogram, what it times).
BREAKDOWN = {
    "detector_engine": ("sarde_detector_latency_seconds", "pose engine (onnxruntime), engine thread"),
    "paf_grouping": ("sarde_grouping_latency_seconds", "PAF grouping, post thread"),
    "tracking_windows": ("sarde_tracking_latency_seconds", "tracking, window buffers, scheduling (incl. windows flushed at track ends), post thread"),
    "recognizer": ("sarde_recognizer_latency_seconds", "fused SARDE graph, post thread"),
    "events_out": ("sarde_emit_latency_seconds", "journal, PUB, MQTT, stdout, post thread"),
}


def _sums(stage) -> dict[str, float]:
    """Seconds spent so far in each :data:`BREAKDOWN` part (histogram ``_sum``)."""
    reg = stage.metrics.registry
    return {k: reg.get_sample_value(f"{h}_sum") or 0.0 for k, (h, _) in BREAKDOWN.items()}


def _batch_histogram(stage) -> tuple[float, float]:
    """``(frames, batches)`` of the detector batch histogram so far (``sarde_detector_batch_size`` sum, count)."""
    reg = stage.metrics.registry
    return (reg.get_sample_value("sarde_detector_batch_size_sum") or 0.0,
            reg.get_sample_value("sarde_detector_batch_size_count") or 0.0)


def bench_end_to_end(cfg: Config, cameras: int, frames_per_camera: int) -> dict:
    """The real daemon on ``cameras`` looped real clips: frames/s over all cameras.

    Runs what ``sarde run`` runs: :func:`pipeline.daemon.build_stage`, one reader process per
    camera (:func:`pipeline.daemon.start_readers`, lossless file mode, looping), and the two-thread
    ``Stage.run``. The ``idle`` callback (main thread, after every batch) starts the clock once
    :data:`WARMUP_FRAMES_PER_CAMERA` frames per camera reached the detector, stops it when
    ``cameras * frames_per_camera`` more did (:data:`END_TO_END_DEFINITION`), takes the memory
    figures, then ends every camera (as the daemon ends a camera whose reader is gone) so that
    ``Stage.run`` returns through ``end_when_all_eos``.

    Also: event latency (receipt of the frame that completes a window -> event published on the
    PUB socket) p50/p99 in ms, with event thresholds lowered so every classified window publishes
    an event; resident memory of the stage process and of each reader process, MiB; the mean
    detector batch the stage formed.

    Raises:
        RuntimeError: a reader process exited before the measurement ended (source unreadable).
    """
    from pipeline.daemon import _stop_processes, build_stage, reader_settings, start_readers

    cfg = cfg.model_copy(deep=True)
    cfg.sources = [SourceConfig(name=f"cam{i}", url=BENCH_CLIPS[i % len(BENCH_CLIPS)], loop=True, lossless=True) for i in range(cameras)]
    cfg.events.stdout = False
    cfg.events.pub_endpoint = f"ipc:///tmp/sarde-bench-events-{os.getpid()}.sock"
    cfg.events.journal = None
    cfg.events = cfg.events.model_copy(update={"threshold": 0.01, "end_threshold": 0.005, "ignore_labels": []})
    cfg.metrics.enabled = False
    cfg.web.enabled = False
    cfg.media.snapshot_dir = cfg.media.overlay_dir = None  # thresholds near 0 give an event per window
    cfg.transport.frames_endpoint = f"ipc:///tmp/sarde-bench-{os.getpid()}.sock"
    names = [s.name for s in cfg.sources]
    total = cameras * frames_per_camera
    ctx = zmq.Context()
    with ExitStack() as stack:
        stack.callback(ctx.term)
        # expected_files = every camera: Stage.run returns once all of them ended (end_when_all_eos).
        stage = build_stage(cfg, ctx, stack, names, progress=False)
        latency = _Recorder(stage.metrics.event_latency)
        stage.metrics.event_latency = latency
        procs = start_readers([reader_settings(cfg, s, stage.input_size) for s in cfg.sources])
        stack.callback(_stop_processes, procs)
        stop = threading.Event()
        m: dict = {}  # figures taken by idle() on the main thread

        def idle() -> None:
            if "t1" in m:
                return
            frames = _frames_at_detector(stage, names)
            now = time.perf_counter()
            if "t0" not in m:
                if frames < cameras * WARMUP_FRAMES_PER_CAMERA:  # readers connected, engines hot
                    dead = [(p.name, p.exitcode) for p in procs if not p.is_alive()]
                    if dead:
                        m["failed"] = dead
                        stop.set()
                    return
                latency.values.clear()
                m.update(t0=now, frames0=frames, batch0=_batch_histogram(stage), sums0=_sums(stage),
                         rss_models=_rss_mb())  # engines hot (arenas allocated), cameras just started
                return
            if frames - m["frames0"] < total:
                dead = [(p.name, p.exitcode) for p in procs if not p.is_alive()]
                if dead:
                    m["failed"] = dead
                    stop.set()
                return
            m.update(t1=now, frames=frames - m["frames0"], batch1=_batch_histogram(stage), sums1=_sums(stage),
                     rss_stage=_rss_mb(),
                     rss_readers=[_rss_mb(p.pid) for p in procs], latency=list(latency.values),
                     windows=stage.windows_total, events=stage.events_total,
                     tracks=sum(len(c.buffers.track_ids) for c in stage.cameras.values()),
                     ring_bytes=[c.buffers.keypoints.nbytes + c.buffers.frames.nbytes + c.buffers.timestamps.nbytes
                                 for c in stage.cameras.values()],
                     max_tracks=[c.buffers.max_tracks for c in stage.cameras.values()])
            _stop_processes(procs)  # the figures are taken; frames still on the way would only be rejected
            for name in names:
                stage.end_camera_by_name(name)

        stage.run(stop, idle=idle)
    if "failed" in m:
        raise RuntimeError(f"bench reader process(es) exited before the measurement ended: {m['failed']}")
    elapsed = m["t1"] - m["t0"]
    done = m["frames"]
    batch_frames, batches = (a - b for a, b in zip(m["batch1"], m["batch0"]))
    rss_models, rss_stage, ring_bytes, max_tracks = m["rss_models"], m["rss_stage"], m["ring_bytes"], m["max_tracks"]
    readers = [r for r in m["rss_readers"] if r is not None]
    stage_delta = (rss_stage - rss_models) if rss_stage is not None and rss_models is not None else None
    return {
        "cameras": cameras, "frames": done, "seconds": elapsed, "frames_per_s": done / elapsed,
        "definition": END_TO_END_DEFINITION,
        # the stage's process: torch / tensorflow must not be in it (the daemon runs without them)
        "heavy_modules_loaded": sorted(k for k in ("torch", "tensorflow", "tf2onnx", "onnx") if k in sys.modules),
        "windows": m["windows"], "events": m["events"],
        "mean_detector_batch": batch_frames / batches if batches else None,
        # ms per frame and share of wall time of each part (the two stage threads overlap, so shares can
        # add up to more than 1); decode, letterbox and transport run in the reader processes
        "breakdown": {k: {"ms_per_frame": _round(1000 * (m["sums1"][k] - m["sums0"][k]) / done if done else None),
                          "share_of_wall": _round((m["sums1"][k] - m["sums0"][k]) / elapsed, nd=3),
                          "what": BREAKDOWN[k][1]} for k in BREAKDOWN},
        "event_latency_ms": {"p50": _round(_percentile(m["latency"], 50), 1000),
                             "p99": _round(_percentile(m["latency"], 99), 1000), "samples": len(m["latency"])},
        "memory_mb": {
            "stage_after_warmup": _round(rss_models), "stage_end": _round(rss_stage),
            "stage_growth_per_camera": _round(stage_delta / cameras if stage_delta is not None else None),
            "reader_per_camera": _round(float(np.mean(readers)) if readers else None),
            "per_camera_total": _round((stage_delta / cameras + float(np.mean(readers)))
                                       if stage_delta is not None and readers else None),
            "live_tracks_at_end": m["tracks"],
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
    info.update(library_versions())
    return info


def in_fresh_process(fn, *args):
    """``fn(*args)`` in a new spawned process (returns its result, re-raises its error): the
    end-to-end figures, memory above all, are the daemon's own, not those of this process, which has
    torch (the backend comparison) and the benchmark's extra sessions loaded."""
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=_run_child, args=(results, fn, args), name="sarde-bench-e2e")  # not daemonic: it starts readers
    proc.start()
    try:
        while True:
            try:
                ok, value = results.get(timeout=1.0)
                break
            except queue.Empty:
                if not proc.is_alive():
                    raise RuntimeError(f"the benchmark process exited with code {proc.exitcode} before reporting")
    finally:
        proc.join(30)
    if not ok:
        raise RuntimeError(f"the benchmark process failed: {value}")
    return value


def _run_child(results, fn, args) -> None:
    try:
        results.put((True, fn(*args)))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        results.put((False, f"{type(exc).__name__}: {exc}"))


def run_bench(cfg: Config, repeats: int = 5, cameras: tuple[int, ...] = (1,), frames_per_camera: int = 60,
              batches: tuple[int, ...] = (1, 8, 32), backends: tuple[str, ...] | None = None) -> dict:
    """Run every benchmark; returns a JSON-able dict.

    Keys: ``machine``, ``detector`` (engine and engine + PAF grouping, frames/s), ``recognizer``
    (the daemon's recogniser, windows/s per batch), ``backends``
    (:func:`export.backends.bench_backends`), ``end_to_end`` (one row per camera count,
    :func:`bench_end_to_end` in a fresh process each (:func:`in_fresh_process`): frames/s with its ``definition``, event latency, memory,
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
    result["end_to_end"] = [in_fresh_process(bench_end_to_end, cfg, n, frames_per_camera) for n in cameras]
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
        if isinstance(v, dict) and "per_s" in v:
            lines.append(f"  {k:<34} {v['per_s']:9.1f} frames/s  ({1000 / v['per_s']:.1f} ms/frame, median of {v['repeats']})")
    c = d.get("compute", {})
    if "achieved_gflops" in c:
        lines.append(f"  compute: {c['gflop_per_frame']} GFLOP/frame -> {c['achieved_gflops']} GFLOP/s at batch 1, "
                     f"{100 * (c['share_of_peak'] or 0):.0f} % of the estimated peak {c['peak_gflops']} GFLOP/s ({c['how']})")
    q = d.get("int8", {})
    if "skipped" in q:
        lines.append(f"  INT8: skipped ({q['skipped']})")
    elif q:
        g = q["gate"]
        lines.append(f"  INT8 engine batch 1: {q['int8_engine_batch1']['per_s']:.1f} frames/s vs FP32 "
                     f"{q['fp32_engine_batch1']['per_s']:.1f} side by side ({q['speedup']:.2f}x); gate "
                     f"{'passed' if g['passed'] else 'FAILED ' + ', '.join(g['failed'])} (persons lost {g['persons_lost']}, "
                     f"added {g['persons_added']}, joint error median {g['median_joint_error_px']} px, "
                     f"p95 {g['p95_joint_error_px']} px): the daemon {'may use' if g['passed'] else 'keeps FP32 instead of'} it")
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
    if result["end_to_end"]:
        lines.append("end to end = frames that reached the detector / wall time, in the daemon's threaded Stage.run "
                     "(definition in the JSON):")
    for row in result["end_to_end"]:
        lat, mem = row["event_latency_ms"], row["memory_mb"]
        lines.append(f"end to end, {row['cameras']} camera(s): {row['frames_per_s']:.1f} frames/s "
                     f"({row['frames']} frames, mean detector batch {row['mean_detector_batch']:.1f}, "
                     f"{row['ratio_to_detector_only']:.2f}x detector-only {row['detector_only_per_s']:.1f}/s, "
                     f"daemon overhead {100 * row['daemon_overhead']:.0f}%)")
        lines.append("  where the time goes (ms/frame, share of wall time): " + ", ".join(
            f"{k} {v['ms_per_frame']} ({100 * v['share_of_wall']:.0f}%)" for k, v in row["breakdown"].items()
            if v["ms_per_frame"] is not None))
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


def main_models(cfg: Config, out: Path | None, variants: tuple[str, ...], repeats: int,
                batches: tuple[int, ...] = (1, 8)) -> int:
    """``sarde bench --models``: the recogniser architectures side by side (:func:`export.compare.compare_models`),
    timed on the config's default model's real windows when it exists."""
    from export.compare import DEFAULT_VARIANTS, compare_models, format_comparison
    from pipeline.assets import StartupError, recognizer_manifest

    try:
        manifest = recognizer_manifest(cfg)
    except StartupError:  # no model: synthetic windows
        manifest = None
    result = {"machine": machine_info(),
              "models": compare_models(variants or DEFAULT_VARIANTS, repeats=repeats, batches=batches,
                                       manifest_path=manifest, threads=cfg.recognizer.intra_op_threads)}
    print(format_comparison(result["models"]))
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        print(f"wrote {out}")
    return 0
