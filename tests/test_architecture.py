"""The library's layers hold: no import cycle, no import from a lower layer to a higher one, no private name
imported across modules, models never import data, and no loader that can unpickle code.

The import graph is read from the source (every ``import`` / ``from ... import`` statement, also inside
functions), so a function-local import cannot hide a violation.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import medvlp_lib

PKG = Path(medvlp_lib.__file__).parent

# lowest first; a module may import only from a strictly lower layer or from its own package
LAYERS = {
    "utils": 0, "config": 0,              # config: typed frozen configurations (imports nothing of the library)
    "stats": 1,                          # the verdict protocol's statistics (pure numpy / scipy)
    "results": 2,                        # results files, summaries, verdict helpers
    "data": 3, "models": 3, "train": 3,  # siblings: never import one another
    "methods": 4,                        # training methods + losses (use data, models and the trainer)
    "eval": 5,
    "viz": 6,
    "pipeline": 7,
    "experiments": 8,
    "ledger": 9,
    "notebooks": 10, "book": 10,        # the papermill runner / the chapters' helpers (glue, figures, tables)
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def import_edges() -> list[tuple[str, str, list[str], int]]:
    """``(importer, imported module, imported names, line)`` for every intra-library import."""
    edges = []
    for path in sorted(PKG.rglob("*.py")):
        mod = _module_name(path)
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                    base = base[:len(base) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target.split(".")[0] == "medvlp_lib":
                    names = [a.name for a in node.names]
                    # "from . import x" / "from .pkg import mod": the names may be submodules
                    for n in names:
                        if (PKG.parent / (target.replace(".", "/") + f"/{n}.py")).exists():
                            edges.append((mod, f"{target}.{n}", [], node.lineno))
                    edges.append((mod, target, names, node.lineno))
            elif isinstance(node, ast.Import):
                edges += [(mod, a.name, [], node.lineno) for a in node.names if a.name.split(".")[0] == "medvlp_lib"]
    return edges


def layer_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_every_top_level_module_has_a_layer():
    tops = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
            if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert tops == set(LAYERS), f"modules without a layer: {tops - set(LAYERS)}; stale layers: {set(LAYERS) - tops}"


def test_no_import_from_a_lower_to_a_higher_layer():
    bad = []
    for src, dst, _, line in import_edges():
        a, b = layer_of(src), layer_of(dst)
        if not a or not b or a == b:
            continue
        if LAYERS[b] >= LAYERS[a]:
            bad.append(f"{src}:{line} ({a}, layer {LAYERS[a]}) imports {dst} ({b}, layer {LAYERS[b]})")
    assert not bad, "imports that go up or sideways:\n" + "\n".join(bad)


def test_models_never_import_data():
    bad = [f"{s}:{l} imports {d}" for s, d, _, l in import_edges() if layer_of(s) == "models" and layer_of(d) == "data"]
    assert not bad, "\n".join(bad)


def test_no_import_cycle():
    graph: dict[str, set[str]] = {}
    for src, dst, _, _ in import_edges():
        if src != dst and not src.startswith(dst + "."):  # a submodule importing its own package's __init__
            graph.setdefault(src, set()).add(dst)
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_no_private_name_imported_across_modules():
    bad = [f"{s}:{l} imports {n} from {d}" for s, d, names, l in import_edges() for n in names
           if n.startswith("_") and not n.startswith("__") and d != s]
    assert not bad, "\n".join(bad)


SETUP_CELL_MARK = "# Setup for Colab and fresh environments"


def test_notebooks_and_benchmarks_use_public_names_only():
    """Chapters and benchmarks import public names only and never edit sys.path to reach code -- except the
    Colab setup cell (tagged remove-cell), which puts a fresh clone of the repository on the path."""
    root = PKG.parent
    bad = []
    for path in sorted((root / "benchmarks").glob("*.py")) + sorted((root / "notebooks").glob("*.md")):
        in_setup = False
        for i, line in enumerate(path.read_text().splitlines(), 1):
            s = line.strip()
            if s.startswith(SETUP_CELL_MARK):
                in_setup = True
            elif s == "```":
                in_setup = False
            if in_setup:
                continue
            if s.startswith("from medvlp_lib") and " import " in s:
                names = s.split(" import ", 1)[1].strip("()").split(",")
                bad += [f"{path.name}:{i}: {n.strip()}" for n in names if n.strip().startswith("_")]
            if "sys.path" in s:
                bad.append(f"{path.name}:{i}: edits sys.path")
    assert not bad, "\n".join(bad)


def test_no_loader_can_unpickle_code():
    bad = [f"{p.relative_to(PKG.parent)}:{i}" for p in PKG.rglob("*.py")
           for i, line in enumerate(p.read_text().splitlines(), 1) if "weights_only=False" in line]
    assert not bad, "torch.load(weights_only=False) runs pickled code from the file: " + ", ".join(bad)
