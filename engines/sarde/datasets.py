"""The datasets a recipe trains on: readers, label maps, roles, weights and splits (``datasets:`` key).

A recipe lists every dataset it uses; nothing is mixed in unless listed::

    datasets:
      - name: sbu                     # unique name, used in results
        reader: sbu                   # sbu | msr | utd | urfd | npz
        label_map: {kicking: fighting, punching: fighting, pushing: fighting}   # "*" = every other label
        drop_labels: []               # labels that give no recognition supervision (window kept for depth)
        depth: false                  # supervise the depth estimator with the dataset's depth (Eq. 4-5)
        repeat: 2                     # windows per sequence per epoch (its weight in the mixture)
        test: {sbu_fold: 1}           # held out: sbu_fold (SBU authors' folds) or subjects: [...]
      - name: fightsurv
        reader: npz                   # generic .npz files (engines.datasets.generic), e.g. daemon recordings
        files: [...]                  # filled in by the caller for recordings (pipeline.recordings)
        test: {subjects: [...]}       # subjects of a recording = its clip's CV group (source video)

Labels: a sequence's label goes through ``label_map`` (then ``"*"``), and a result that is not one of
the recipe's ``labels`` or is in ``drop_labels`` gives no recognition supervision (index -1).
Splits are by subject, sequence set or source video, never by frame or window; the split is returned
with the data and written into every result.

:func:`recording_sequences` is how a recorded clip's per-clip label reaches its windows: a clip
labelled ``fighting`` (a fight somewhere in view, the Surveillance Camera Fight dataset's labels)
gives ``fighting`` to each window the stage built around **two** persons, and no label to a
single-person window (a bystander, or a fighter whose partner the detector missed: neither clearly
fighting nor clearly normal); any other clip label goes to every window of the clip.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engines.datasets import SkeletonSequence
from engines.layouts import NUM_JOINTS
from engines.errors import UserError

#: Keys a dataset entry may have.
DATASET_KEYS = frozenset({"name", "reader", "files", "label_map", "drop_labels", "depth", "repeat", "test",
                          "exclude_subjects", "virtual_camera"})
READERS = ("sbu", "msr", "utd", "urfd", "npz")
#: Clip labels whose windows need two persons to inherit the label (interactions).
PAIR_LABELS = frozenset({"fighting"})


class RecipeError(UserError, ValueError):
    """A recipe's ``datasets`` section is invalid; the message names the entry and the key."""


@dataclass
class DatasetSplit:
    """One recipe dataset, read and split.

    Attributes:
        name, reader: from the recipe.
        train, test: sequences (labels already mapped to the recipe's classes or ``None``).
        depth: supervise depth with this dataset.
        repeat: windows per sequence per epoch.
        virtual_camera: probability of re-projecting a training sequence through a random
            surveillance camera (needs ``points3d``).
        split: how the test part was chosen, written into results.
    """

    name: str
    reader: str
    train: list[SkeletonSequence]
    test: list[SkeletonSequence]
    depth: bool = False
    repeat: int = 1
    virtual_camera: float = 0.0
    split: dict = field(default_factory=dict)


def _read(entry: dict, data_dir: Path) -> list[SkeletonSequence]:
    reader = entry["reader"]
    if reader == "sbu":
        from engines.datasets.sbu import load_sbu
        return load_sbu(data_dir)
    if reader == "msr":
        from engines.datasets.msr import load_msr_action3d
        return load_msr_action3d(data_dir)
    if reader == "utd":
        from engines.datasets.utd import load_utd_mhad
        return load_utd_mhad(data_dir)
    if reader == "urfd":
        from engines.datasets.urfd import load_urfd_falls
        return load_urfd_falls(data_dir)
    from engines.datasets.generic import load_npz
    out = []
    for item in entry.get("files", []):
        path = Path(item).expanduser()
        if not path.is_absolute() and not path.exists():
            path = Path(data_dir) / path
        out.extend(load_npz(path))
    return out


def map_label(label: str | None, entry: dict, labels: list[str] | None) -> str | None:
    """A sequence label through the entry's ``label_map`` / ``drop_labels``; ``None`` = unsupervised.
    ``labels=None`` (a recipe without ``labels:``: they come from the data) keeps every mapped label."""
    if label is None or label in entry.get("drop_labels", []):
        return None
    lm = entry.get("label_map", {})
    name = lm.get(label, lm.get("*", label))
    return name if labels is None or name in labels else None


def data_labels(parts: list[DatasetSplit]) -> list[str]:
    """The distinct labels of read datasets' training sequences, sorted: a recipe's classes when it
    lists no ``labels:``.

    Raises:
        RecipeError: fewer than two labels (nothing to tell apart).
    """
    names = sorted({s.label for p in parts for s in p.train if s.label is not None})
    if len(names) < 2:
        raise RecipeError(f"recipe has no `labels:` and its training data has {len(names)} label(s) {names}; "
                          "label the data (e.g. `sarde data convert ... --segments`) or list labels and a label_map")
    return names


