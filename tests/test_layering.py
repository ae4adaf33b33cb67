"""Imports flow one way: cli → recipes → train/data/interop/analysis/generate/predict → model → config.

A small AST check instead of a tool: every `t5lab.*` import (function-level ones included) is compared with
what its layer may use.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "t5lab"

# What each package may import from t5lab (besides itself). Leaf modules: config, shapes, errors, metrics, files.
LEAVES = {"config", "shapes", "errors", "metrics", "files"}
ALLOWED = {
    "config": LEAVES,
    "shapes": LEAVES,
    "errors": set(),
    "files": set(),
    "metrics": {"errors"},
    "model": LEAVES,
    "kernels": LEAVES | {"model"},
    "data": LEAVES,
    "generate": LEAVES | {"model"},
    "predict": LEAVES | {"model", "data", "generate"},
    "interop": LEAVES | {"model", "data"},
    "train": LEAVES | {"model", "data", "interop", "generate"},
    "analysis": LEAVES | {"model", "data", "train", "generate", "interop"},
    "recipes": LEAVES | {"model", "data", "train", "generate", "predict", "interop", "analysis"},
    "cli": {"errors", "recipes"},
    "__main__": {"cli"},
    "__init__": LEAVES | {"model", "interop", "data", "generate"},
}
# The model's two conveniences users expect on it (`model.generate`, `model.save_pretrained`) delegate
# upwards lazily; the code they run lives in those layers.
EXCEPTIONS = {("model", "generate"), ("model", "interop")}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "t5lab" and len(parts) > 1 else None


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
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
            assert _part(module) not in {"train", "data", "recipes", "cli", "analysis"}, (path, module)
