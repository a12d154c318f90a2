"""The project's generic skeleton format (``.npz``) and a converter from daemon detector output.

Generic ``.npz`` (written by :func:`save_npz`, read by :func:`load_npz`; NumPy ``savez``, no pickle):

============== ================== ===========================================================
key            shape / dtype      meaning
============== ================== ===========================================================
keypoints      (N, M, T, V, 3) f4  x, y in pixels of ``frame_size`` (origin top-left, y down),
                                  detector score in [0, 1]; 0 = missing joint / padding.
                                  pyskl's layout ``(N, M, T, V, C)``; V = 18 COCO-18 joints.
lengths        (N,) i8            valid frames of each sample (frames ``>= lengths[i]`` are padding)
labels         (N,) i8            class index into ``label_names``; -1 = unlabelled
label_names    (K,) unicode       class names
names          (N,) unicode       sample ids
subjects       (N,) unicode       subject / group id for cross-subject splits ("" = unknown)
frame_size     (2,) i8            ``(W, H)`` pixels
fps            () f8              frame rate
depth          (N, M, T, V) f4    optional: camera-space depth z in metres (0 = unknown)
points3d       (N, M, T, V, 3) f4 optional: metric 3D joints in metres, OpenCV camera frame
                                  (x right, y down, z forward; ``SkeletonSequence.points3d``),
                                  so the data can go through virtual cameras (0 = unknown)
============== ================== ===========================================================

Daemon detector output, JSON lines (one object per camera frame, written by the daemon with `record_poses: FILE`,
this is the agreed format)::

    {"camera": "cam0", "frame": 1234, "ts": 1700000000.123,
     "persons": [[[x, y, score], ... 18 joints], ...],
     "width": 1280, "height": 720}          # optional; else pass frame_size

``x, y`` are pixels of the original frame, joints in COCO-18 order, score 0 = not detected. Persons
are not tracked in this record: slot ``m`` is the ``m``-th person of the frame. Optional
``"track_ids": [int, ...]`` (one per person) assigns persons to stable slots instead.
:func:`jsonl_to_sequences` makes one :class:`SkeletonSequence` per camera and contiguous run of
frames (a gap of more than ``max_gap`` frames starts a new sequence).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from engines.datasets import SkeletonSequence
from engines.layouts import NUM_JOINTS

log = logging.getLogger(__name__)


def save_npz(path: str | Path, sequences: list[SkeletonSequence], label_names: list[str] | None = None,
             num_persons: int | None = None) -> Path:
    """Write sequences to the generic ``.npz`` (module docstring).

    All sequences must share ``frame_size`` and ``fps``. ``label_names`` defaults to the sorted
    distinct labels. ``num_persons`` defaults to the largest ``M``. Depth is stored when every
    sequence has it, ``points3d`` likewise.

    Raises:
        ValueError: on no sequences or mixed frame sizes / rates.
    """
    if not sequences:
        raise ValueError("no sequences to save")
    sizes = {tuple(s.frame_size) for s in sequences}
    rates = {float(s.fps) for s in sequences}
    if len(sizes) != 1 or len(rates) != 1:
        raise ValueError(f"sequences must share frame_size and fps, got {sizes} and {rates}")
    names = label_names if label_names is not None else sorted({s.label for s in sequences if s.label is not None})
    m = num_persons or max(s.keypoints.shape[1] for s in sequences)
    t = max(len(s.keypoints) for s in sequences)
    n = len(sequences)
    kp = np.zeros((n, m, t, NUM_JOINTS, 3), np.float32)
    with_depth = all(s.depth is not None for s in sequences)
    depth = np.zeros((n, m, t, NUM_JOINTS), np.float32) if with_depth else None
    with_points = all(s.points3d is not None for s in sequences)
    points = np.zeros((n, m, t, NUM_JOINTS, 3), np.float32) if with_points else None
    for i, s in enumerate(sequences):
        k = s.keypoints[:, :m]  # (L, M', V, 3)
        kp[i, :k.shape[1], :len(k)] = k.transpose(1, 0, 2, 3)
        if with_depth:
            d = s.depth[:, :m]
            depth[i, :d.shape[1], :len(d)] = d.transpose(1, 0, 2)
        if with_points:
            p = s.points3d[:, :m]
            points[i, :p.shape[1], :len(p)] = p.transpose(1, 0, 2, 3)
    arrays = {
        "keypoints": kp,
        "lengths": np.array([len(s.keypoints) for s in sequences], np.int64),
        "labels": np.array([names.index(s.label) if s.label in names else -1 for s in sequences], np.int64),
        "label_names": np.array(list(names), dtype=str),
        "names": np.array([s.name for s in sequences], dtype=str),
        "subjects": np.array(["" if s.subject is None else str(s.subject) for s in sequences], dtype=str),
        "frame_size": np.array(sizes.pop(), np.int64),
        "fps": np.array(rates.pop(), np.float64),
    }
    if with_depth:
        arrays["depth"] = depth
    if with_points:
        arrays["points3d"] = points
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    return path


def load_npz(path: str | Path) -> list[SkeletonSequence]:
    """Read a generic ``.npz`` into :class:`SkeletonSequence` records (padding frames cut off).

    Raises:
        ValueError: if a required key is missing or shapes disagree.
    """
    with np.load(path, allow_pickle=False) as z:
        missing = {"keypoints", "lengths", "labels", "label_names", "frame_size", "fps"} - set(z.files)
        if missing:
            raise ValueError(f"{path}: missing keys {sorted(missing)}")
        kp = z["keypoints"]
        if kp.ndim != 5 or kp.shape[-1] != 3:
            raise ValueError(f"{path}: keypoints must be (N, M, T, V, 3), got {kp.shape}")
        n = len(kp)
        lengths, labels, label_names = z["lengths"], z["labels"], [str(x) for x in z["label_names"]]
        names = [str(x) for x in z["names"]] if "names" in z.files else [f"sample{i}" for i in range(n)]
        subjects = [str(x) for x in z["subjects"]] if "subjects" in z.files else [""] * n
        depth = z["depth"] if "depth" in z.files else None
        points = z["points3d"] if "points3d" in z.files else None
        frame_size = tuple(int(v) for v in z["frame_size"])
        fps = float(z["fps"])
    if len(lengths) != n or len(labels) != n:
        raise ValueError(f"{path}: lengths/labels must have {n} entries")
    out = []
    for i in range(n):
        length = int(lengths[i])
        out.append(SkeletonSequence(
            name=names[i], keypoints=np.ascontiguousarray(kp[i, :, :length].transpose(1, 0, 2, 3)),
            frame_size=frame_size, fps=fps,
            depth=None if depth is None else np.ascontiguousarray(depth[i, :, :length].transpose(1, 0, 2)),
            points3d=None if points is None else np.ascontiguousarray(points[i, :, :length].transpose(1, 0, 2, 3)),
            label=label_names[labels[i]] if labels[i] >= 0 else None, subject=subjects[i] or None,
            meta={"dataset": "generic", "source": str(path)}))
    return out


def jsonl_to_sequences(path: str | Path, frame_size: tuple[int, int] | None = None, fps: float | None = None,
                       max_persons: int = 2, max_gap: int = 15, label: str | None = None) -> list[SkeletonSequence]:
    """Daemon detector output (JSON lines, module docstring) -> one sequence per camera and run of frames.

    Args:
        path: the ``.jsonl`` file.
        frame_size: ``(W, H)`` pixels; default each record's ``width``/``height``.
        fps: frame rate; default estimated from the median ``ts`` step per frame number.
        max_persons: person slots kept.
        max_gap: frame-number gap that splits a camera's stream into two sequences; frames missing
            inside a run are empty (score 0).
        label: label given to every sequence.

    Raises:
        ValueError: on a malformed record or no frame size.
    """
    by_cam: dict[str, list[dict]] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            if not {"camera", "frame", "persons"} <= set(rec):
                raise ValueError(f"{path}:{lineno}: record needs camera, frame, persons")
            by_cam.setdefault(str(rec["camera"]), []).append(rec)
    out = []
    for cam, recs in sorted(by_cam.items()):
        recs.sort(key=lambda r: int(r["frame"]))
        runs, cur = [], [recs[0]]
        for r in recs[1:]:
            if int(r["frame"]) - int(cur[-1]["frame"]) > max_gap:
                runs.append(cur)
                cur = []
            cur.append(r)
        runs.append(cur)
        for run in runs:
            out.append(_run_to_sequence(path, cam, run, frame_size, fps, max_persons, label))
    return out


def _run_to_sequence(path, cam, run, frame_size, fps, max_persons, label) -> SkeletonSequence:
    size = frame_size or ((int(run[0]["width"]), int(run[0]["height"])) if "width" in run[0] else None)
    if size is None:
        raise ValueError(f"{path}: camera {cam}: no frame size in records; pass frame_size")
    first = int(run[0]["frame"])
    length = int(run[-1]["frame"]) - first + 1
    kp = np.zeros((length, max_persons, NUM_JOINTS, 3), np.float32)
    slot_of: dict[int, int] = {}
    for r in run:
        t = int(r["frame"]) - first
        track_ids = r.get("track_ids")
        for m, person in enumerate(r["persons"]):
            joints = np.asarray(person, np.float32)
            if joints.shape != (NUM_JOINTS, 3):
                raise ValueError(f"{path}: camera {cam} frame {r['frame']}: person must be 18 x 3, got {joints.shape}")
            slot = m
            if track_ids is not None:
                slot = slot_of.setdefault(int(track_ids[m]), len(slot_of))
            if slot < max_persons:
                kp[t, slot] = joints
    kp[kp[..., 2] <= 0] = 0.0
    rate = fps
    if rate is None:
        steps = [(r2["ts"] - r1["ts"]) / (int(r2["frame"]) - int(r1["frame"]))
                 for r1, r2 in zip(run, run[1:]) if "ts" in r1 and "ts" in r2 and int(r2["frame"]) > int(r1["frame"])]
        rate = 1.0 / float(np.median(steps)) if steps and np.median(steps) > 0 else 15.0
    return SkeletonSequence(name=f"{cam}_{first}", keypoints=kp, frame_size=tuple(size), fps=float(rate),
                            label=label, meta={"dataset": "daemon", "camera": cam, "first_frame": first,
                                               "source": str(path)})


def jsonl_to_npz(jsonl: str | Path, out: str | Path, frame_size: tuple[int, int] | None = None,
                 fps: float | None = None, max_persons: int = 2, label: str | None = None) -> Path:
    """Convert daemon detector JSON lines to the generic ``.npz`` (one sample per camera run).

    Raises:
        ValueError: as :func:`jsonl_to_sequences`, or if the runs differ in frame size / fps.
    """
    seqs = jsonl_to_sequences(jsonl, frame_size, fps, max_persons, label=label)
    return save_npz(out, seqs, num_persons=max_persons)
