"""Files written atomically: a reader, or a run killed mid-write, sees the old file or the new one, never a torn one."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path` (never a torn file)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def fsync(path: Path) -> None:
    """Flush a file's or a folder's contents (a folder: its entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir_atomic(tmp: Path, final: Path, keep: Callable[[str], bool] | None = None) -> None:
    """Put the complete folder `tmp` in place of `final` (a sibling): its files, itself and then the parent
    are fsync'ed, so that after a crash `final` is the old folder or the new one, never a torn one.

    A folder cannot replace another in one rename: an existing `final` is first moved aside to a hidden
    `.NAME.old-*` sibling (a crash in between leaves it intact there), and its entries for which `keep(name)`
    is true and that the new folder lacks (e.g. logs beside a model) are carried over before it is removed.
    """
    for entry in tmp.iterdir():
        if entry.is_file():
            fsync(entry)
    fsync(tmp)
    if not final.exists():
        os.replace(tmp, final)
    else:
        old = final.with_name(f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.replace(final, old)
        os.replace(tmp, final)
        for entry in old.iterdir():
            if keep is not None and keep(entry.name) and not (final / entry.name).exists():
                os.replace(entry, final / entry.name)
        shutil.rmtree(old, ignore_errors=True)
    fsync(final.parent)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend: figures go to files, no display is needed (imported on first
    use, as matplotlib is slow to import)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_figure(figure: Any, path: Path, **savefig: Any) -> None:
    """A matplotlib figure as a PNG file, written atomically; `savefig` goes to `figure.savefig` (e.g. dpi)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **savefig)
    write_atomic(path, buffer.getvalue())
