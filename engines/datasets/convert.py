"""Converters from a site's own skeleton data to COCO-18 sequences and the generic ``.npz``.

The public path of "Train on your own data" (README; ``sarde data convert``, :mod:`pipeline.data_cli`):
any skeleton layout, 2D pixels or metric 3D camera coordinates, regular or irregular timestamps,
labelled whole sequences or labelled time segments, in; :class:`engines.datasets.SkeletonSequence`
records in COCO-18 (and :func:`engines.datasets.generic.save_npz`) out.

**Skeleton JSON lines** (:func:`read_skeleton_jsonl`), one sequence per line::

    {"name": "a01_s01_t01",            # unique id (segments refer to it)
     "label": "wave" | null,           # class name of the whole sequence (or give segments)
     "subject": "s01" | 1 | null,      # group for cross-subject / cross-source splits
     "joints": [[[[x, y, ...], ...J joints], ...M persons], ...T frames],
     "t": [0.0, 0.033, ...],           # optional: T timestamps in seconds (may be irregular)
     "fps": 30.0}                      # optional: constant frame rate when there is no "t"

``joints`` is a ``T x M x J x C`` array (absent persons / joints: ``null`` entries or score 0):

* ``coords="pixels"``: ``C`` = 2 (``x, y``) or 3 (``x, y, score``), pixels of a ``frame_size`` image,
  origin top-left, y down.
* ``coords="camera"``: ``C`` = 3 (``x, y, z``) or 4 (``x, y, z, score``), metres in the recording
  camera's frame. ``axes`` says how that frame maps onto OpenCV's (x right, y down, z forward): e.g.
  ``"-x,-y,z"`` for Kinect skeleton space (x towards the sensor's left, y up), which also un-mirrors
  the image as a real camera sees it. Pixels come from the pinhole :class:`Pinhole` (``u = cx + fx X/Z``,
  ``v = cy + fy Y/Z``); ``depth`` = ``Z`` and ``points3d`` are kept, so the data can supervise SARDE's
  depth estimator (Eq. 4) and be re-projected through virtual cameras (``engines.sarde.views``).

The joint map (:class:`engines.layouts.JointMap`, ``configs/joint_maps/*.yaml``) gathers the ``J``
source joints into COCO-18. Irregular timestamps are resampled to a constant rate
(:func:`resample_to_rate`). Labelled time segments (:func:`read_segments`, a CSV) cut sequences or
daemon recordings (:func:`read_recording`) into labelled sub-sequences (:func:`cut_segments`).
"""
from __future__ import annotations

import collections
import csv
import json
import logging
import math
import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engines.datasets import SkeletonSequence
from engines.layouts import NUM_JOINTS, JointMap

log = logging.getLogger(__name__)

COORDS = ("pixels", "camera")


class ConvertError(ValueError):
    """Input that the converter cannot read; the message names the file, line and field."""


