"""The documentation site: its Python examples run, its error headings exist in the code, and it builds with
`mkdocs build --strict` (skipped, saying why, when the `docs` extra is not installed)."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
# A block whose first line says so needs what tests may not use (the network, real weights).
NOT_RUN = "# not run"
_PYTHON_BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def python_blocks(page: Path) -> list[str]:
    return [block for block in _PYTHON_BLOCK.findall(page.read_text()) if not block.startswith(NOT_RUN)]


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_python_examples_run(page, tmp_path, monkeypatch, one_thread, capsys):
    """A page's blocks run in order in one namespace (later blocks use earlier names), in an empty folder."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{page.name}[python block {number}]", "exec"), namespace)  # noqa: S102
    assert capsys.readouterr().out, f"{page.name}: its examples should print what they show"


def test_troubleshooting_headings_are_real_messages():
    """Each `### \\`fragment\\`` heading of the troubleshooting page occurs in the source of a T5LabError."""
    source = "\n".join(p.read_text() for p in (REPO_ROOT / "src" / "t5lab").rglob("*.py"))
    headings = re.findall(r"^### `(.+)`$", (DOCS / "troubleshooting.md").read_text(), re.MULTILINE)
    assert len(headings) >= 20
    missing = [h for h in headings if h not in source]
    assert not missing, f"troubleshooting.md lists messages the code no longer has: {missing}"


def test_every_page_is_in_the_nav():
    nav = (REPO_ROOT / "mkdocs.yml").read_text()
    assert not [p.name for p in PAGES if f": {p.name}" not in nav]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None or importlib.util.find_spec("mkdocstrings") is None,
                    reason="mkdocs / mkdocstrings not installed (pip install -e '.[docs]')")
def test_site_builds_strict(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=REPO_ROOT, capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shapes = (tmp_path / "site" / "shapes" / "index.html").read_text()
    assert "t5-efficient-small-el16-dl8" in shapes and "100,365,824" in shapes  # the generated tables
    assert "switch-c-2048" in shapes
    assert "load_pretrained" in (tmp_path / "site" / "api" / "index.html").read_text()
