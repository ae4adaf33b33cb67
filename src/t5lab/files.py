"""Files written atomically, and OS failures told as one line.

Atomic: a reader, or a run killed mid-write, sees the old file or the new one, never a torn one. Files and
folders made this way get the modes `open`/`mkdir` would give (0666/0777 less the umask), not the 0600/0700
of `tempfile`, so a finished model is readable by whoever may read the folder it is in.

OS failures (disk full, permission denied, a read-only file system, a file where a folder is expected) are a
user's problem to fix, not a bug: `os_errors(path)` turns them into a `T5LabError` naming the path and the
cause, including the RuntimeError that torch's zip writer and safetensors wrap around a full disk.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from t5lab.errors import T5LabError, describe_os_error

# What torch (inline_container.cc: "unexpected pos", "file write failed") and safetensors ("StorageFull")
# say when a write hits a full disk; neither keeps the errno.
_FULL_DISK_TEXT = re.compile(r"No space left|StorageFull|unexpected pos|file write failed|write failed", re.I)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode `open` gives a new file under the current umask (usually 0644)."""
    return 0o666 & ~_umask()


def folder_mode() -> int:
    """The mode `mkdir` gives a new folder under the current umask (usually 0755)."""
    return 0o777 & ~_umask()


def is_full_disk_error(error: BaseException) -> bool:
    """Whether a non-OSError from a writer (torch.save, safetensors) is a full disk in disguise."""
    return not isinstance(error, OSError) and bool(_FULL_DISK_TEXT.search(str(error)))


@contextmanager
def os_errors(path: str | Path) -> Iterator[None]:
    """Turn an OSError (or a writer's wrapped full disk) raised inside into a one-line `T5LabError`."""
    try:
        yield
    except OSError as e:
        raise T5LabError(describe_os_error(path, e)) from None
    except Exception as e:  # torch.save / safetensors wrap ENOSPC in RuntimeError / SafetensorError
        if is_full_disk_error(e):
            raise T5LabError(describe_os_error(path, e)) from None
        raise


def make_folder(path: Path) -> None:
    """`mkdir -p`, with an OS failure told as one line."""
    with os_errors(path):
        if path.exists() and not path.is_dir():
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(path))
        path.mkdir(parents=True, exist_ok=True)


def make_temporary_folder(parent: Path, prefix: str) -> Path:
    """A fresh hidden folder in `parent` whose name ends with this process's pid (so that a later run can
    tell a dead writer's leftover from a live one's work), with a normal folder mode."""
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=parent))
    folder.chmod(folder_mode())
    return folder


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_dead_leftovers(parent: Path, pattern: re.Pattern[str]) -> list[Path]:
    """Remove the entries of `parent` whose name matches `pattern` (an optional group named `pid`) and whose
    writer is no longer running (no pid in the name: taken as dead): temporaries left by a killed write.
    Returns what was removed."""
    removed = []
    for entry in parent.iterdir() if parent.is_dir() else ():
        match = pattern.match(entry.name)
        if match and not (match.group("pid") and process_alive(int(match.group("pid")))):
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, then rename it over `path` (never a torn file)."""
    with os_errors(path):
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            os.fchmod(fd, file_mode())
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
