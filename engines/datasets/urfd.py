"""UR Fall Detection keypoints reader (Kwolek & Kepski, 2014): 30 falls, one person, 2D keypoints.

Source: ``skeletons/urfd_falls/pose_urfd_3classes.csv`` (github MyNameIsPHP/Skeleton-based-Human-Fall-
Detection, ``Annotations/URFD_annotations``; URFD is CC BY-NC-SA 4.0). One row per (video, frame):
``video`` (``fall-01`` .. ``fall-30``), ``frame`` (1-based frame number of the URFD cam0 RGB stream),
then for the 13 joints ``Nose, LShoulder, RShoulder, LElbow, RElbow, LWrist, RWrist, LHip, RHip, LKnee,
RKnee, LAnkle, RAnkle`` the columns ``_x, _y`` (normalised to [0, 1] of the 640x480 image, origin
top-left, y down) and ``_s`` (AlphaPose confidence), then ``label``: 0 not fallen, 1 falling, 2 lying.
URFD is recorded at 30 fps. Joint order -> COCO-18 is :data:`engines.layouts.URFD13_TO_COCO18`.

COCO-18 has a neck (joint 1) that the 13 source joints lack: like the trt_pose / OpenPose-from-COCO
converters, it is synthesised as the midpoint of the two shoulders when both have score > 0, with
score ``min`` of the two shoulder scores (else it is missing). Eyes and ears (14-17) stay missing.

Facts measured on the shared copy (2,939 rows, ``stat.txt``: 1,107 / 937 / 895 rows labelled 0 / 1 / 2)
and how they are handled:

* Every video starts at frame 5 (frames 1-4 are absent everywhere); the sequences here start at the
  first frame present. Frame numbers have gaps (1-2 frames at a time, in fall-05, -17, -19, -21, -22,
  -23, -30; 12 frames in all, all during the fall or the lying) where no person was found: those
  frames are laid out as all-zero rows (missing), frame label -1.
* fall-13 and fall-14 repeat frames: 151 rows for 81 frames and 123 rows for 57 frames, the
  repeated rows carry identical keypoints but different labels (e.g. fall-13 frame 30 as 0 and 1,
  frame 69 as 0, 1 and 2), an artefact of the source annotation. A frame's label is the highest
  of its rows (0 < 1 < 2), which gives both videos the usual 0 -> 1 -> 2 order (fall-13: falling
  from frame 30, lying from 44, except frame 73, whose rows say only 0 and 1, read 1; fall-14:
  falling from 10, lying from 16). So the 2,939 rows are 2,803 distinct frames, labelled
  1,053 / 855 / 895 per frame; ``stat.txt``'s counts are per row.
* No score is 0 or NaN in this copy (minimum 0.018), but such joints are treated as missing
  (x = y = score = 0). Five scores exceed 1 (up to 1.043): scores are clipped to [0, 1].
* Coordinates are AlphaPose's and may lie outside the image: y reaches 1.18 (567 px) and -0.01,
  x 1.006, mostly low-score joints of a person lying near the bottom edge. They are kept as they are.
* fall-22 is labelled falling from its first frame: it has no normal sequence.

Sequences (see :func:`load_urfd_falls`): per video one ``"falling"`` sequence from ``context_s``
before the first label-1 frame to the video's end (the fall and the lying after it), and one
``"normal"`` sequence with the frames before that, when they span at least ``min_normal_s``.
Splits must be by video (``subject``), never by frame.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from engines.datasets import SkeletonSequence
from engines.layouts import URFD13_TO_COCO18, remap_to_coco18

log = logging.getLogger(__name__)

CSV_NAME: str = "pose_urfd_3classes.csv"
#: The 13 source joints in column order (1-based index = position + 1 in ``URFD13_TO_COCO18``).
URFD_JOINTS: tuple[str, ...] = (
    "Nose", "LShoulder", "RShoulder", "LElbow", "RElbow", "LWrist", "RWrist",
    "LHip", "RHip", "LKnee", "RKnee", "LAnkle", "RAnkle",
)
#: Per-frame labels of the CSV, by value.
FRAME_LABELS: tuple[str, ...] = ("not_fallen", "falling", "lying")
#: Sequence classes emitted by :func:`load_urfd_falls`.
URFD_CLASSES: tuple[str, ...] = ("normal", "falling")
FRAME_SIZE: tuple[int, int] = (640, 480)
FPS: float = 30.0
_L_SHOULDER, _R_SHOULDER, _NECK = 5, 2, 1  # COCO-18 indices


def urfd_dir(data_dir: str | Path) -> Path:
    """The folder holding the CSV under a data root (``<root>/skeletons/urfd_falls``) or itself."""
    data_dir = Path(data_dir)
    for cand in (data_dir, data_dir / "urfd_falls", data_dir / "skeletons" / "urfd_falls"):
        if (cand / CSV_NAME).is_file():
            return cand
    return data_dir / "skeletons" / "urfd_falls"


def read_rows(data_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The CSV's rows as they are, in file order (duplicates kept).

    Args:
        data_dir: the data root (``../shared/data``) or the folder holding the CSV.

    Returns:
        ``(videos, frames, joints, labels)``: ``(N,)`` str video ids, ``(N,)`` int64 frame numbers,
        ``(N, 13, 3)`` float64 raw ``(x, y, score)`` in the source layout (x, y normalised to [0, 1]
        of the 640x480 image), ``(N,)`` int64 labels 0 / 1 / 2.

    Raises:
        FileNotFoundError: if the CSV is not found. ValueError: if its header is not the expected one.
    """
    path = urfd_dir(data_dir) / CSV_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"URFD keypoints CSV not found: {path} (expected <data>/skeletons/urfd_falls/{CSV_NAME})")
    expected = ["video", "frame", *(f"{j}_{c}" for j in URFD_JOINTS for c in "xys"), "label"]
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != expected:
            raise ValueError(f"{path}: unexpected header {header}")
        rows = [r for r in reader if r]
    videos = np.array([r[0] for r in rows])
    frames = np.array([int(r[1]) for r in rows], dtype=np.int64)
    joints = np.array([[float(c) if c.strip() else np.nan for c in r[2:-1]] for r in rows],
                      dtype=np.float64).reshape(len(rows), len(URFD_JOINTS), 3)
    labels = np.array([int(float(r[-1])) for r in rows], dtype=np.int64)
    return videos, frames, joints, labels


