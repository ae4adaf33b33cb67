"""Training checkpoints that survive a kill -9 at any moment, and resume bit for bit.

A checkpoint is a folder `step-NNNNNNNN/` under the run's `checkpoints/` folder holding
    model.safetensors   the weights (never unpickled)
    training.pt         optimiser, schedule, RNG states (python, numpy, torch, cuda), the data stream's
                        position and the loop's counters; plain tensors/numbers, loaded with weights_only=True
    meta.json           step and configs, for people and tools
It is written into a hidden temporary folder, every file and the folder fsync'ed, then renamed into place
(rename is atomic), and the parent folder fsync'ed. A folder named `step-*` is therefore always complete;
a half-written one is a `.tmp-*` folder that the next save removes. Older checkpoints beyond `keep_last`
are deleted only after the new one is in place.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from t5lab.errors import T5LabError
from t5lab.files import replace_dir_atomic

_NAME = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, Any]:
    """Every random number generator the loop's results depend on, as weights_only-loadable values."""
    np_state = np.random.get_state(legacy=False)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "key": torch.from_numpy(np_state["state"]["key"].astype(np.int64)),
            "pos": int(np_state["state"]["pos"]),
            "has_gauss": int(np_state["has_gauss"]),
            "gauss": float(np_state["gauss"]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    n = state["numpy"]
    np.random.set_state({
        "bit_generator": "MT19937",
        "state": {"key": n["key"].numpy().astype(np.uint32), "pos": n["pos"]},
        "has_gauss": n["has_gauss"],
        "gauss": n["gauss"],
    })
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(root: str | Path) -> Path | None:
    found = list_checkpoints(root)
    return found[-1] if found else None


def save_checkpoint(
    root: str | Path,
    step: int,
    model: nn.Module,
    training: dict[str, Any],
    meta: dict[str, Any] | None = None,
    keep_last: int = 2,
) -> Path:
    """Write checkpoint `step` atomically under `root`; keep the newest `keep_last`. Returns its folder."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step-*"):  # left by a run killed while saving
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:08d}-", dir=root))
    try:
        save_model(model, str(tmp / "model.safetensors"))
        torch.save(training, tmp / "training.pt")
        (tmp / "meta.json").write_text(json.dumps({"step": step, **(meta or {})}, indent=2, default=str) + "\n")
        replace_dir_atomic(tmp, final)  # the same step may be saved again (the end of a run that had just saved)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load the weights into `model` (strictly) and return the training state (weights_only)."""
    path = Path(path)
    weights, training = path / "model.safetensors", path / "training.pt"
    for f in (weights, training):
        if not f.is_file():
            raise T5LabError(f"{f}: missing (expected a checkpoint folder written by t5lab)")
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(_device_of(model)))
    except Exception as e:  # safetensors raises plain errors on corrupt files and shape mismatches
        raise T5LabError(f"{weights}: cannot load into this model ({type(e).__name__}: {e})") from None
    if missing or unexpected:
        raise T5LabError(f"{weights}: does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    try:
        return torch.load(training, map_location="cpu", weights_only=True)
    except Exception as e:
        raise T5LabError(f"{training}: not a readable training state ({type(e).__name__}: {e})") from None


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
