"""The documentation site: its Python examples run, its command lines use real commands and flags, its error
headings exist in the code, and it builds with `mkdocs build --strict` (skipped, saying why, when the `docs`
extra is not installed)."""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import subprocess
import sys
import typing
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


# `t5lab CMD ...` or `python -m t5lab CMD ...` in a shell block, with its continuation lines joined.
_COMMAND_LINE = re.compile(r"(?:^|\s)(?:-m )?t5lab ([a-z-]+)((?: [^\n]*)?)$", re.MULTILINE)
_SHELL_BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)
_EVERY_COMMAND_TAKES = {"config", "help", "print_config"}


def shell_commands(page: Path) -> list[tuple[str, list[str]]]:
    """(command, its --flags as parameter names) for each t5lab command line of the page's shell blocks."""
    found = []
    for block in _SHELL_BLOCK.findall(page.read_text()):
        commands = re.sub(r"(^|\s)#.*", "", block.replace("\\\n", " "))  # comments are not commands
        for name, rest in _COMMAND_LINE.findall(commands):
            found.append((name, [f.replace("-", "_") for f in re.findall(r"(?:^|\s)--([a-z][a-z0-9_-]*)", rest)]))
    return found


def parameter_names(function) -> set[str]:
    """A recipe function's parameters, with the keys of a `**options: Unpack[SomeTypedDict]` (flags too)."""
    names = set()
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            (options,) = typing.get_args(typing.get_type_hints(function)[parameter.name])
            names |= set(typing.get_type_hints(options))
        else:
            names.add(parameter.name)
    return names


def test_command_lines_use_real_commands_and_flags():
    """Every `t5lab CMD --flag` on a page names a command and a parameter of its recipe function (the CLI's
    flags are generated from those signatures), so renamed or removed flags fail here, not for a reader."""
    from t5lab.cli import COMMANDS, command

    wrong = []
    for page in PAGES:
        for name, flags in shell_commands(page):
            if name not in COMMANDS:
                wrong.append(f"{page.name}: unknown command 't5lab {name}'")
                continue
            known = parameter_names(command(name)) | _EVERY_COMMAND_TAKES
            wrong += [f"{page.name}: t5lab {name} has no --{flag}" for flag in flags if flag not in known]
    assert sum(len(flags) for page in PAGES for _, flags in shell_commands(page)) >= 50  # the pattern matches
    assert not wrong, "\n".join(wrong)


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
