"""torchrun's world as the loop sees it: which rank this process is, how many there are, and the few
collectives the loop needs. Without torchrun (no RANK/WORLD_SIZE in the environment) a run is one rank of
one and nothing here talks to anyone.

The process group comes from torchrun's environment (`env://`): gloo on CPU, NCCL on CUDA, with a timeout,
so that a rank waiting for a dead peer fails instead of hanging; torchrun itself stops every rank when one
exits with an error.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

# How long a collective waits for the slowest rank before failing (a checkpoint save or an evaluation on
# rank 0 alone must fit in it). T5LAB_DIST_TIMEOUT_S overrides it.
DEFAULT_TIMEOUT_S = 600


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The rank that prints, writes metrics and exports."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return dist.is_available() and dist.is_initialized()


def world() -> World:
    """This process's place in torchrun's world (read from its environment; 0 of 1 without torchrun)."""
    return World(rank=int(os.environ.get("RANK", 0)), size=int(os.environ.get("WORLD_SIZE", 1)),
                 local_rank=int(os.environ.get("LOCAL_RANK", 0)))


def init(device: torch.device) -> World:
    """Join torchrun's process group (once per process) for training on `device`; returns the world."""
    here = world()
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return here
    if device.type == "cuda":
        torch.cuda.set_device(device)
    timeout = timedelta(seconds=float(os.environ.get("T5LAB_DIST_TIMEOUT_S", DEFAULT_TIMEOUT_S)))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout,
                            device_id=device if device.type == "cuda" else None)
    atexit.register(_leave)
    return here


def _leave() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def sum_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The sum of `value` over all ranks (itself without a process group)."""
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
    return value


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def broadcast_text(text: str) -> str:
    """Rank 0's `text`, on every rank."""
    if not dist.is_initialized():
        return text
    box = [text]
    dist.broadcast_object_list(box, src=0)
    return box[0]
