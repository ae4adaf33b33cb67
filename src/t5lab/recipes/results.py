"""Result files of the shape lab: JSONL rows appended by rewriting the file atomically, rows read back."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from t5lab.data.tasks.base import read_jsonl
from t5lab.errors import T5LabError
from t5lab.files import write_atomic


def append_row(path: Path, row: dict[str, Any]) -> None:
    """Add one JSON row to a JSONL file (created with its folder if needed), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_bytes() if path.is_file() else b""
    if old and not old.endswith(b"\n"):
        old += b"\n"
    write_atomic(path, old + (json.dumps(row) + "\n").encode())


def iter_rows(file: Path, fields: tuple[str, ...], hint: str = "") -> Iterator[tuple[int, dict]]:
    """(line number, row) of every JSONL row of an existing `file` (read by the tasks' `read_jsonl`: one JSON
    object per line); each row must hold `fields`.

    `hint` follows the missing-field error (what rows the command expects).
    """
    for location, row in read_jsonl(file):
        for field in fields:
            if field not in row:
                raise T5LabError(f"{file}:{location}: missing field '{field}'{hint}")
        yield int(location), row


def read_rows(paths: list[str], fields: tuple[str, ...], hint: str = "") -> list[tuple[Path, int, dict]]:
    """(file, line number, row) of every JSONL row in `paths` (see `iter_rows`); at least one row in all."""
    rows = []
    for path in paths:
        file = Path(path)
        if not file.is_file():
            raise T5LabError(f"{file}: no such file (expected JSONL result rows)")
        rows += [(file, number, row) for number, row in iter_rows(file, fields, hint)]
    if not rows:
        raise T5LabError(f"{', '.join(paths)}: no result rows")
    return rows