def to_coco18(joints: np.ndarray) -> np.ndarray:
    """Raw source joints ``(..., 13, 3)`` -> COCO-18 ``(..., 18, 3)`` float32 pixels + score.

    x, y are scaled to pixels of the 640x480 image; joints with score 0 or NaN (or NaN x, y) become
    all-zero (missing); scores are clipped to [0, 1]; the neck is the shoulder midpoint when both
    shoulders are present, with the smaller shoulder score.
    """
    raw = np.asarray(joints, dtype=np.float64)
    valid = np.isfinite(raw).all(axis=-1) & (np.nan_to_num(raw[..., 2]) > 0)
    kp = np.stack([raw[..., 0] * FRAME_SIZE[0], raw[..., 1] * FRAME_SIZE[1], np.clip(raw[..., 2], 0.0, 1.0)],
                  axis=-1)
    kp[~valid] = 0.0
    out = remap_to_coco18(kp, URFD13_TO_COCO18)
    ls, rs = out[..., _L_SHOULDER, :], out[..., _R_SHOULDER, :]
    both = (ls[..., 2] > 0) & (rs[..., 2] > 0)
    neck = np.concatenate([0.5 * (ls[..., :2] + rs[..., :2]), np.minimum(ls[..., 2:], rs[..., 2:])], axis=-1)
    out[..., _NECK, :] = np.where(both[..., None], neck, 0.0)
    return out.astype(np.float32)


