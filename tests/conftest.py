"""Shared pytest fixtures: the shared data folder, the artifact cache, and exported models.

* ``shared_dir``: ``$SARDE_SHARED`` or ``../shared`` beside the repository (data, weights).
* ``artifact_cache``: ``$SARDE_ARTIFACT_DIR`` or ``artifacts/`` in the repository (git-ignored; the same cache `sarde run` uses);
  expensive exports land here and are reused across tests and runs.
* ``detector_onnx``: manifest path of the default detector converted to ONNX (exported once; reused
  while the weights' and the ONNX file's sha256 match the manifest).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DETECTOR_WEIGHTS = Path("models/pose/pinto_mobilenetv2_pose/"
                        "posttraing_quantization_mobilenet_v2_pose_dm10_368_432_weight_quant.tflite")


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The read-only shared folder (``data/``, ``models/``); skips the test if it is absent."""
    path = Path(os.environ.get("SARDE_SHARED", REPO_ROOT.parent / "shared"))
    if not path.is_dir():
        pytest.skip(f"shared data folder not found: {path} (set SARDE_SHARED)")
    return path


@pytest.fixture(scope="session")
def artifact_cache() -> Path:
    """Session cache folder for generated artifacts (created if missing)."""
    path = Path(os.environ.get("SARDE_ARTIFACT_DIR", REPO_ROOT / "artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def _export_is_current(manifest: Path, weights: Path) -> bool:
    """True if ``manifest`` exists, names an existing ONNX file, and both sha256 still match."""
    from engines.manifest import ManifestError, read_manifest, sha256_file

    try:
        data = read_manifest(manifest)
    except ManifestError:
        return False
    onnx_path = manifest.parent / str(data.get("onnx", ""))
    return (data.get("source_sha256") == sha256_file(weights) and onnx_path.is_file()
            and data.get("onnx_sha256") == sha256_file(onnx_path))


@pytest.fixture(scope="session")
def detector_onnx(shared_dir: Path, artifact_cache: Path) -> Path:
    """Manifest path of the default (dm10) detector exported to ONNX, exported at most once."""
    weights = shared_dir / DETECTOR_WEIGHTS
    if not weights.is_file():
        pytest.skip(f"detector weights not found: {weights}")
    out_dir = artifact_cache / "detector"
    manifest = out_dir / f"{weights.stem}.json"
    if _export_is_current(manifest, weights):
        return manifest
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    from export.detector import default_parity_frames, export_detector

    frames = default_parity_frames((432, 368), shared_dir / "data")
    return export_detector(weights, out_dir, parity_frames=frames)


def _default_config(shared_dir: Path, artifact_cache: Path, **overrides):
    """The package's default config pointed at the test's shared folder and artifact cache."""
    from pipeline.config import load_config

    base = {"paths": {"data_dir": str(shared_dir / "data"), "pose_model_dir": str(shared_dir / "models/pose"),
                      "artifact_dir": str(artifact_cache)}}
    for key, value in overrides.items():
        base.setdefault(key, {}).update(value)
    return load_config(REPO_ROOT / "configs" / "default.yaml", base)


@pytest.fixture(scope="session")
def default_model(shared_dir: Path, artifact_cache: Path, detector_onnx: Path) -> Path:
    """Manifest path of the daemon's default SARDE model, built at most once the way the daemon
    builds it (daemon recordings of the training clips, then training and export)."""
    pytest.importorskip("torch")
    from pipeline.default_model import default_model as build

    return build(_default_config(shared_dir, artifact_cache), progress=False)


@pytest.fixture(scope="session")
def default_cfg(shared_dir: Path, artifact_cache: Path):
    """``configs/default.yaml`` (the deployed thresholds) with the test's shared folder and artifact cache."""
    return _default_config(shared_dir, artifact_cache)


@pytest.fixture()
def free_port():
    """A callable returning a currently free TCP port on 127.0.0.1."""
    import socket

    def pick() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    return pick


@pytest.fixture()
def daemon_config(tmp_path, shared_dir: Path, artifact_cache: Path, default_model: Path):
    """A callable writing a `sarde run` config (shared paths, ipc frames endpoint in ``tmp_path``, the
    default model, no PUB, a journal in ``tmp_path``, metrics as given, more ``events`` keys as given
    (``"threshold: 0.1, ..."``)) and returning its path."""

    def write(metrics: str = "{enabled: false}", extra: str = "", events: str = "") -> Path:
        path = tmp_path / "cfg.yaml"
        path.write_text(
            f"paths: {{data_dir: '{shared_dir / 'data'}', pose_model_dir: '{shared_dir / 'models' / 'pose'}', "
            f"artifact_dir: '{artifact_cache}'}}\n"
            f"transport: {{frames_endpoint: 'ipc://{tmp_path}/f.sock'}}\n"
            f"recognizer: {{model: '{default_model}'}}\n"
            f"events: {{pub_endpoint: null, journal: '{tmp_path}/ev.db', stdout: false{', ' + events if events else ''}}}\n"
            f"metrics: {metrics}\n{extra}")
        return path

    return write


@pytest.fixture(scope="session")
def real_training_batch(shared_dir: Path):
    """A callable ``(crop_stride) -> (labels, batch)``: one training batch of real windows for the
    models' "learns on real windows" tests, built by the training layer's own ``WindowDataset`` and
    ``collate``: 12 SBU sequences of set s01s02 (2D only, their own 8 labels) and MSR Action3D actions
    1-2 of subject 1 (with their Kinect depth, as ``other``); 9 labels."""
    torch = pytest.importorskip("torch")
    from engines.datasets.msr import load_msr_action3d
    from engines.datasets.sbu import load_sbu
    from engines.sarde.data import WindowDataset, collate

    data = shared_dir / "data"
    sbu = load_sbu(data, sets=("s01s02",))[:12]
    msr = load_msr_action3d(data, actions=(1, 2), subjects=(1,))
    labels = ["approaching", "departing", "kicking", "punching", "pushing", "hugging", "shaking_hands",
              "exchanging", "other"]
    ds = torch.utils.data.ConcatDataset([
        WindowDataset(sbu, labels, use_depth=False),
        WindowDataset(msr, labels, {s.label: "other" for s in msr}, use_depth=True)])

    def make(crop_stride: int = 1):
        return labels, collate([ds[i] for i in range(len(ds))], crop_stride=crop_stride)

    return make


@pytest.fixture(scope="session")
def fit_steps():
    """A callable ``(net, batch, steps=12, **loss_kwargs) -> [(loss, parts)]``: Adam (lr 3e-3) steps of
    ``net`` on ``batch`` with the training loss (``engines.sarde.losses.multitask_loss``, Eq. 3),
    after ``torch.manual_seed(0)`` has been set by the caller before building ``net``."""
    torch = pytest.importorskip("torch")
    from engines.sarde.losses import multitask_loss

    def run(net, batch, steps: int = 12, **loss_kwargs):
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        out = []
        for _ in range(steps):
            logits, depth = net.logits(batch["window"])
            loss, parts = multitask_loss(logits, depth, batch["label"], batch["depth"], **loss_kwargs)
            opt.zero_grad()
            loss.backward()
            opt.step()
            out.append((float(loss.detach()), parts))
        return out

    return run


@pytest.fixture(scope="session")
def onnx_parity():
    """A callable ``(net, batches, path, depth=True, atol=1e-4) -> onnx path``: exports the eval-mode
    ``net`` (input ``skeleton`` ``(N, 3, T, V, M)``, outputs ``scores`` and ``depth``, dynamic ``N``,
    opset 17, as ``engines.sarde.export`` does) to ``path`` and asserts that onnxruntime CPU gives the
    torch scores (and depth, unless ``depth=False``) within ``atol`` on every batch of ``batches``
    (float32 torch tensors)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    import warnings

    from engines.runtime import create_session

    def run(net, batches, path, depth: bool = True, atol: float = 1e-4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(net, (batches[0][:1],), str(path), opset_version=17, dynamo=False, input_names=["skeleton"],
                              output_names=["scores", "depth"],
                              dynamic_axes={"skeleton": {0: "N"}, "scores": {0: "N"}, "depth": {0: "N"}})
        sess = create_session(path, ("cpu",), intra_op_threads=1)
        for batch in batches:
            scores, got_depth = sess.run(["scores", "depth"], {"skeleton": batch.numpy()})
            with torch.no_grad():
                ref_scores, ref_depth = (t.numpy() for t in net(batch))
            assert scores.shape == ref_scores.shape and np.all(np.isfinite(scores))
            assert np.abs(scores - ref_scores).max() <= atol
            if depth:
                assert got_depth.shape == ref_depth.shape and np.abs(got_depth - ref_depth).max() <= atol
        return path

    return run
