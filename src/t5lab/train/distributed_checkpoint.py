"""Checkpoints of a torchrun run: model and optimiser saved sharded by torch.distributed.checkpoint (DCP), so
that they reshard on load and a run resumes on another world size (2 -> 1, 1 -> 2).

A checkpoint folder `step-NNNNNNNN/` (named as `t5lab.train.checkpoint` names them, so `latest_checkpoint`
finds both kinds) holds
    .metadata, __*_*.distcp   DCP's files: {"model": ..., "optimizer": ...} in get_state_dict's form
    training.pt               schedule, data position, TrainState (rank 0; weights_only-loadable)
    rank-NNNNN.pt             each rank's RNG states and data position (a resume on the same world size
                              continues them; on another, ranks start from rank 0's global data position)
    meta.json                 step, configs, world size, sha256 of every file above, finite weights
Every rank writes into one hidden `.tmp-step-*` folder that rank 0 names; after a barrier rank 0 fsyncs and
renames it into place, so a `step-*` folder is always complete and a half-written one is never loaded.
A DCP checkpoint also loads in a plain process without torchrun (DCP reads without a process group).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict
from torch.distributed.tensor import DTensor

from t5lab.errors import T5LabError
from t5lab.files import replace_dir_atomic
from t5lab.train.checkpoint import all_finite, list_checkpoints, rng_state, sha256
from t5lab.train.distributed import barrier, broadcast_text, sum_over_ranks, world

METADATA = ".metadata"


def is_distributed_checkpoint(path: Path) -> bool:
    return (path / METADATA).is_file()


def save(root: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, training: dict[str, Any],
         meta: dict[str, Any], keep_last: int) -> Path:
    """Collective: every rank calls it. Returns the checkpoint's folder."""
    rank = world().rank
    final = root / f"step-{step:08d}"
    tmp_name = ""
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-step-*"):  # left by a run killed while saving
            shutil.rmtree(stale, ignore_errors=True)
        tmp_name = tempfile.mkdtemp(prefix=f".tmp-step-{step:08d}-", dir=root)
    tmp = Path(broadcast_text(tmp_name))
    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=tmp)
    torch.save({"rng": rng_state(), "data": training["data"]}, tmp / f"rank-{rank:05d}.pt")
    tensors = [t for t in model_state.values() if isinstance(t, torch.Tensor)]  # a model's state: all of them
    local = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    device = local[0].device if local else torch.device("cpu")  # NCCL reduces CUDA tensors only
    finite = sum_over_ranks(torch.tensor(float(not all_finite(local)), device=device)).item() == 0
    if rank == 0:
        torch.save({**training, "world_size": world().size}, tmp / "training.pt")
    barrier()  # every rank's shards are written
    if rank == 0:
        # Checksums of every shard, written once all of them exist: verified on resume like any checkpoint.
        files = {f.name: sha256(f) for f in sorted(tmp.iterdir())}
        record = {"step": step, "finite": finite, "files": files, **meta}
        (tmp / "meta.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
        # fsync'ed and renamed into place; the same step may be saved again (the end of a run that had just saved).
        replace_dir_atomic(tmp, final)
        for old in list_checkpoints(root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()  # no rank reads or saves again before the folder is in place
    return final


def read_training(path: Path) -> dict[str, Any]:
    """The training state (schedule, data, TrainState). On the world size that wrote it, with this rank's own
    RNG ('rng') and data position; on another, rank 0's data position (a world-size-independent stream's
    global position) and no 'rng'."""
    training = torch.load(path / "training.pt", map_location="cpu", weights_only=True)
    own = path / f"rank-{world().rank:05d}.pt"
    if training.pop("world_size", None) == world().size and own.is_file():
        training.update(torch.load(own, map_location="cpu", weights_only=True))
    return training


def load_weights(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Load model and optimiser state, resharded to this world (or into a plain process)."""
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state: dict[str, Any] = {"model": model_state, "optimizer": optimizer_state}  # dcp.load fills it in place
    try:
        with warnings.catch_warnings():
            # Without torchrun DCP warns that it "assumes the intent is to load in a single process": it is.
            warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
            dcp.load(state, checkpoint_id=path)
    except Exception as e:  # DCP raises plain errors for missing keys and shape mismatches
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise T5LabError(f"{path}: cannot load into this model and optimiser ({type(e).__name__}: {first})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