@dataclass(frozen=True)
class Pinhole:
    """A pinhole camera: focal lengths and principal point in pixels, image size in pixels.

    :meth:`project` maps OpenCV-frame metres (x right, y down, z forward) to pixels, origin
    top-left: ``u = cx + fx X / Z``, ``v = cy + fy Y / Z`` (no lens distortion).
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def project(self, points: np.ndarray) -> np.ndarray:
        """``(..., 3)`` metres -> ``(..., 2)`` float32 pixels; points with ``Z <= 0`` give ``(cx, cy)``."""
        p = np.asarray(points, np.float64)
        z = np.where(p[..., 2] > 0, p[..., 2], np.inf)
        return np.stack([self.cx + self.fx * p[..., 0] / z, self.cy + self.fy * p[..., 1] / z], -1).astype(np.float32)


_AXIS = re.compile(r"^([+-]?)([xyz])$")


def to_opencv_frame(points: np.ndarray, axes: str = "x,y,z") -> np.ndarray:
    """Re-express camera-space points in OpenCV's frame (x right, y down, z forward).

    Args:
        points: ``(..., 3)`` metres in the source frame.
        axes: the OpenCV ``X, Y, Z`` as signed source axes, e.g. ``"-x,-y,z"`` (Kinect skeleton space).

    Raises:
        ConvertError: ``axes`` is not a signed permutation of x, y, z.
    """
    parts = [p.strip() for p in axes.split(",")]
    matches = [_AXIS.match(p) for p in parts]
    if len(parts) != 3 or not all(matches) or sorted(m.group(2) for m in matches) != ["x", "y", "z"]:
        raise ConvertError(f"axes {axes!r}: need a signed permutation of x,y,z such as -x,-y,z")
    p = np.asarray(points, np.float32)
    return np.stack([(-1.0 if m.group(1) == "-" else 1.0) * p[..., "xyz".index(m.group(2))] for m in matches], -1)


def resample_to_rate(t: np.ndarray, values: np.ndarray, valid: np.ndarray, fps: float,
                     max_gap_s: float = 0.25) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resample irregularly timed samples to a constant frame rate by linear interpolation.

    Each joint is interpolated between its two nearest *valid* samples around the new time; it is
    invalid at a new time whose valid neighbours are more than ``max_gap_s`` apart (a tracking gap
    stays a gap) or that lies outside its valid samples.

    Args:
        t: ``(T,)`` seconds, non-decreasing (duplicates: the later sample wins).
        values: ``(T, ..., C)`` float (coordinates, depth, ...), any trailing shape.
        valid: ``values.shape[:-1]`` bool.
        fps: the new constant rate, frames/s.
        max_gap_s: longest gap, seconds, bridged by interpolation.

    Returns:
        ``(t_new (T',), values_new (T', ..., C) float32, valid_new (T', ...) bool)``, with
        ``t_new = t[0] + k / fps`` for ``k = 0 .. floor((t[-1] - t[0]) fps)``.

    Raises:
        ConvertError: ``t`` is not finite and non-decreasing, or shapes disagree.
    """
    t = np.asarray(t, np.float64)
    values, valid = np.asarray(values, np.float32), np.asarray(valid, bool)
    if t.ndim != 1 or len(t) != len(values) or valid.shape != values.shape[:-1] or not len(t):
        raise ConvertError(f"timestamps {t.shape}, values {values.shape}, valid {valid.shape} do not agree")
    if not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0):
        raise ConvertError("timestamps must be finite and non-decreasing")
    if not fps > 0:
        raise ConvertError(f"fps must be > 0, got {fps}")
    t_new = t[0] + np.arange(int(math.floor((t[-1] - t[0]) * fps + 1e-9)) + 1) / fps
    flat_v = values.reshape(len(t), -1, values.shape[-1])
    flat_ok = valid.reshape(len(t), -1)
    out = np.zeros((len(t_new),) + flat_v.shape[1:], np.float32)
    out_ok = np.zeros((len(t_new), flat_ok.shape[1]), bool)
    for j in range(flat_ok.shape[1]):
        ts = t[flat_ok[:, j]]
        if not len(ts):
            continue
        vs = flat_v[flat_ok[:, j], j]
        hi = np.searchsorted(ts, t_new, side="left")  # first valid sample at or after the new time
        exact = (hi < len(ts)) & (ts[np.minimum(hi, len(ts) - 1)] == t_new)
        lo = np.clip(hi - 1, 0, len(ts) - 1)
        hi_c = np.clip(hi, 0, len(ts) - 1)
        inside = (hi > 0) & (hi < len(ts))
        gap = ts[hi_c] - ts[lo]
        ok = exact | (inside & (gap <= max_gap_s))
        w = np.where(gap > 0, (t_new - ts[lo]) / np.where(gap > 0, gap, 1.0), 0.0)[:, None]
        interp = (1 - w) * vs[lo] + w * vs[hi_c]
        out[:, j] = np.where(exact[:, None], vs[hi_c], interp)
        out_ok[:, j] = ok
    out[~out_ok] = 0.0
    return (t_new, out.reshape((len(t_new),) + values.shape[1:]),
            out_ok.reshape((len(t_new),) + valid.shape[1:]))


