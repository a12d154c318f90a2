"""ONNX export of the fused SARDE graph: parity with torch on real SBU windows, manifest, zoo cache."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from engines.sarde.architectures import build_model  # noqa: E402
from engines.manifest import read_manifest, sha256_file  # noqa: E402
from engines.runtime import create_session  # noqa: E402

SHARED = Path(os.environ.get("SARDE_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
DATA = SHARED / "data"
pytestmark = pytest.mark.skipif(not (DATA / "skeletons").is_dir(), reason="shared data not available")
LABELS = ["approaching", "departing", "kicking", "punching", "pushing", "hugging", "shaking_hands", "exchanging"]
MODEL = {"depth_width": 0.125, "blocks": [[16, 2], [16, 1], [32, 2]], "use_score": True}


@pytest.fixture(scope="module")
def sbu_windows() -> np.ndarray:
    """Six real SBU windows ``(6, 3, 150, 18, 2)`` built like the daemon's (held-out fold 1)."""
    from engines.datasets.sbu import SBU_FOLDS, load_sbu
    from engines.sarde.data import make_window

    seqs = load_sbu(DATA, sets=SBU_FOLDS[0])[::9][:6]
    return np.stack([make_window(s, 150, 2, 15.0, np.random.default_rng(i))[0] for i, s in enumerate(seqs)])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, sbu_windows) -> Path:
    """A randomly initialised small SardeNet saved as ``engines.sarde.train`` would save it."""
    out = tmp_path_factory.mktemp("sarde_ckpt")
    torch.manual_seed(0)
    net = build_model(MODEL, len(LABELS))
    net.train()
    with torch.no_grad():  # non-trivial BatchNorm running statistics from real windows
        for _ in range(3):
            net.logits(torch.from_numpy(sbu_windows))
    torch.save(net.state_dict(), out / "model.pt")
    recipe = {"name": "test", "labels": LABELS, "model": MODEL, "window": {"num_frames": 150, "num_persons": 2, "fps": 15.0}}
    (out / "model.json").write_text(json.dumps({"recipe": recipe, "labels": LABELS, "metrics": {"sbu": {"top1": 0.5}}}))
    np.save(out / "parity_windows.npy", sbu_windows[:4], allow_pickle=False)
    return out / "model.pt"


def test_export_parity_and_manifest(checkpoint, sbu_windows, tmp_path):
    from export.sarde import export_sarde, load_checkpoint

    manifest_path = export_sarde(checkpoint, tmp_path)
    m = read_manifest(manifest_path, required=("onnx", "labels", "T", "V", "M", "C", "fps", "layout", "model_id"))
    assert (m["T"], m["V"], m["M"], m["C"], m["layout"]) == (150, 18, 2, ["x", "y", "score"], "NCTVM")
    assert m["labels"] == LABELS and m["fps"] == 15.0 and m["heldout"]["sbu"] == 0.5
    onnx_path = manifest_path.parent / m["onnx"]
    assert m["onnx_sha256"] == sha256_file(onnx_path)
    assert m["source"]["checkpoint_sha256"] == sha256_file(checkpoint)
    assert m["parity"]["batch1"]["scores_max_abs_diff"] <= 1e-4 and "batch4" in m["parity"]

    sess = create_session(onnx_path, ("cpu",))
    inp = sess.get_inputs()[0]
    assert inp.name == "skeleton" and inp.shape[1:] == [3, 150, 18, 2] and not isinstance(inp.shape[0], int)
    model, _ = load_checkpoint(checkpoint)
    for batch in (sbu_windows[:1], sbu_windows[2:6]):  # batch 1 and 4, windows not used at export
        scores, depth = sess.run(["scores", "depth"], {"skeleton": batch})
        with torch.no_grad():
            ref_scores, ref_depth = (t.numpy() for t in model(torch.from_numpy(batch)))
        assert scores.shape == (len(batch), len(LABELS)) and depth.shape == (len(batch), 150, 18, 2)
        np.testing.assert_allclose(scores, ref_scores, atol=1e-5, rtol=0)
        np.testing.assert_allclose(depth, ref_depth, atol=1e-4, rtol=0)
        np.testing.assert_allclose(scores.sum(1), 1.0, atol=1e-5)
        assert np.all(depth[batch[:, 2] == 0] == 0) and np.all(depth[batch[:, 2] > 0] > 0)


def test_export_rejects_wrong_parity_windows(checkpoint, tmp_path):
    from export.sarde import export_sarde

    with pytest.raises(ValueError, match="parity windows"):
        export_sarde(checkpoint, tmp_path, parity_windows=np.zeros((2, 3, 100, 18, 2), np.float32))


def test_zoo_trains_once_and_caches(tmp_path):
    import yaml

    from engines.sarde.zoo import ensure_default_model, recipe_hash

    recipe = {
        "name": "tiny", "seed": 0, "labels": LABELS + ["other"],
        "datasets": [{"name": "sbu", "reader": "sbu", "test": {"sbu_fold": 1}},
                     {"name": "msr", "reader": "msr", "label_map": {"*": "other"}, "depth": True,
                      "test": {"subjects": [2, 4, 6, 8, 10]}}],
        "model": {"depth_width": 0.125, "blocks": [[8, 4], [8, 2]]},
        "pretrain_depth": {"epochs": 0},
        "train": {"epochs": 1, "batch_size": 64},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    manifest = ensure_default_model(tmp_path / "artifacts", DATA, path, progress=False)
    assert manifest.parent.name == recipe_hash(recipe) and manifest.is_file()
    assert read_manifest(manifest)["labels"][-1] == "other"
    t0 = time.perf_counter()
    assert ensure_default_model(tmp_path / "artifacts", DATA, path, progress=False) == manifest
    assert time.perf_counter() - t0 < 0.5


def test_zoo_and_exporter_import_without_torch():
    import subprocess
    import sys

    code = "import sys, engines.sarde.zoo, engines.sarde.graph, export.sarde; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    assert subprocess.run([sys.executable, "-c", code], cwd=root, env=env).returncode == 0


def test_recipe_hash_tells_recordings_of_other_detector_settings_apart():
    """Same clips recorded under two recording keys (other decoder settings) are two models; the same
    recording in another checkout is the same model."""
    from engines.sarde.zoo import recipe_hash

    def recipe(*files):
        return {"name": "r", "datasets": [{"name": "fightsurv", "reader": "npz", "files": list(files)}]}

    a = recipe("/a/artifacts/recordings/23d66e472f77/06feae2185f0e181.110c8917.npz")
    b = recipe("/a/artifacts/recordings/4ecd81f41735/06feae2185f0e181.110c8917.npz")
    moved = recipe("artifacts/recordings/23d66e472f77/06feae2185f0e181.110c8917.npz")
    assert recipe_hash(a) != recipe_hash(b)
    assert recipe_hash(a) == recipe_hash(moved)
