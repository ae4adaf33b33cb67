"""The one exception type t5lab raises for a user's mistake.

The CLI prints a `T5LabError` as a single line and exits non-zero; anything else is a bug and keeps its
traceback. Messages name the file, field or tensor at fault and what was expected. An OS failure (disk full,
permission denied, read-only, a file where a folder is expected) is the user's to fix too:
`describe_os_error` words it as one line naming the path and the cause.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path

_CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EROFS: "read-only file system",
    errno.ENOTDIR: "a file is where a folder is expected",
    errno.EEXIST: "already exists (a file is where a folder is expected?)",
    errno.EISDIR: "is a folder, expected a file",
    errno.ENOENT: "no such file or folder",
    errno.EIO: "input/output error (failing disk?)",
}


class T5LabError(Exception):
    """A problem with the user's input (a file, a name, a config field), not a bug in t5lab."""


def field_checker(config: object, kind: str) -> Callable[[bool, str, str], None]:
    """`need(ok, field, expected)` for validating `config`'s fields: a failed check raises one line,
    "<kind> '<field>'=<value>: expected <expected>" (e.g. kind "train config field")."""

    def need(ok: bool, field: str, expected: str) -> None:
        if not ok:
            raise T5LabError(f"{kind} '{field}'={getattr(config, field)!r}: expected {expected}")

    return need
def describe_os_error(path: str | Path, error: BaseException) -> str:
    """One line: the path and the cause of an OSError (or of torch's/safetensors' wrapper of one)."""
    if isinstance(error, OSError):
        where = error.filename or path
        cause = _CAUSES.get(error.errno or 0, error.strerror or str(error))
        return f"{where}: {cause}"
    return f"{path}: no space left on device (the write failed: {str(error).strip().splitlines()[0][:120]})"
