"""Detector recordings of labelled clips, made by the daemon itself and cached, for training and evaluation.

:func:`ensure_recordings` runs the real daemon path (reader processes decode, decimate to the model
frame rate and letterbox; the stage batches, detects, groups with PAFs, tracks and builds windows
exactly as in deployment) in record-only mode (``recognizer.model: none``, ``record_poses``) over the
clips of a clip list (``pipeline.clips``), a few clips at a time as parallel cameras. Each clip's
recording is cached under ``artifact_dir/recordings/<key>/`` where ``key`` hashes everything that
changes the output: the detector ONNX (sha256), the decoder, tracker and window settings, and the clip
file itself (sha256). A second call with the same settings reads the cache and runs nothing.

:func:`clip_npz` turns one cached recording into the generic ``.npz`` training format
(``engines.datasets.generic``) through ``engines.sarde.datasets.recording_sequences``: one sequence
per window the stage built, with the clip's label inherited as that module documents.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from pipeline.clips import Clip
from pipeline.config import Config, SourceConfig

log = logging.getLogger(__name__)

#: Clips recorded together, as parallel cameras of one stage run.
BATCH_CLIPS = 8


def _file_sha(path: Path) -> str:
    from engines.manifest import sha256_file

    return sha256_file(path)


def recording_key(cfg: Config, detector_manifest: Path) -> str:
    """12 hex digits identifying the detector + decoder + tracker + window settings of a recording."""
    manifest = json.loads(Path(detector_manifest).read_text())
    r, t, d = cfg.recognizer, cfg.tracking, cfg.detector
    settings = {
        "onnx_sha256": manifest.get("onnx_sha256"), "decoder": [d.peak_threshold, d.paf_threshold, d.min_parts, d.min_person_score],
        **({"clahe_clip": d.clahe_clip} if d.clahe_clip else {}),  # absent when off: earlier keys stay valid
        **({"duplicate_distance": d.duplicate_distance} if d.duplicate_distance else {}),
        "tracking": [t.max_age, t.max_distance, t.min_joints],
        "windows": [r.num_frames, r.num_persons, r.fps, r.stride, r.min_frames, r.pair_distance],
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]


def ensure_recordings(cfg: Config, clips: list[Clip], progress: bool = True) -> dict[str, Path]:
    """Cached daemon recordings of ``clips``; records the missing ones first.

    Args:
        cfg: the daemon config (paths, detector, tracking, recognizer window settings).
        clips: resolved clips (``pipeline.clips.load_clip_list``).
        progress: a tqdm bar over the clips being recorded.

    Returns:
        ``{clip_id: base path}``; ``<base>.poses.jsonl`` holds every processed frame's persons with
        track ids (``pipeline.recorder`` format) and ``<base>.windows.jsonl`` the windows the stage built.

    Raises:
        StartupError: the detector is missing or cannot be converted.
    """
    from pipeline.assets import detector_manifest

    det = detector_manifest(cfg)
    root = cfg.paths.artifact_dir / "recordings" / recording_key(cfg, det)
    root.mkdir(parents=True, exist_ok=True)
    bases = {c.clip_id: root / _file_sha(c.path)[:16] for c in clips}
    todo = [c for c in clips if not bases[c.clip_id].with_suffix(".done").is_file()]
    if todo:
        log.info("recording %d of %d clips with the daemon (detector %s) under %s", len(todo), len(clips), det.stem, root)
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(todo), desc="detector pass over training clips", unit="clip")
        for i in range(0, len(todo), BATCH_CLIPS):
            batch = todo[i:i + BATCH_CLIPS]
            _record_batch(cfg, batch, {c.clip_id: bases[c.clip_id] for c in batch})
            if bar is not None:
                bar.update(len(batch))
        if bar is not None:
            bar.close()
    return bases


def clips_run_config(cfg: Config, clips: list[Clip], tmp: Path, model: str, journal: Path | None):
    """A copy of ``cfg`` that runs ``clips`` as cameras ``c0, c1, ...`` of one offline daemon run.

    Lossless file readers, no event publishing, stdout, metrics, web page, snapshots or clips; frames over an ``ipc://`` socket
    in ``tmp``; every frame and window recorded to ``tmp/rec.jsonl`` (+ ``rec.windows.jsonl``).

    Args:
        model: ``recognizer.model`` (``"none"`` = record-only, or a manifest path).
        journal: the event journal file, or None.

    Returns:
        ``(config, {camera name: clip})``.
    """
    names = {f"c{i}": c for i, c in enumerate(clips)}
    run = cfg.model_copy(deep=True)
    run.sources = [SourceConfig(name=n, url=str(c.path)) for n, c in names.items()]
    run.recognizer.model = model
    run.record_poses = tmp / "rec.jsonl"
    run.events.journal = journal
    run.events.pub_endpoint = None
    run.events.stdout = False
    run.metrics.enabled = False
    run.web.enabled = False
    run.media.snapshot_dir = run.media.overlay_dir = None  # events are what is measured, not pictures
    run.transport.frames_endpoint = f"ipc://{tmp}/frames.sock"
    run.transport.frames_bind = None
    return run, names


def _record_batch(cfg: Config, clips: list[Clip], bases: dict[str, Path]) -> None:
    from pipeline.daemon import run_all

    tmp = Path(tempfile.mkdtemp(prefix="sarde-rec-"))
    try:
        rec, names = clips_run_config(cfg, clips, tmp, model="none", journal=None)
        run_all(rec, progress=False)
        poses: dict[str, list[str]] = {n: [] for n in names}
        windows: dict[str, list[str]] = {n: [] for n in names}
        for path, out in ((tmp / "rec.jsonl", poses), (tmp / "rec.windows.jsonl", windows)):
            if path.is_file():
                for line in path.read_text(encoding="utf-8").splitlines():
                    cam = json.loads(line)["camera"]
                    out[cam].append(line)
        for n, clip in names.items():
            base = bases[clip.clip_id]
            for suffix, lines in ((".poses.jsonl", poses[n]), (".windows.jsonl", windows[n])):
                part = base.with_name(base.name + suffix + ".tmp")
                part.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
                os.replace(part, base.with_name(base.name + suffix))
            base.with_suffix(".done").write_text(json.dumps({"clip": clip.clip_id, "path": str(clip.path),
                                                             "frames": len(poses[n]), "windows": len(windows[n])}))
            if not poses[n]:
                log.warning("clip %s gave no frames (unreadable video?)", clip.clip_id)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clip_npz(clip: Clip, base: Path, out: Path, num_frames: int) -> Path | None:
    """Generic ``.npz`` of one recorded clip (``engines.sarde.datasets.recording_sequences``); None when
    the clip gave no window. ``subjects`` of the file = the clip's CV group."""
    from engines.datasets.generic import save_npz
    from engines.sarde.datasets import recording_sequences

    seqs = recording_sequences(base.with_name(base.name + ".poses.jsonl"), base.with_name(base.name + ".windows.jsonl"),
                               clip_label=clip.label, group=clip.group, name=clip.clip_id, num_frames=num_frames)
    if not seqs:
        return None
    return save_npz(out, seqs, num_persons=2)


