"""Files written atomically: a reader, or a run killed mid-write, sees the old file or the new one, never a torn one."""

from __future__ import annotations

import io
import os
import tempfile
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


def write_figure(figure: Any, path: Path, **savefig: Any) -> None:
    """A matplotlib figure as a PNG file, written atomically; `savefig` goes to `figure.savefig` (e.g. dpi)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", **savefig)
    write_atomic(path, buffer.getvalue())
