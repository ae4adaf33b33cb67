"""One run per run folder: an OS lock on `RUN/.lock` held while a run uses the folder.

`fcntl.flock` is released by the kernel when the holder's file is closed or its process dies (kill -9
included), so a lock is never left behind by a crash and never needs deleting by hand. The lock file keeps
the holder's pid, for the message a second run gets. Under torchrun only rank 0 takes it (`RANK` unset
or 0); the other ranks belong to the same run.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from t5lab.errors import T5LabError
from t5lab.files import describe_os_error, file_mode, make_folder

LOCK_FILE = ".lock"


@contextmanager
def run_folder_lock(folder: str | Path) -> Iterator[Path]:
    """Hold the lock on run folder `folder` (made if absent) for the `with` block; a second holder, in this
    process or another, gets a one-line `T5LabError` naming the pid of the run that holds it."""
    folder = Path(folder)
    make_folder(folder)
    path = folder / LOCK_FILE
    if os.environ.get("RANK", "0") != "0":  # torchrun's other ranks share rank 0's run and its lock
        yield path
        return
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, file_mode())
    except OSError as e:
        raise T5LabError(describe_os_error(path, e)) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise T5LabError(describe_os_error(path, e)) from None
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise T5LabError(f"{folder}: another run (pid {holder}) is using this run folder; wait for it to "
                             "finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock; the file stays (deleting it would race with a new holder)
