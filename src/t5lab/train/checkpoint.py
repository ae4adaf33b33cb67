"""Training checkpoints that survive a kill -9 at any moment, and resume bit for bit.

A checkpoint is a folder `step-NNNNNNNN/` under the run's `checkpoints/` folder holding
    model.safetensors   the weights (never unpickled)
    training.pt         optimiser, schedule, RNG states (python, numpy, torch, cuda), the data stream's
                        position and the loop's counters; plain tensors/numbers, loaded with weights_only=True
    meta.json           step and configs, for people and tools; the sha256 of the two files above, and
                        `finite`: whether every weight was finite when saved
It is written into a hidden temporary folder, every file and the folder fsync'ed, then renamed into place
(rename is atomic), and the parent folder fsync'ed. A folder named `step-*` is therefore always complete;
a half-written one is a `.tmp-step-N-PID-*` folder that the next save removes once PID has died. Older
checkpoints beyond `keep_last` are deleted only after the new one is in place.
Rename protects against a kill, not against a disk that changes bytes later or a file copied in by hand:
the checksums catch those, and `latest_checkpoint` then falls back to the newest intact, finite checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_model, save_model
from torch import nn

from t5lab.errors import T5LabError
from t5lab.files import (
    describe_os_error,
    file_mode,
    fsync,
    make_folder,
    make_temporary_folder,
    os_errors,
    remove_dead_leftovers,
    replace_dir_atomic,
)

_NAME = re.compile(r"^step-(\d+)$")
# Names without a pid come from t5lab versions before the pid was recorded: removed as dead.
_TEMPORARY = re.compile(r"^\.tmp-step-\d+-(?:old-)?(?:(?P<pid>\d+)-)?")
_FILES = ("model.safetensors", "training.pt")  # meta.json holds their checksums
_KILL_HOOK = "T5LAB_TEST_KILL_IN_CHECKPOINT"


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
    """Complete checkpoints under `root`, oldest first (complete: renamed into place; not yet verified)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's meta.json (step, configs, file checksums, `finite`)."""
    meta_file = Path(path) / "meta.json"
    try:
        meta = json.loads(meta_file.read_text())
    except FileNotFoundError:
        raise T5LabError(f"{meta_file}: missing (expected a checkpoint folder written by t5lab)") from None
    except (OSError, ValueError) as e:
        raise T5LabError(f"{meta_file}: unreadable ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise T5LabError(f"{meta_file}: expected a JSON object")
    return meta


def verify_checkpoint(path: str | Path) -> None:
    """Check every file of checkpoint `path` against the sha256 its meta.json recorded at save time; a
    `T5LabError` names the first file that is missing, unreadable or changed. Checkpoints written before
    checksums existed (no `files` in meta) are checked for presence only."""
    path = Path(path)
    expected = read_meta(path).get("files") or dict.fromkeys(_FILES)
    for name, digest in expected.items():
        file = path / name
        try:
            actual = sha256(file)
        except FileNotFoundError:
            raise T5LabError(f"{file}: missing (expected a checkpoint folder written by t5lab)") from None
        except OSError as e:
            raise T5LabError(describe_os_error(file, e)) from None
        if digest is not None and actual != digest:
            raise T5LabError(f"{file}: corrupt (its sha256 differs from the one recorded when it was saved)")


def is_finite_checkpoint(path: str | Path) -> bool:
    """Whether the weights of checkpoint `path` were all finite when saved (`finite` in its meta; a
    checkpoint from before that field is taken as finite)."""
    return bool(read_meta(path).get("finite", True))


def latest_checkpoint(
    root: str | Path,
    verify: bool = True,
    finite_only: bool = True,
    report: Callable[[str], None] | None = None,
) -> Path | None:
    """The newest usable checkpoint under `root`, or None.

    With `verify`, a checkpoint whose files fail their checksums (or cannot be read) is skipped; with
    `finite_only`, so is one whose weights held inf/NaN when saved ("last good" means finite). Each skip is
    reported as one line to `report` (default: stderr), and so is the checkpoint used instead.
    """
    say = report or _print_to_stderr
    skipped = False
    for path in reversed(list_checkpoints(root)):
        try:
            if verify:
                verify_checkpoint(path)
            if finite_only and not is_finite_checkpoint(path):
                raise T5LabError(f"{path}: its weights hold inf or NaN")
        except T5LabError as e:
            say(f"skipping checkpoint {path.name}: {e}")
            skipped = True
            continue
        if skipped:
            say(f"using the newest intact checkpoint instead: {path}")
        return path
    return None


def _print_to_stderr(line: str) -> None:
    print(f"t5lab: {line}", file=sys.stderr)


def sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def all_finite(tensors: Iterable[torch.Tensor]) -> bool:
    """Whether every floating-point tensor holds only finite values (one device sync, not one per tensor)."""
    flags = [torch.isfinite(t).all() for t in tensors if t.is_floating_point()]
    return bool(torch.stack(flags).all()) if flags else True


def _kill_hook(position: str) -> None:
    """Test-only fault injection: T5LAB_TEST_KILL_IN_CHECKPOINT=N kills this process with SIGKILL at the Nth
    numbered position of a checkpoint write (0-9, see save_checkpoint; all on the path of a run's first save),
    to prove that no moment loses a run."""
    wanted = os.environ.get(_KILL_HOOK)
    if wanted is not None and wanted == position:
        os.kill(os.getpid(), signal.SIGKILL)


def save_checkpoint(
    root: str | Path,
    step: int,
    model: nn.Module,
    training: dict[str, Any],
    meta: dict[str, Any] | None = None,
    keep_last: int = 2,
) -> Path:
    """Write checkpoint `step` atomically under `root`; keep the newest `keep_last`. Returns its folder.

    meta.json records the sha256 of each file (verified on resume and on load) and whether the weights are
    all finite. An OS failure (disk full, permission, read-only) is a one-line `T5LabError` naming the path.
    """
    root = Path(root)
    make_folder(root)
    remove_dead_leftovers(root, _TEMPORARY)  # left by a run killed while saving
    final = root / f"step-{step:08d}"
    with os_errors(root):
        tmp = make_temporary_folder(root, f".tmp-step-{step:08d}-")
    try:
        with os_errors(tmp):
            _kill_hook("0")
            save_model(model, str(tmp / "model.safetensors"))
            _kill_hook("1")
            torch.save(training, tmp / "training.pt")
            _kill_hook("2")
            files = {name: sha256(tmp / name) for name in _FILES}
            record = {"step": step, "finite": all_finite(model.state_dict().values()), "files": files, **(meta or {})}
            (tmp / "meta.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
            _kill_hook("3")
            for f in tmp.iterdir():
                f.chmod(file_mode())
                fsync(f)
            _kill_hook("4")
            fsync(tmp)
            _kill_hook("5")
            # Renamed into place (the same step may be saved again: the end of a run that had just saved).
            replace_dir_atomic(tmp, final)
            _kill_hook("6")
            fsync(root)
            _kill_hook("7")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _kill_hook("8")
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    _kill_hook("9")
    return final


def check_checkpoint_fits(path: str | Path, model: nn.Module) -> None:
    """Check, from the safetensors header alone (no tensor is read), that checkpoint `path` holds exactly
    `model`'s tensors with its shapes; a `T5LabError` names the first difference."""
    weights = Path(path) / "model.safetensors"
    try:
        with safe_open(str(weights), framework="pt") as f:
            stored = {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}  # noqa: SIM118
    except OSError as e:
        raise T5LabError(describe_os_error(weights, e)) from None
    except Exception as e:  # safetensors raises its own error type for a corrupt header
        raise T5LabError(f"{weights}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    wanted = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    for key in sorted(set(wanted) | set(stored)):
        if wanted.get(key) != stored.get(key):
            raise T5LabError(
                f"{weights}: tensor '{key}' is {_shape_text(stored.get(key))} in the checkpoint but "
                f"{_shape_text(wanted.get(key))} in this model (the run was made with another model)")


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return "absent" if shape is None else str(list(shape))


def load_checkpoint(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Verify checkpoint `path` (checksums), load its weights into `model` (strictly) and return the
    training state (weights_only)."""
    path = Path(path)
    verify_checkpoint(path)
    weights, training = path / "model.safetensors", path / "training.pt"
    try:
        missing, unexpected = load_model(model, str(weights), strict=False, device=str(_device_of(model)))
    except Exception as e:  # safetensors raises plain errors on corrupt files and shape mismatches
        raise T5LabError(f"{weights}: cannot load into this model ({type(e).__name__}: {e})") from None
    if missing or unexpected:
        raise T5LabError(f"{weights}: does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    try:
        return torch.load(training, map_location="cpu", weights_only=True)
    except Exception as e:
        raise T5LabError(f"{training}: not a readable training state ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0]})") from None


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
