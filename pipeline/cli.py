"""The ``sarde`` command line.

``sarde run`` readers + stage on one box; ``sarde reader`` / ``sarde stage`` the two halves as
separate processes (one host or two, over tcp); ``sarde events`` reads a journal or subscribes
live; ``sarde export`` converts models to ONNX; ``sarde train`` trains the SARDE graph.

Events go to stdout as JSON lines; logs go to stderr. Start-up problems exit with status 2 and
one line saying what to fix.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from engines.errors import EXIT_USER_ERROR, UserError
# pipeline.config (pydantic) is imported by the commands that need it, not here: every reader
# process `sarde run` spawns re-imports this module as its __main__, and stays small (docs/PERFORMANCE.md).
if TYPE_CHECKING:
    from pipeline.config import Config

log = logging.getLogger("sarde")


def _load(args) -> Config:
    from pipeline.config import ConfigError, SourceConfig, load_config_or_default
    from pipeline.sources import derive_camera_name
    overrides: dict = {}
    if getattr(args, "metrics_port", None) is not None:
        overrides.setdefault("metrics", {})["port"] = args.metrics_port
    if getattr(args, "endpoint", None):
        overrides.setdefault("transport", {})["frames_endpoint"] = args.endpoint
    if getattr(args, "bind", None):
        overrides.setdefault("transport", {})["frames_bind"] = args.bind
    if getattr(args, "overlay", None):
        overrides.setdefault("media", {})["overlay_dir"] = args.overlay
    cfg = load_config_or_default(args.config, overrides)
    sources = getattr(args, "source", None)
    if sources:
        taken: set[str] = set()
        try:
            cfg.sources = [SourceConfig(name=derive_camera_name(u, taken), url=u, loop=getattr(args, "loop", False)) for u in sources]
        except ValueError as exc:
            raise ConfigError(f"--source: {exc}") from exc
    return cfg


def _resolved(cfg: Config, args) -> Config:
    """``cfg`` with ``recognizer.model: default`` resolved to a manifest (built on first use)."""
    from pipeline.default_model import resolve_models

    return resolve_models(cfg, progress=not getattr(args, "no_progress", False))


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s")


def cmd_run(args) -> int:
    from pipeline.daemon import run_all
    cfg = _load(args)
    _setup_logging(cfg.log_level)
    # SIGHUP re-reads the same file with the same command-line overrides (pipeline/reload.py)
    return run_all(_resolved(cfg, args), progress=not args.no_progress, reload_config=lambda: _resolved(_load(args), args))


def cmd_stage(args) -> int:
    from pipeline.daemon import run_stage
    cfg = _load(args)
    _setup_logging(cfg.log_level)
    return run_stage(_resolved(cfg, args), progress=not args.no_progress)


def cmd_reader(args) -> int:
    from pipeline.config import ConfigError
    from pipeline.daemon import run_reader_process
    cfg = _load(args)
    _setup_logging(cfg.log_level)
    if not cfg.sources:
        raise ConfigError("no sources: pass --source PATH_OR_URL or list them under `sources:`")
    return run_reader_process(cfg, (args.width, args.height))


def cmd_events(args) -> int:
    from pipeline.config import ConfigError, load_config_or_default
    _setup_logging("WARNING")
    if args.journal:
        from pipeline.journal import EventJournal
        path = Path(args.journal)
        if not path.is_file():
            raise ConfigError(f"journal not found: {path}")
        journal = EventJournal(path, readonly=True)
        try:
            for seq, event in journal.read(since_seq=args.since, camera=args.camera):
                sys.stdout.write(event.to_json() + "\n")
        finally:
            journal.close()
        return 0
    from pipeline.daemon import client_curve
    from pipeline.publish import subscribe
    curve = client_curve(load_config_or_default(args.config), args.connect) if args.config else None
    try:
        for event in subscribe(args.connect, args.topic or "", timeout_s=args.timeout, curve=curve):
            sys.stdout.write(event.to_json() + "\n")
            sys.stdout.flush()
    except KeyboardInterrupt:
        pass
    return 0


def cmd_keys(args) -> int:
    from pipeline.curve import generate_keys

    public, secret = generate_keys(args.out, args.name)
    print(public)
    print(secret)
    return 0


def cmd_export(args) -> int:
    from pipeline.config import ConfigError
    cfg = _load(args)
    _setup_logging(cfg.log_level)
    from pipeline.assets import detector_manifest
    if args.what in ("detector", "all"):
        print(detector_manifest(cfg))
    if args.what in ("recognizer", "all"):
        if args.checkpoint:
            from export.sarde import export_sarde
            ckpt = Path(args.checkpoint)
            if not ckpt.is_file() or not (ckpt.parent / "model.json").is_file():
                raise ConfigError(f"--checkpoint {ckpt}: not a checkpoint of `sarde train` (model.pt with model.json beside it)")
            manifest = export_sarde(Path(args.checkpoint), Path(args.out or cfg.paths.artifact_dir / "sarde" / "custom"))
        else:
            manifest = Path(_resolved(cfg, args).recognizer.model)
        print(manifest)
        if args.fp16 or args.optimize:
            from export.optimize import optimize_sarde
            for path in optimize_sarde(manifest, fp16=args.fp16):
                print(path)
        if args.format == "tensorrt":
            from engines.manifest import read_manifest
            from engines.trt_build import build_engine
            m = read_manifest(manifest, required=("onnx",))
            out = Path(args.out) if args.out and not args.checkpoint else Path(manifest).parent / "trt-cache"
            engine, _record = build_engine(Path(manifest).parent / m["onnx"], out, "fp16" if args.fp16 else "fp32")
            print(engine)
    return 0


def cmd_train(args) -> int:
    cfg = _load(args)
    _setup_logging(cfg.log_level)
    from engines.sarde.datasets import RecipeError
    from engines.sarde.train import train
    from engines.sarde.recipes import load_recipe
    from pipeline.assets import StartupError
    from pipeline.recordings import resolve_recipe

    out = Path(args.out or cfg.paths.artifact_dir / "train" / Path(args.recipe).stem)
    try:
        recipe = resolve_recipe(cfg, load_recipe(Path(args.recipe)), not args.no_progress)
        ckpt = train(recipe, cfg.paths.data_dir, out, device=args.device, seed=args.seed, progress=not args.no_progress)
    except (FileNotFoundError, RecipeError, ValueError) as exc:
        raise StartupError(f"training failed: {exc}") from exc
    print(ckpt)
    return 0


def cmd_bench(args) -> int:
    from pipeline.bench import main as bench_main
    cfg = _load(args)
    _setup_logging("WARNING" if cfg.log_level == "INFO" else cfg.log_level)
    cams = tuple(int(c) for c in args.cameras.split(",") if c.strip())
    batches = tuple(int(b) for b in args.batches.split(",") if b.strip())
    backends = tuple(b.strip() for b in args.backends.split(",") if b.strip()) if args.backends else None
    if args.models is not None:
        from pipeline.bench import main_models
        variants = tuple(v.strip() for v in args.models.split(",") if v.strip())
        return main_models(_resolved(cfg, args), Path(args.out) if args.out else None, variants, args.repeats, batches)
    return bench_main(_resolved(cfg, args), Path(args.out) if args.out else None, args.repeats, cams, args.frames, batches, backends)


def build_parser() -> argparse.ArgumentParser:
    from pipeline.config import DEFAULT_CONFIG_PATH
    p = argparse.ArgumentParser(prog="sarde", description="Real-time action recognition from monocular cameras (SARDE).")
    sub = p.add_subparsers(dest="command", required=True)

    def common(sp, sources=True):
        sp.add_argument("--config", type=Path, help=f"YAML config (default: {DEFAULT_CONFIG_PATH.name} of the package)")
        sp.add_argument("--no-progress", action="store_true", help="no progress bars (first-use training / export)")
        if sources:
            sp.add_argument("--source", action="append", metavar="PATH_OR_URL", help="video file, rtsp:// URL or /dev/videoN; repeat for more (replaces the config's sources)")
            sp.add_argument("--loop", action="store_true", help="loop file sources given with --source")

    sp = sub.add_parser("run", help="readers and stage on one box; events as JSON lines on stdout")
    common(sp)
    sp.add_argument("--metrics-port", type=int, help="override metrics.port (0 = any free port)")
    sp.add_argument("--overlay", metavar="DIR", help="write each camera's frames with skeletons, track ids and open "
                    "actions as DIR/<camera>-<time>.mp4 (media.overlay_dir)")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("stage", help="only the stage: bind the frames endpoint, detect, track, recognise, emit")
    common(sp, sources=False)
    sp.add_argument("--bind", help="endpoint to bind, e.g. tcp://0.0.0.0:5555 (default transport.frames_endpoint)")
    sp.add_argument("--metrics-port", type=int, help="override metrics.port")
    sp.set_defaults(func=cmd_stage)

    sp = sub.add_parser("reader", help="only readers: decode sources and push frames to a stage")
    common(sp)
    sp.add_argument("--endpoint", help="stage endpoint to connect to, e.g. tcp://stagehost:5555")
    sp.add_argument("--width", type=int, default=432, help="detector input width in pixels (default 432)")
    sp.add_argument("--height", type=int, default=368, help="detector input height in pixels (default 368)")
    sp.set_defaults(func=cmd_reader)

    sp = sub.add_parser("events", help="print events from a journal, or subscribe live")
    g = sp.add_mutually_exclusive_group(required=True)
    g.add_argument("--journal", help="path of an event journal (sqlite)")
    g.add_argument("--connect", help="PUB endpoint to subscribe to, e.g. tcp://127.0.0.1:5560")
    sp.add_argument("--topic", help="topic prefix filter, e.g. sarde.cam1 or sarde.cam1.punching")
    sp.add_argument("--since", type=int, default=0, help="journal: only events after this sequence number")
    sp.add_argument("--camera", help="journal: only this camera")
    sp.add_argument("--timeout", type=float, default=None, help="live: stop after this many seconds")
    sp.add_argument("--config", type=Path, help="live: config whose transport.curve client keys subscribe to a CURVE endpoint")
    sp.set_defaults(func=cmd_events)

    sp = sub.add_parser("keys", help="make a CURVE key pair (ZeroMQ certificates) for transport.curve")
    sp.add_argument("--out", type=Path, required=True, help="folder for <name>.key (public) and <name>.key_secret")
    sp.add_argument("--name", required=True, help="e.g. stage, or the reader's / subscriber's host name")
    sp.set_defaults(func=cmd_keys)

    sp = sub.add_parser("export", help="convert models to ONNX (with manifests and parity checks)")
    common(sp, sources=False)
    sp.add_argument("what", choices=["detector", "recognizer", "all"], nargs="?", default="all")
    sp.add_argument("--checkpoint", help="recognizer: export this trained checkpoint instead of the default model")
    sp.add_argument("--out", help="output directory for --checkpoint / --format tensorrt")
    sp.add_argument("--format", choices=["onnx", "tensorrt"], default="onnx",
                    help="recognizer: onnx (default) or also a cached TensorRT engine (needs the tensorrt extra and a GPU)")
    sp.add_argument("--fp16", action="store_true",
                    help="recognizer: also write an FP16 ONNX graph (sarde-fp16.onnx, parity-checked) / build the TensorRT engine in FP16")
    sp.add_argument("--optimize", action="store_true",
                    help="recognizer: also write a simplified graph (sarde-opt.onnx) with per-step parity in its manifest")
    sp.set_defaults(func=cmd_export)

    sp = sub.add_parser("train", help="train the SARDE graph on the skeleton datasets")
    common(sp, sources=False)
    sp.add_argument("--recipe", default=str(Path(__file__).resolve().parents[1] / "configs" / "models" / "sarde-default.yaml"),
                    help="training recipe YAML: labels, the datasets it learns from (readers, label maps, repeats, splits), "
                         "model, schedule, augmentation; see configs/models/sarde-default.yaml")
    sp.add_argument("--out", help="output directory (default artifact_dir/train/<recipe>)")
    sp.add_argument("--device", default="cpu", help="cpu or cuda")
    sp.add_argument("--seed", type=int, default=0)
    sp.set_defaults(func=cmd_train)
    # listed for `sarde -h` only: main() hands everything after `eval` to the evaluation commands
    sub.add_parser("eval", help="evaluate: `sarde eval detector|video ...` on real footage, `sarde eval data` on your "
                                "own .npz, or train + evaluate SARDE on the standard protocols (see `sarde eval -h`)",
                   add_help=False)
    sub.add_parser("data", help="`sarde data convert skeletons|recording ...`, `sarde data info FILE.npz`: your own "
                                "data to the generic .npz (see `sarde data -h`)", add_help=False)

    sp = sub.add_parser("bench", help="detector, fused-graph and end-to-end throughput (medians, JSON + table)")
    common(sp, sources=False)
    sp.add_argument("--repeats", type=int, default=5, help="timed runs per figure (median reported)")
    sp.add_argument("--cameras", default="1", help="comma-separated camera counts for the end-to-end runs, e.g. 1,4,8")
    sp.add_argument("--frames", type=int, default=60, help="frames per camera in each end-to-end run")
    sp.add_argument("--out", help="write the JSON result here")
    sp.add_argument("--batches", default="1,8,32", help="fused-graph batch sizes, comma-separated (default 1,8,32)")
    sp.add_argument("--backends", default=None,
                    help="only these fused-graph backends, e.g. torch_eager_cpu,onnxruntime_cpu (default: every available)")
    sp.add_argument("--models", nargs="?", const="", default=None, metavar="VARIANTS",
                    help="only compare recogniser architectures (params, FLOPs, windows/s): comma-separated variants of "
                         "configs/experiments/variants.yaml (default: SARDE series, 2d and the four seed models)")
    sp.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:2] in (["eval", "detector"], ["eval", "video"]):  # the real-footage evaluations
            _setup_logging("INFO")
            if argv[1] == "detector":
                from pipeline.detector_eval import main as detector_eval_main
                return detector_eval_main(argv[2:])
            from pipeline.video_eval import main as video_eval_main
            return video_eval_main(argv[2:])
        if argv[:2] == ["eval", "data"]:  # a user's own generic .npz
            from engines.sarde.data_eval import main as data_eval_main
            _setup_logging("INFO")
            return data_eval_main(argv[2:])
        if argv[:1] == ["data"]:  # converters to the generic .npz
            from pipeline.data_cli import main as data_main
            _setup_logging("INFO")
            return data_main(argv[1:])
        if argv[:1] == ["eval"]:  # every other argument after `eval` belongs to engines.sarde.evaluate
            from engines.sarde.evaluate import main as eval_main
            _setup_logging("INFO")
            return eval_main(argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except UserError as exc:  # config, models, manifests, recipes, data, ports: one line, exit 2
        print(f"sarde: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