def _array(rec: dict, where: str) -> np.ndarray:
    try:
        joints = np.array(rec["joints"], dtype=np.float64)  # null -> nan
    except (TypeError, ValueError) as exc:
        raise ConvertError(f"{where}: joints must be a rectangular T x M x J x C array of numbers ({exc})") from None
    if joints.ndim != 4 or not len(joints):
        raise ConvertError(f"{where}: joints must be T x M x J x C, got shape {joints.shape}")
    return joints


def skeleton_record(rec: dict, joint_map: JointMap, coords: str = "pixels", frame_size: tuple[int, int] | None = None,
                    camera: Pinhole | None = None, axes: str = "x,y,z", fps: float | None = None,
                    out_fps: float = 15.0, max_gap_s: float = 0.25, where: str = "record") -> SkeletonSequence:
    """One skeleton JSON-lines record (module docstring) as a COCO-18 :class:`SkeletonSequence`.

    Args:
        rec: the parsed record.
        joint_map: source layout -> COCO-18.
        coords: ``"pixels"`` or ``"camera"``.
        frame_size: ``(W, H)`` of the pixels (``coords="pixels"``; default ``camera``'s size).
        camera: the pinhole that makes pixels of camera coordinates (required for ``"camera"``).
        axes: the camera frame's axes as OpenCV axes (:func:`to_opencv_frame`).
        fps: frame rate when the record has neither ``t`` nor ``fps``.
        out_fps: rate that irregular timestamps (``t``) are resampled to.
        max_gap_s: see :func:`resample_to_rate`.
        where: names the record in error messages (file:line).

    Returns:
        keypoints ``(T, M, 18, 3)`` float32 pixels + score (1 where the source has no score), and for
        ``"camera"`` depth ``(T, M, 18)`` and points3d ``(T, M, 18, 3)`` metres (OpenCV frame);
        ``meta["t"]``: ``(T,)`` seconds from the record's first frame.

    Raises:
        ConvertError: a missing or malformed field, a joint count the map does not expect.
    """
    if coords not in COORDS:
        raise ConvertError(f"coords must be one of {COORDS}, got {coords!r}")
    if "joints" not in rec or "name" not in rec:
        raise ConvertError(f"{where}: a record needs name and joints")
    joints = _array(rec, where)
    dims = (2, 3) if coords == "pixels" else (3, 4)
    if joints.shape[-1] not in dims:
        raise ConvertError(f"{where}: {coords} joints need C in {dims} values, got {joints.shape[-1]}")
    if joints.shape[2] != joint_map.num_source_joints:
        raise ConvertError(f"{where}: {joints.shape[2]} joints per person, the joint map expects "
                           f"{joint_map.num_source_joints}")
    xyz = joints[..., : dims[0]]
    score = joints[..., dims[0]] if joints.shape[-1] == dims[1] else np.ones(joints.shape[:-1])
    valid = np.all(np.isfinite(xyz), -1) & np.isfinite(score) & (score > 0)
    if coords == "camera":
        valid &= np.nan_to_num(xyz[..., 2]) != 0
    xyz, score = np.nan_to_num(xyz), np.nan_to_num(score)
    values = np.concatenate([xyz, score[..., None]], -1)
    mapped, ok = joint_map.apply(values, valid)  # (T, M, 18, C+1)
    t = rec.get("t")
    rate = float(rec.get("fps") or fps or 0)
    if t is not None:
        t = np.asarray(t, np.float64)
        if t.shape != (len(mapped),):
            raise ConvertError(f"{where}: t must have one timestamp per frame ({len(mapped)}), got {t.shape}")
        t, mapped, ok = resample_to_rate(t, mapped, ok, out_fps, max_gap_s)
        t, rate = t - t[0], float(out_fps)
    elif rate <= 0:
        raise ConvertError(f"{where}: no frame rate: give the record a `t` or `fps`, or pass fps")
    else:
        t = np.arange(len(mapped)) / rate
    depth = points3d = None
    if coords == "camera":
        if camera is None:
            raise ConvertError("coords camera needs the pinhole intrinsics (fx, fy, cx, cy) and the image size")
        points3d = to_opencv_frame(mapped[..., :3], axes)
        if np.any(ok & (points3d[..., 2] <= 0)):
            raise ConvertError(f"{where}: joints behind the camera (Z <= 0 after axes {axes!r}); check --axes")
        pixels = camera.project(points3d)
        depth = np.where(ok, points3d[..., 2], 0.0).astype(np.float32)
        points3d = np.where(ok[..., None], points3d, 0.0).astype(np.float32)
        size = (camera.width, camera.height)
    else:
        pixels = mapped[..., :2]
        size = frame_size or ((camera.width, camera.height) if camera else None)
        if size is None:
            raise ConvertError("coords pixels needs the frame size (W, H) of the pixels")
    kp = np.concatenate([pixels, np.clip(mapped[..., -1:], 0.0, 1.0)], -1).astype(np.float32)
    kp[~ok] = 0.0
    label = rec.get("label")
    subject = rec.get("subject")
    return SkeletonSequence(name=str(rec["name"]), keypoints=kp, frame_size=(int(size[0]), int(size[1])), fps=rate,
                            depth=depth, points3d=points3d, label=None if label is None else str(label),
                            subject=None if subject is None else str(subject),
                            meta={"dataset": "converted", "t": t.astype(np.float32)})