def resolve_recipe(cfg: Config, recipe: dict, progress: bool = True,
                   exclude_groups: dict[str, list[str]] | None = None) -> dict:
    """A copy of ``recipe`` whose ``reader: recordings`` datasets point at generic ``.npz`` files.

    A recordings entry names a clip list (``clips: configs/clips/NAME.yaml``, relative to the
    repository or absolute); its clips are recorded by the daemon (:func:`ensure_recordings`), each
    converted once by :func:`clip_npz`, and the entry becomes ``reader: npz, files: [...]`` for the
    training layer. ``exclude_groups`` maps a dataset name to CV groups left out of its training part
    (``exclude_subjects``), for cross-validation by source video.

    Raises:
        ConfigError: an invalid clip list. StartupError: the detector is missing.
    """
    from pipeline.clips import load_clip_list

    out = json.loads(json.dumps(recipe))  # deep copy, plain types
    repo = Path(__file__).resolve().parents[1]
    for entry in out.get("datasets") or []:
        if not isinstance(entry, dict) or entry.get("reader") != "recordings":
            continue
        clips_path = Path(str(entry.pop("clips", "")))
        if not clips_path.is_absolute():
            clips_path = repo / clips_path
        clips = load_clip_list(clips_path, cfg.paths.data_dir)
        bases = ensure_recordings(cfg, clips, progress)
        files = []
        for clip in clips:
            base = bases[clip.clip_id]
            tag = hashlib.sha256(json.dumps([clip.label, clip.group, cfg.recognizer.num_frames]).encode()).hexdigest()[:8]
            npz = base.with_name(f"{base.name}.{tag}.npz")
            if not npz.is_file() and not base.with_name(f"{base.name}.{tag}.empty").is_file():
                if clip_npz(clip, base, npz, cfg.recognizer.num_frames) is None:
                    base.with_name(f"{base.name}.{tag}.empty").write_text(clip.clip_id)
            if npz.is_file():
                files.append(str(npz))
        entry["reader"] = "npz"
        entry["files"] = files
        if exclude_groups and entry.get("name") in exclude_groups:
            entry["exclude_subjects"] = sorted(set(entry.get("exclude_subjects", [])) | set(exclude_groups[entry["name"]]))
    return out
