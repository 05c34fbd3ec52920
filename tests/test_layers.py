"""The layers contract: imports go one way, down this list, and never round in a cycle.

Each module of the four packages has a layer; a module may import modules of its own layer or of
the layers before it, never after. Function-local imports count. They are kept for the optional
heavy dependencies, for torch inside the torch-free modules (the CLI reads their names and
`pcae --help` must not wait for torch), and in the CLI, which imports the library inside each
command for the same reason.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pcae", "encoders", "embeddings", "eval")

# (layer, modules): a module's name, or a package prefix ending in "." for all its modules
LAYERS = [
    ("1 errors, options, settings, files, outputs", ["pcae.errors", "pcae.options", "pcae.config", "pcae.settings",
                                                     "eval.compare_config", "pcae.files", "pcae.outputs",
                                                     "pcae.machine", "pcae.images", "pcae.runs"]),
    ("2 data", ["pcae.data", "pcae.formats"]),
    ("3 encoders", ["encoders", "encoders.", "pcae.faces", "pcae.face_workers"]),
    ("4 models", ["pcae.pixelcnn", "pcae.sampling", "pcae.deconv", "pcae.autoencoder"]),
    ("5 checkpoint", ["pcae.checkpoint"]),
    ("6 metrics and judges", ["eval", "eval.metrics", "eval.judge", "eval.identity", "eval.faces", "eval.unseen",
                              "eval.report"]),
    ("7 the training loop", ["pcae.train", "pcae.resume", "pcae.precision", "pcae.task", "pcae.batches",
                             "pcae.runfolder", "pcae.steps"]),
    ("8 tasks", ["pcae.tasks", "pcae.tasks."]),
    ("9 the table of kinds", ["pcae.kinds"]),
    ("10 applications", ["pcae.inference", "pcae.portrait", "pcae.demo", "eval.compare", "embeddings", "embeddings."]),
    ("11 the CLI", ["pcae.cli", "pcae.cli.", "pcae.entry", "pcae.__main__", "pcae",
                    "pcae.utils", "pcae.pixelcnn_task"]),  # the last two: deprecated names, kept importable
]
TORCH_FREE = {"pcae.errors", "pcae.options", "pcae.config", "pcae.settings", "eval.compare_config", "pcae.files", "pcae.outputs", "pcae.machine",
              "pcae.images", "pcae.runs", "pcae.data", "encoders", "pcae"}
OPTIONAL = {"faiss", "h5py", "dlib", "facenet_pytorch", "matplotlib", "tensorboard", "torchvision",
            "safetensors", "huggingface_hub", "fcntl", "rich", "typer", "PIL", "torch.utils.tensorboard"}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer_of(module: str) -> int:
    best = None
    for k, (_, names) in enumerate(LAYERS):
        for name in names:
            if module == name or (name.endswith(".") and module.startswith(name)):
                if best is None or len(name) > best[1]:
                    best = (k, len(name))
    assert best is not None, f"{module} has no layer: add it to LAYERS in tests/test_layers.py"
    return best[0]


def imports(path: Path, known: set[str]):
    """(imported internal module, line, function-local?, root of an external import) of a file."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
        else:
            continue
        for name in names:
            target = name
            while target and target not in known:
                target = target.rpartition(".")[0]
            root = "torch.utils.tensorboard" if name.startswith("torch.utils.tensorboard") else name.split(".")[0]
            yield (target or None), node.lineno, id(node) not in top, root
            if isinstance(node, ast.ImportFrom):
                break  # `from m import a`: one edge, to m.a when it is a module, else to m


def edges():
    found = modules()
    for module, path in found.items():
        for target, line, local, root in imports(path, set(found)):
            yield module, target, line, local, root


def test_every_import_goes_down_the_layers():
    wrong = [f"{m} (layer {LAYERS[layer_of(m)][0]}) imports {t} (layer {LAYERS[layer_of(t)][0]}), line {line}"
             for m, t, line, _, _ in edges() if t and t != m and layer_of(t) > layer_of(m)]
    assert not wrong, "\n".join(wrong)


def test_tasks_import_neither_each_other_nor_the_kinds():
    wrong = [f"{m} imports {t}" for m, t, *_ in edges()
             if m.startswith("pcae.tasks.") and t and t != m and (t.startswith("pcae.tasks.") or t == "pcae.kinds")]
    assert not wrong, wrong


def test_no_import_cycle_counting_function_local_imports():
    graph: dict[str, set[str]] = {}
    for m, t, *_ in edges():
        graph.setdefault(m, set())
        if t and t != m:
            graph[m].add(t)
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_function_local_imports_are_for_optional_or_torch_free_reasons():
    wrong = []
    for m, t, line, local, root in edges():
        if not local or layer_of(m) == len(LAYERS) - 1:  # the CLI imports the library lazily
            continue
        if root in OPTIONAL or (m in TORCH_FREE and root in ("torch", "numpy")):
            continue
        if t is None and root not in PACKAGES and root in sys.stdlib_module_names:
            wrong.append(f"{m}:{line} imports {root} inside a function")
        elif t is not None:
            wrong.append(f"{m}:{line} imports {t} inside a function")
        elif root in ("torch", "numpy"):
            wrong.append(f"{m}:{line} imports {root} inside a function")
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("module", ["pcae", "pcae.cli", "pcae.data", "pcae.config", "pcae.settings",
                                    "eval.compare_config", "encoders"])
def test_the_cli_and_torch_free_modules_import_no_torch(module):
    import subprocess

    code = f"import sys, {module}; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", (module, out.stdout, out.stderr)


def test_deprecated_modules_still_give_their_names_with_a_warning():
    import importlib
    import warnings

    for module, name in (("pcae.utils", "PcaeError"), ("pcae.utils", "atomic_path"),
                         ("pcae.pixelcnn_task", "PixelCNNSpec"), ("pcae.pixelcnn_task", "sample_checkpoint")):
        sys.modules.pop(module, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            found = getattr(importlib.import_module(module), name)
        assert found is not None and any(w.category is DeprecationWarning for w in caught), module
