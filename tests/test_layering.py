"""Imports flow one way: cli → recipes → train/data/interop/analysis/generate/predict → kernels → model → config,
and no module reaches back to one that imports it.

A small AST check instead of a tool: every `t5lab.*` import (function-level ones included) is compared with
what its layer may use, and the module import graph (lazy imports included) must have no cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "t5lab"

# What each package may import from t5lab (besides itself). Leaf modules: config, shapes, errors, metrics, files,
# device.
LEAVES = {"config", "shapes", "errors", "metrics", "files", "device"}
ALLOWED = {
    "config": LEAVES,
    "shapes": LEAVES,
    "errors": set(),
    "files": {"errors"},
    "device": {"errors"},
    "metrics": {"errors"},
    "model": LEAVES,
    "kernels": LEAVES | {"model"},
    "data": LEAVES,
    "generate": LEAVES | {"model", "kernels"},
    "predict": LEAVES | {"model", "data", "generate"},
    "interop": LEAVES | {"model", "data", "kernels"},
    "train": LEAVES | {"model", "kernels", "data", "interop", "generate"},
    "analysis": LEAVES | {"model", "kernels", "data", "train", "generate", "interop"},
    "recipes": LEAVES | {"model", "kernels", "data", "train", "generate", "predict", "interop", "analysis"},
    "cli": {"errors", "files", "recipes"},
    "__main__": {"cli"},
    "__init__": LEAVES | {"model", "interop", "data", "generate"},
}
EXCEPTIONS: set[tuple[str, str]] = set()  # none: the model delegates nowhere upwards


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "t5lab" and len(parts) > 1 else None


def _module_name(path: Path) -> str:
    parts = ("t5lab", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            # `from t5lab.recipes import bench` imports the module t5lab.recipes.bench
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_imports_flow_one_way():
    violations = []
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC)
        layer = rel.parts[0].removesuffix(".py")
        for module in _imports(path):
            target = _part(module)
            if target is None or target == layer or (layer, target) in EXCEPTIONS:
                continue
            if target not in ALLOWED.get(layer, set()):
                violations.append(f"{rel} imports {module}")
    assert not violations, "layering violations:\n" + "\n".join(sorted(violations))


def test_model_never_imports_training_or_cli():
    for path in (SRC / "model").rglob("*.py"):
        for module in _imports(path):
            assert _part(module) not in {"train", "data", "recipes", "cli", "analysis", "kernels", "generate",
                                         "interop"}, (path, module)


def _import_graph() -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in SRC.rglob("*.py")}
    return {
        name: {target for target in _imports(path) if target in modules and target != name}
        for name, path in modules.items()
    }


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that ends where it starts, or None (depth-first search)."""
    state: dict[str, str] = {}  # "open" while on the current path, "done" once fully explored
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return path[path.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_module_import_graph_has_no_cycle():
    graph = _import_graph()
    for source, targets in graph.items():  # the edges EXCEPTIONS still allows
        targets -= {t for t in targets if (_part(source), _part(t)) in EXCEPTIONS}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_cycle_finder_finds_lazy_cycles():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None
    graph = _import_graph()
    assert "t5lab.shapes" in graph["t5lab.recipes.shapes"]  # function-level and `from X import module` seen


def test_recipes_never_import_each_other():
    """A command's recipe composes components (recipes/sources.py, run_outputs.py, ...), never another recipe."""
    from t5lab.cli import COMMANDS

    recipes = {target.split(":")[0] for target in COMMANDS.values()}
    graph = _import_graph()
    shared = sorted(f"{r} imports {t}" for r in recipes for t in graph[r] if t in recipes)
    assert not shared, "\n".join(shared)