def _video_layout(frames: np.ndarray, joints: np.ndarray, labels: np.ndarray):
    """One video's rows -> ``(frame_numbers (F,), keypoints (F, 18, 3), frame_labels (F,))`` by frame number.

    Frames run from the first to the last present; gaps are all-zero keypoints with label -1.
    Repeated frames (identical keypoints) take their highest label.
    """
    first, last = int(frames.min()), int(frames.max())
    numbers = np.arange(first, last + 1, dtype=np.int64)
    kp = np.zeros((len(numbers), 18, 3), np.float32)
    frame_labels = np.full(len(numbers), -1, np.int64)
    idx = frames - first
    kp[idx] = to_coco18(joints)  # repeated frames carry identical keypoints
    np.maximum.at(frame_labels, idx, labels)
    return numbers, kp, frame_labels


def _sequence(video: str, label: str, numbers, kp, frame_labels, sl: slice) -> SkeletonSequence:
    return SkeletonSequence(
        name=f"{video}_{label}",
        keypoints=kp[sl][:, None].copy(),  # (L, 1, 18, 3)
        frame_size=FRAME_SIZE, fps=FPS, depth=None, label=label, subject=video,
        meta={"dataset": "urfd", "video": video, "frame_labels": frame_labels[sl].copy(),
              "frames": numbers[sl].copy()},
    )


def load_urfd_falls(data_dir: str | Path, context_s: float = 0.5, min_normal_s: float = 1.0,
                    videos: tuple[str, ...] | None = None) -> list[SkeletonSequence]:
    """Read the URFD fall keypoints as COCO-18 :class:`SkeletonSequence` records, sorted by video.

    Each video's frames are laid out by frame number from its first to its last frame present
    (gaps = all-zero rows, missing). With ``s`` the first frame labelled 1 (falling) minus
    ``round(context_s * 30)`` frames, clamped at the video's first frame, a video gives:

    * ``"normal"`` (first, only when the frames before ``s`` span at least ``min_normal_s``): those
      frames, all labelled 0 (not fallen);
    * ``"falling"``: frame ``s`` to the video's last frame (the end of standing, the fall and the
      lying after it).

    The two never share a frame.

    Args:
        data_dir: the data root (``../shared/data``) or the folder holding the CSV.
        context_s: seconds of pre-fall context at the start of a ``"falling"`` sequence.
        min_normal_s: shortest ``"normal"`` sequence, seconds.
        videos: video ids (``"fall-07"``) to keep; all 30 when None.

    Returns:
        On the full set 37 records, 30 ``"falling"`` (46-106 frames, median 65) and 7 ``"normal"``
        (31-128 frames; the other 23 videos fall within 1.5 s of their start): ``keypoints`` ``(L, 1, 18, 3)``
        float32 pixels of the 640x480 image (origin top-left, y down) and score in [0, 1] (0 = missing),
        ``fps`` 30, ``depth`` None, ``label`` one of :data:`URFD_CLASSES`, ``subject`` the video id,
        ``meta``: ``dataset`` ``"urfd"``, ``video``, ``frame_labels`` ``(L,)`` int64 per-frame CSV label
        (-1 in gaps) and ``frames`` ``(L,)`` int64 URFD frame numbers.

    Raises:
        FileNotFoundError: if the CSV is missing. ValueError: if a video has no frame labelled 1.
    """
    all_videos, frames, joints, labels = read_rows(data_dir)
    context = int(round(context_s * FPS))
    min_normal = int(round(min_normal_s * FPS))
    out: list[SkeletonSequence] = []
    for video in sorted(set(all_videos.tolist())):
        if videos is not None and video not in videos:
            continue
        rows = all_videos == video
        numbers, kp, frame_labels = _video_layout(frames[rows], joints[rows], labels[rows])
        falling = np.flatnonzero(frame_labels == 1)
        if not len(falling):
            raise ValueError(f"URFD {video}: no frame labelled 1 (falling)")
        start = max(int(falling[0]) - context, 0)
        if start >= min_normal:
            if (frame_labels[:start] > 0).any():
                raise ValueError(f"URFD {video}: a frame before the fall is labelled falling or lying")
            out.append(_sequence(video, "normal", numbers, kp, frame_labels, slice(0, start)))
        out.append(_sequence(video, "falling", numbers, kp, frame_labels, slice(start, len(numbers))))
    if videos is not None and not out:
        log.warning("no URFD video among %s", videos)
    return out
