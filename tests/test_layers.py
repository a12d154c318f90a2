"""The import graph: layers import only downward, no module cycles, and the daemon imports without torch.

Layers (lowest first; ``docs/ARCHITECTURE.md``):

1. core: keypoint layouts, normalisation, letterbox geometry, manifests, dataset readers;
2. runtimes: onnxruntime / TensorRT sessions, the pose engine and PAF grouping, the fused-graph runtime;
3. models, training, evaluation, export: ``engines/sarde``, ``export``;
4. daemon and CLI: ``pipeline``.

Every ``import`` counts, also the ones inside functions (a lazy import is still a dependency).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engines", "export", "pipeline")

#: module-name prefix -> layer; the longest matching prefix wins.
LAYERS = {
    "engines": 1, "engines.layouts": 1, "engines.skeleton": 1, "engines.letterbox": 1, "engines.manifest": 1,
    "engines.datasets": 1,
    "engines.runtime": 2, "engines.trt": 2, "engines.trt_build": 2, "engines.detector": 2, "engines.pose": 2,
    "engines.recognizer": 2,
    "engines.sarde": 3, "engines.seeds": 3, "export": 3,
    "pipeline": 4,
}
#: third-party packages the daemon and the runtimes must not need at import time.
HEAVY = ("torch", "tensorflow", "tensorrt", "tf2onnx", "onnx")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in ``path`` (resolved to the module, not the imported name)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def layer_of(name: str) -> int:
    best = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len, default=None)
    if best is None:
        raise AssertionError(f"{name} has no layer: add it to LAYERS in tests/test_layers.py and docs/ARCHITECTURE.md")
    return LAYERS[best]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return [f"{a} (layer {layer_of(a)}) imports {b} (layer {layer_of(b)})"
            for a, deps in sorted(graph.items()) for b in sorted(deps) if layer_of(b) > layer_of(a)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    for name in _modules():
        layer_of(name)


def test_imports_only_go_down():
    assert upward_imports(_graph()) == []


def test_no_import_cycles():
    assert cycles(_graph()) == []


def test_checker_catches_an_upward_import_and_a_cycle():
    """The checks above are not vacuous: a runtime importing the daemon, and a two-module cycle."""
    graph = _graph()
    graph["engines.runtime"] = graph["engines.runtime"] | {"pipeline.stage"}
    assert upward_imports(graph) == ["engines.runtime (layer 2) imports pipeline.stage (layer 4)"]
    graph = _graph()
    graph["pipeline.stage"] = graph["pipeline.stage"] | {"pipeline.cli"}
    graph["pipeline.cli"] = graph["pipeline.cli"] | {"pipeline.stage"}
    assert any({"pipeline.cli", "pipeline.stage"} <= set(c) for c in cycles(graph))


@pytest.mark.parametrize("layer_max", [2, 4])
def test_daemon_and_runtimes_import_without_heavy_packages(layer_max):
    """Every module of the runtimes (layer 2) and of ``pipeline`` imports with torch, tensorflow,
    tensorrt, tf2onnx and onnx made unimportable (layer 3, training and export, may need them)."""
    names = sorted(n for n in _modules() if layer_of(n) <= 2 or (layer_max == 4 and layer_of(n) == 4))
    code = ("import sys\n"
            f"for m in {HEAVY!r}: sys.modules[m] = None\n"
            "import importlib\n"
            f"for n in {names!r}: importlib.import_module(n)\n"
            f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} and sys.modules[m] is not None)\n"
            "assert not bad, bad\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_reader_processes_import_only_what_they_need():
    """`sarde run` spawns its readers, and each re-imports the `sarde` script, i.e. `pipeline.cli`,
    as its __main__: that and the reader module must not pull in pydantic, onnxruntime or scipy."""
    code = ("import sys, pipeline.cli, pipeline.readers; "
            "print(sorted(m for m in ('pydantic', 'onnxruntime', 'scipy', 'torch', 'fastapi') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
