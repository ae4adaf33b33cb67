"""Runs the Triton kernel under Triton's interpreter, on CPU, in a worker process of its own.

The interpreter must be switched on (TRITON_INTERPRET=1) before Triton is first imported: Triton's own library
functions (`tl.zeros_like`, `tl.sum`, ...) are decorated at that import, compiled or interpreted for good. In
the pytest process something may have imported Triton already, and the `gpu` tests need it compiled, so the
checks run in one spawned worker started with the variable set; a failed assertion there fails the test here.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest


@pytest.fixture(scope="session")
def interpreted() -> Iterator[Callable[..., Any]]:
    """`interpreted(fn, *args, **kwargs)` runs fn in the interpreter's worker and returns its result."""
    pytest.importorskip("triton")
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"  # the worker inherits the environment when it starts
    executor = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
    try:
        executor.submit(os.getpid).result()  # start it now, while the variable is set
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before
    yield lambda fn, *args, **kwargs: executor.submit(fn, *args, **kwargs).result()
    executor.shutdown()
