"""Checkpoints as the loop sees them: where a resumed run starts, and saving in the run's format — one
process's (`checkpoint`: model.safetensors + training.pt) or torchrun's (`distributed_checkpoint`: DCP shards).

Either kind resumes a plain process; a torchrun run resumes either kind with DDP (every rank reads the whole
single-process checkpoint), while FSDP needs a DCP checkpoint (it loads resharded).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from t5lab.errors import T5LabError
from t5lab.train import distributed_checkpoint
from t5lab.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from t5lab.train.config import TrainConfig
from t5lab.train.schedule import WarmupSchedule
from t5lab.train.state import Batches, TrainState, seed_everything


@dataclass
class Resumed:
    path: Path
    sharded: bool  # a DCP checkpoint
    training: dict[str, Any]  # schedule, data, loop state, ['optimizer'], ['rng']

    @property
    def state(self) -> TrainState:
        return TrainState.from_state_dict(self.training["loop"], self.path)


def find(root: Path, config: TrainConfig, model: nn.Module) -> Resumed | None:
    """The latest checkpoint under `root`, its training state read (and, for the single-process kind, its
    weights loaded into the still unwrapped `model`); None when there is none."""
    path = latest_checkpoint(root)
    if path is None:
        return None
    if distributed_checkpoint.is_distributed_checkpoint(path):
        return Resumed(path, True, distributed_checkpoint.read_training(path))
    if config.parallel == "fsdp":
        raise T5LabError(f"{path}: a single-process checkpoint; resume it with parallel 'ddp' (FSDP resumes from "
                         "checkpoints written under torchrun)")
    return Resumed(path, False, load_checkpoint(path, model))


def restore(found: Resumed, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: WarmupSchedule,
            batches: Batches, config: TrainConfig, rank: int) -> None:
    """Put the optimiser, schedule, data position and RNG back where the checkpoint left them."""
    training = found.training
    if found.sharded:
        distributed_checkpoint.load_weights(found.path, model, optimizer)
    else:
        optimizer.load_state_dict(training["optimizer"])
    scheduler.load_state_dict(training["scheduler"])
    # The schedule's shape follows the config (a resumed run may be given more steps).
    scheduler.kind, scheduler.warmup, scheduler.total = config.schedule, config.warmup, config.steps
    scheduler.final_lr = config.final_lr
    batches.load_state_dict(training["data"])
    if "rng" in training:
        set_rng_state(training["rng"])
    else:  # a rank the checkpoint's (smaller) world did not have: a fresh stream, fixed by seed, step, rank
        seed_everything(config.seed + 7919 * int(training["loop"]["step"]) + rank)


def save(root: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, training: dict[str, Any],
         meta: dict[str, Any], keep_last: int) -> Path:
    """A checkpoint of step `step`: DCP shards under torchrun (collective), else the single-process kind."""
    if dist.is_available() and dist.is_initialized():
        return distributed_checkpoint.save(root, step, model, optimizer, training, meta, keep_last)
    training = {**training, "optimizer": optimizer.state_dict(), "rng": rng_state()}
    return save_checkpoint(root, step, model, training, meta=meta, keep_last=keep_last)