def read_skeleton_jsonl(path: str | Path, joint_map: JointMap, **kwargs) -> list[SkeletonSequence]:
    """Every record of a skeleton JSON-lines file (:func:`skeleton_record`, same keyword arguments).

    Raises:
        ConvertError: a malformed line (file and line number in the message); duplicate names.
        FileNotFoundError: no such file.
    """
    out, seen = [], set()
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConvertError(f"{where}: not JSON ({exc.msg})") from None
            if not isinstance(rec, dict):
                raise ConvertError(f"{where}: a record must be a JSON object")
            seq = skeleton_record(rec, joint_map, where=where, **kwargs)
            if seq.name in seen:
                raise ConvertError(f"{where}: duplicate name {seq.name!r}")
            seen.add(seq.name)
            out.append(seq)
    if not out:
        raise ConvertError(f"{path}: no records")
    return out


@dataclass(frozen=True)
class Segment:
    """A labelled time span of one clip or sequence: seconds from its first frame, ``start < end``."""

    clip: str
    label: str
    start: float
    end: float


_GMDCSA = re.compile(r"\s*([^\[;]+?)\s*\[\s*([0-9.]+)\s*to\s*([0-9.]+)\s*\]")


def read_segments(path: str | Path) -> list[Segment]:
    """Labelled time segments from a CSV, in one of two forms (chosen by the header):

    * ``clip,label,start,end`` (seconds from the clip's first frame; ``clip`` is a sequence name, a
      camera name or a file name; its stem matches too);
    * the GMDCSA24 form (``../shared/data/videos/gmdcsa24_s1/Fall.csv``): ``File Name`` and ``Classes``
      columns, ``Classes`` like ``Falling (BW)[0.4 to 4]; Standing[0 to 0.3]``. Labels are the text
      before ``[``, lower-cased, a parenthesised qualifier dropped, spaces as ``_`` (``falling``).

    Raises:
        ConvertError: an unknown header, a malformed row or ``start >= end`` (file and row named).
    """
    with open(path, encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ConvertError(f"{path}: empty")
    header = [h.strip().lower() for h in rows[0]]
    out = []
    for n, row in enumerate(rows[1:], 2):
        if not any(c.strip() for c in row):
            continue
        cells = dict(zip(header, (c.strip() for c in row)))
        where = f"{path}:{n}"
        if {"clip", "label", "start", "end"} <= set(header):
            spans = [(cells["label"], cells["start"], cells["end"])]
            clip = cells["clip"]
        elif {"file name", "classes"} <= set(header):
            clip, classes = cells["file name"], row[-1]  # Classes is the last column (descriptions may hold commas)
            spans = [(m.group(1), m.group(2), m.group(3)) for m in _GMDCSA.finditer(classes)]
            if not spans:
                raise ConvertError(f"{where}: no `Label[start to end]` in Classes {classes!r}")
        else:
            raise ConvertError(f"{path}: header must have clip,label,start,end (or GMDCSA24's File Name,Classes), "
                               f"got {rows[0]}")
        for label, start, end in spans:
            try:
                s, e = float(start), float(end)
            except ValueError:
                raise ConvertError(f"{where}: start/end must be seconds, got {start!r}, {end!r}") from None
            if not (math.isfinite(s) and math.isfinite(e) and 0 <= s < e):
                raise ConvertError(f"{where}: need 0 <= start < end, got {s}, {e}")
            name = re.sub(r"\s*\(.*?\)\s*", " ", label).strip().lower().replace(" ", "_")
            if not name:
                raise ConvertError(f"{where}: empty label")
            out.append(Segment(clip=clip, label=name, start=s, end=e))
    return out


def _clip_keys(seq: SkeletonSequence) -> set[str]:
    keys = {seq.name, str(seq.meta.get("camera", "")), str(seq.meta.get("clip", ""))}
    return {k for k in keys | {Path(k).stem for k in keys} if k}


def cut_segments(sequences: list[SkeletonSequence], segments: list[Segment],
                 min_frames: int = 5) -> list[SkeletonSequence]:
    """Cut sequences into their labelled segments (a sequence may have several; unlabelled time is dropped).

    A segment matches a sequence by ``clip`` = its name, camera or clip (or their file stems). Frame
    ``i`` lies at ``meta["t"][i]`` seconds (else ``i / fps``); the cut keeps ``start <= t <= end``.
    Each cut is named ``<name>@<start>-<end>``, keeps the subject, and has the segment's label.

    A segments file may list more clips than the input holds (a dataset's whole label file): the
    clips that match nothing are logged; when none matches at all that is an error.

    Raises:
        ConvertError: no segment matches any sequence (the clip names of both are in the message).
    """
    out, used = [], set()
    for seq in sequences:
        keys = _clip_keys(seq)
        t = np.asarray(seq.meta.get("t", np.arange(len(seq.keypoints)) / seq.fps), np.float64)
        for k, seg in enumerate(segments):
            if seg.clip not in keys and Path(seg.clip).stem not in keys:
                continue
            used.add(k)
            idx = np.flatnonzero((t >= seg.start - 1e-6) & (t <= seg.end + 1e-6))
            if len(idx) < min_frames:
                log.info("%s: segment %s [%g, %g] s has %d frames (< %d); skipped", seq.name, seg.label, seg.start,
                         seg.end, len(idx), min_frames)
                continue
            sl = slice(int(idx[0]), int(idx[-1]) + 1)
            out.append(replace(
                seq, name=f"{seq.name}@{seg.start:g}-{seg.end:g}", keypoints=seq.keypoints[sl],
                depth=None if seq.depth is None else seq.depth[sl],
                points3d=None if seq.points3d is None else seq.points3d[sl], label=seg.label,
                meta={**seq.meta, "t": t[sl] - t[sl][0], "segment": [seg.start, seg.end], "clip": seg.clip}))
    if segments and not used:
        raise ConvertError(f"no segment clip ({sorted({s.clip for s in segments})[:5]} ...) matches a sequence or camera "
                           f"of the input ({sorted({k for s in sequences for k in _clip_keys(s)})[:5]} ...)")
    unmatched = sorted({segments[k].clip for k in range(len(segments)) if k not in used})
    if unmatched:
        log.info("segments of %d clip(s) not in the input, ignored: %s", len(unmatched), ", ".join(unmatched[:10]))
    return out


def read_recording(path: str | Path, label: str | None = None, subject: str | None = None,
                   max_persons: int = 2, fps: float = 15.0, max_gap_s: float = 0.25) -> list[SkeletonSequence]:
    """A daemon recording (``record_poses``, :mod:`pipeline.recorder`) as one sequence per camera.

    Persons go to stable slots by track id: the ``max_persons`` tracks seen in the most frames, the
    longest first (a passer-by seen for a moment does not take the subject's slot); untracked
    persons (id -1) are left out; the recorded frames are resampled by their capture timestamps to ``fps``
    (:func:`resample_to_rate`: the reader's decimation leaves irregular steps). ``meta["t"]`` is each
    frame's time in seconds from the camera's first recorded frame (a file camera's first frame is
    media time 0): what :func:`cut_segments` uses.

    Returns:
        keypoints ``(T, M, 18, 3)`` original-frame pixels + score, ``frame_size`` from the records,
        ``name`` = the camera, ``subject`` as given.

    Raises:
        ConvertError: a malformed line (file and line named). FileNotFoundError: no such file.
    """
    by_cam: dict[str, list[dict]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                by_cam.setdefault(str(rec["camera"]), []).append(
                    {"frame": int(rec["frame"]), "ts": float(rec["ts"]), "size": (int(rec["width"]), int(rec["height"])),
                     "persons": np.asarray(rec["persons"], np.float32).reshape(-1, NUM_JOINTS, 3),
                     "track_ids": [int(x) for x in rec.get("track_ids", [])]})
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                raise ConvertError(f"{path}:{lineno}: not a daemon recording line ({exc})") from None
    out = []
    for cam, recs in sorted(by_cam.items()):
        recs.sort(key=lambda r: r["frame"])
        seen = collections.Counter(tid for r in recs for tid in r["track_ids"] if tid >= 0)
        slots = {tid: m for m, (tid, _) in enumerate(sorted(seen.items(), key=lambda kv: (-kv[1], kv[0]))[:max_persons])}
        kp = np.zeros((len(recs), max_persons, NUM_JOINTS, 3), np.float32)
        for i, r in enumerate(recs):
            for person, tid in zip(r["persons"], r["track_ids"]):
                if tid in slots:
                    kp[i, slots[tid]] = person
        t = np.array([r["ts"] for r in recs], np.float64)
        t_new, kp_new, ok = resample_to_rate(t, kp, kp[..., 2] > 0, fps, max_gap_s)
        kp_new[~ok] = 0.0
        out.append(SkeletonSequence(
            name=cam, keypoints=kp_new, frame_size=recs[0]["size"], fps=float(fps), label=label, subject=subject,
            meta={"dataset": "recording", "camera": cam, "source": str(path), "t": (t_new - t[0]).astype(np.float32)}))
    if not out:
        raise ConvertError(f"{path}: no recorded frames")
    return out


def concat_check(sequences: list[SkeletonSequence]) -> None:
    """Raise :class:`ConvertError` unless the sequences can share one ``.npz`` (one frame size and rate)."""
    sizes = {tuple(s.frame_size) for s in sequences}
    rates = {round(float(s.fps), 6) for s in sequences}
    if len(sizes) > 1 or len(rates) > 1:
        raise ConvertError(f"one .npz holds one frame size and rate; got sizes {sorted(sizes)}, rates {sorted(rates)} "
                           "(give the records `t` to resample them to one rate, or convert them to separate files)")
    bad = [s.name for s in sequences if s.keypoints.shape[2] != NUM_JOINTS]
    if bad:
        raise ConvertError(f"not COCO-18: {bad[:3]}")