def validate_entry(entry: dict, index: int) -> None:
    """Raises :class:`RecipeError` on an unknown key, reader or split of one ``datasets`` entry."""
    where = f"datasets[{index}]" + (f" ({entry.get('name')})" if isinstance(entry, dict) and entry.get("name") else "")
    if not isinstance(entry, dict):
        raise RecipeError(f"{where}: must be a mapping")
    unknown = set(entry) - DATASET_KEYS
    if unknown:
        raise RecipeError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {sorted(DATASET_KEYS)}")
    if "name" not in entry or "reader" not in entry:
        raise RecipeError(f"{where}: needs name and reader")
    if entry["reader"] not in READERS:
        raise RecipeError(f"{where}: reader {entry['reader']!r} unknown; one of {READERS}")
    test = entry.get("test") or {}
    if not isinstance(test, dict) or set(test) - {"sbu_fold", "subjects"}:
        raise RecipeError(f"{where}: test must be {{sbu_fold: K}} or {{subjects: [...]}}, got {test!r}")
    if "sbu_fold" in test and entry["reader"] != "sbu":
        raise RecipeError(f"{where}: test.sbu_fold only applies to reader sbu")
    if int(entry.get("repeat", 1)) < 1:
        raise RecipeError(f"{where}: repeat must be >= 1")


def load_datasets(recipe: dict, data_dir: str | Path) -> list[DatasetSplit]:
    """Read and split every dataset of ``recipe["datasets"]``.

    Raises:
        RecipeError: invalid entries (see :func:`validate_entry`) or duplicate names.
        FileNotFoundError: a dataset's files are missing under ``data_dir``.

    Labels are mapped to the recipe's ``labels`` (others unsupervised), or kept as mapped when the
    recipe lists none (:func:`data_labels` then gives the classes).
    """
    labels = list(recipe["labels"]) if recipe.get("labels") is not None else None
    entries = recipe.get("datasets") or []
    names = [e.get("name") for e in entries if isinstance(e, dict)]
    if len(set(names)) != len(names):
        raise RecipeError(f"datasets: duplicate names in {names}")
    out = []
    for i, entry in enumerate(entries):
        validate_entry(entry, i)
        seqs = _read(entry, Path(data_dir))
        for s in seqs:
            s.label = map_label(s.label, entry, labels)
        test = entry.get("test") or {}
        exclude = {str(x) for x in entry.get("exclude_subjects", [])}
        if "sbu_fold" in test:
            from engines.datasets.sbu import SBU_FOLDS
            held = {str(x) for x in SBU_FOLDS[int(test["sbu_fold"]) - 1]}
        else:
            held = {str(x) for x in test.get("subjects", [])}
        train = [s for s in seqs if str(s.subject) not in held and str(s.subject) not in exclude]
        tst = [s for s in seqs if str(s.subject) in held]
        out.append(DatasetSplit(
            name=entry["name"], reader=entry["reader"], train=train, test=tst, depth=bool(entry.get("depth", False)),
            repeat=int(entry.get("repeat", 1)), virtual_camera=float(entry.get("virtual_camera", 0.0)),
            split={"test": test, "excluded_subjects": sorted(exclude), "train_sequences": len(train),
                   "test_sequences": len(tst)}))
    return out


def recording_sequences(poses_jsonl: str | Path, windows_jsonl: str | Path, clip_label: str | None,
                        group: str, name: str, num_frames: int = 150) -> list[SkeletonSequence]:
    """The windows a record-only daemon run built on one clip, as labelled pixel sequences.

    Args:
        poses_jsonl: the recorder's frames (``pipeline.recorder``: camera, frame, ts, width, height,
            persons ``(P, 18, 3)`` original pixels, track_ids).
        windows_jsonl: the windows the stage built (track_ids, start_frame, end_frame).
        clip_label: the clip's label; inherited as the module docstring says.
        group: the clip's CV group (source video), stored as ``subject``.
        name: id prefix of the sequences.
        num_frames: ``T``; a window covers frames ``end_frame - T + 1 .. end_frame``.

    Returns:
        One :class:`SkeletonSequence` per window: keypoints ``(L, M, 18, 3)`` original pixels (M = the
        window's persons, in the window's order), ``L`` = frames from the window's first to last
        observed frame, fps from the recorded timestamps.
    """
    frames: dict[int, dict] = {}
    with open(poses_jsonl, encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            frames[int(rec["frame"])] = rec
    if not frames:
        return []
    first = frames[min(frames)]
    size = (int(first["width"]), int(first["height"]))
    order = sorted(frames)
    steps = [(frames[b]["ts"] - frames[a]["ts"]) / (b - a) for a, b in zip(order, order[1:]) if b > a]
    fps = 1.0 / float(np.median(steps)) if steps and np.median(steps) > 0 else 15.0
    out = []
    with open(windows_jsonl, encoding="utf-8") as fh:
        windows = [json.loads(line) for line in fh if line.strip()]
    for i, w in enumerate(windows):
        tids = [int(t) for t in w["track_ids"]]
        start = max(int(w["start_frame"]), int(w["end_frame"]) - num_frames + 1)
        end = int(w["end_frame"])
        kp = np.zeros((end - start + 1, len(tids), NUM_JOINTS, 3), np.float32)
        for f in range(start, end + 1):
            rec = frames.get(f)
            if rec is None:
                continue
            for person, tid in zip(rec["persons"], rec["track_ids"]):
                if int(tid) in tids:
                    kp[f - start, tids.index(int(tid))] = np.asarray(person, np.float32)
        label = clip_label
        if clip_label in PAIR_LABELS and len(tids) < 2:
            label = None
        out.append(SkeletonSequence(name=f"{name}#w{i}", keypoints=kp, frame_size=size, fps=fps, label=label,
                                    subject=group, meta={"dataset": "recording", "clip": name,
                                                         "track_ids": tids, "end_frame": end}))
    return out
