"""``sarde data``: bring a site's own skeletons or daemon recordings into the generic ``.npz``.

::

    sarde data convert skeletons SEQS.jsonl --joint-map configs/joint_maps/kinect_v1_20.yaml \\
        --coords camera --intrinsics 285.7,285.7,160,120 --frame-size 320x240 --axes=-x,-y,z --out site.npz
    sarde data convert recording poses.jsonl --segments labels.csv --subject cam7 --out cam7.npz
    sarde data info site.npz

The converters are :mod:`engines.datasets.convert` (formats in its docstring); this module parses the
command line, writes the ``.npz`` (:func:`engines.datasets.generic.save_npz`) and prints a summary on
stdout (labels and groups with their counts). Errors are one line and exit 2.
"""
from __future__ import annotations

import argparse
import collections
import logging
import sys
from pathlib import Path

from engines.errors import UserError

log = logging.getLogger(__name__)


class DataError(UserError, ValueError):
    """A ``sarde data`` input or option that cannot be used."""


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"frame size must be WxH, e.g. 640x480, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"frame size must be positive, got {text!r}")
    return w, h


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


def describe(seqs: list) -> str:
    """A short summary of sequences: count, frames, labels and groups with counts."""
    labels = collections.Counter(s.label or "(none)" for s in seqs)
    groups = collections.Counter(str(s.subject or "(none)") for s in seqs)
    frames = sum(len(s.keypoints) for s in seqs)
    return "\n".join([
        f"{len(seqs)} sequences, {frames} frames at {seqs[0].fps:g} fps, frame {seqs[0].frame_size[0]}x"
        f"{seqs[0].frame_size[1]}, persons <= {max(s.keypoints.shape[1] for s in seqs)}, "
        f"depth {'yes' if all(s.depth is not None for s in seqs) else 'no'}, "
        f"3D {'yes' if all(s.points3d is not None for s in seqs) else 'no'}",
        "labels: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())),
        "groups: " + ", ".join(f"{k} {v}" for k, v in sorted(groups.items())),
    ])


def _convert(args) -> int:
    from engines.datasets.convert import (ConvertError, Pinhole, concat_check, cut_segments, read_recording,
                                          read_segments, read_skeleton_jsonl)
    from engines.datasets.generic import save_npz
    from engines.layouts import load_joint_map

    try:
        if args.kind == "skeletons":
            if args.joint_map is None:
                raise DataError("convert skeletons needs --joint-map (e.g. configs/joint_maps/coco17.yaml)")
            camera = None
            if args.intrinsics is not None:
                if len(args.intrinsics) != 4 or args.frame_size is None:
                    raise DataError("--intrinsics needs fx,fy,cx,cy (pixels) and --frame-size WxH")
                camera = Pinhole(*args.intrinsics, *args.frame_size)
            elif args.coords == "camera":
                raise DataError("--coords camera needs --intrinsics fx,fy,cx,cy and --frame-size WxH")
            seqs = read_skeleton_jsonl(args.input, load_joint_map(args.joint_map), coords=args.coords,
                                       frame_size=args.frame_size, camera=camera, axes=args.axes, fps=args.fps,
                                       out_fps=args.resample_fps, max_gap_s=args.max_gap)
        else:
            seqs = read_recording(args.input, label=args.label, subject=args.subject, fps=args.resample_fps,
                                  max_gap_s=args.max_gap)
        if args.segments is not None:
            seqs = cut_segments(seqs, read_segments(args.segments), min_frames=args.min_frames)
            if not seqs:
                raise DataError(f"{args.segments}: no segment of at least {args.min_frames} frames")
        concat_check(seqs)
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename}: no such file") from None
    except ConvertError as exc:
        raise DataError(str(exc)) from None
    except ValueError as exc:  # a joint map that is not valid
        raise DataError(str(exc)) from None
    out = save_npz(args.out, seqs)
    print(describe(seqs))
    print(f"wrote {out}")
    return 0


def _info(args) -> int:
    from engines.datasets.generic import load_npz

    if not args.file.is_file():
        raise DataError(f"{args.file}: no such file")
    try:
        seqs = load_npz(args.file)
    except (ValueError, OSError, KeyError) as exc:
        raise DataError(f"{args.file}: not a generic .npz ({exc})") from None
    print(describe(seqs))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sarde data", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("convert", help="skeleton JSON lines or a daemon recording -> generic .npz (COCO-18)")
    c.add_argument("kind", choices=["skeletons", "recording"],
                   help="skeletons: one sequence per JSON line, any joint layout (engines/datasets/convert.py); "
                        "recording: a daemon's record_poses file")
    c.add_argument("input", type=Path)
    c.add_argument("--out", type=Path, required=True, help="generic .npz to write")
    c.add_argument("--joint-map", type=Path, help="skeletons: source layout -> COCO-18 (configs/joint_maps/*.yaml)")
    c.add_argument("--coords", choices=["pixels", "camera"], default="pixels",
                   help="skeletons: x,y pixels (default) or x,y,z metres in the camera's frame")
    c.add_argument("--frame-size", type=_size, help="WxH pixels of the image the coordinates refer to")
    c.add_argument("--intrinsics", type=_floats, help="camera coords: pinhole fx,fy,cx,cy in pixels")
    c.add_argument("--axes", default="x,y,z", help="camera coords: OpenCV X,Y,Z as signed source axes "
                   "(Kinect skeleton space: -x,-y,z; write --axes=-x,-y,z)")
    c.add_argument("--fps", type=float, help="skeletons: frame rate of records without `t` or `fps`")
    c.add_argument("--resample-fps", type=float, default=15.0,
                   help="rate that timestamped records and recordings are resampled to (default 15, the daemon's)")
    c.add_argument("--max-gap", type=float, default=0.25, help="longest gap in seconds bridged by interpolation")
    c.add_argument("--segments", type=Path, help="CSV clip,label,start,end (seconds; or GMDCSA24's Fall.csv form): "
                   "cut labelled segments, drop the rest")
    c.add_argument("--min-frames", type=int, default=5, help="shortest segment kept, frames")
    c.add_argument("--label", help="recording: label of the whole recording (without --segments)")
    c.add_argument("--subject", help="recording: group of the recording (camera, site, source) for grouped splits")
    c.set_defaults(func=_convert)
    i = sub.add_parser("info", help="labels, groups and sizes of a generic .npz")
    i.add_argument("file", type=Path)
    i.set_defaults(func=_info)
    return p


def main(argv: list[str] | None = None) -> int:
    """``sarde data ...``; raises :class:`DataError` (exit 2 in :func:`pipeline.cli.main`)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.func(args)
