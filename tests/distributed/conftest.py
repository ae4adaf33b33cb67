"""Launching torchrun from tests: CPU, gloo, tiny shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

WORKER = Path(__file__).with_name("worker.py")
SRC = Path(__file__).resolve().parents[2] / "src"


def torchrun_env() -> dict[str, str]:
    """This checkout's t5lab first on the path; one thread per rank."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1", "T5LAB_DIST_TIMEOUT_S": "60"}


def torchrun(args: list[str], *, nproc: int = 2, timeout: float = 180, extra: list[str] | None = None,
             cwd: Path | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               *(extra or []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=torchrun_env(), cwd=cwd)


def run_worker(runs: list[dict[str, Any]], folder: Path, *, nproc: int = 2, timeout: float = 180,
               check: bool = True) -> subprocess.CompletedProcess:
    spec = folder / f"runs-{len(list(folder.glob('runs-*.json')))}.json"
    spec.write_text(json.dumps(runs))
    done = torchrun([str(WORKER), str(spec)], nproc=nproc, timeout=timeout)
    if check and done.returncode != 0:
        pytest.fail(f"torchrun failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    """Every test here runs under the shared `one_thread` fixture (the torchrun ranks get OMP_NUM_THREADS=1)."""
