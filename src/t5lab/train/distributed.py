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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from t5lab.errors import T5LabError

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
    """The sum of `value` over all ranks (itself without a process group); on the training device, which NCCL
    needs."""
    if dist.is_initialized():
        value = value.clone()
        dist.all_reduce(value)
    return value


def gather_objects(value: Any) -> list[Any]:
    """Every rank's `value` (a picklable object), in rank order ([value] without a process group)."""
    if not dist.is_initialized():
        return [value]
    values: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


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


class RankSlice:
    """Rank `rank`'s part of a one-rank batch source: of each micro-batch (the global micro-batch), the rows
    [rank * n / world, (rank + 1) * n / world). The ranks together see exactly the global batches one rank
    sees, and the position (the source's own) does not depend on the world size. Every rank reads all of the
    data, so this suits small sources (fine-tuning sets); pre-training streams shard by rank themselves."""

    def __init__(self, source: Any, rank: int, world_size: int) -> None:
        self.source, self.rank, self.world_size = source, rank, world_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for batch in self.source:
            rows = len(batch["input_ids"])
            if rows % self.world_size:
                raise T5LabError(f"a micro-batch of {rows} examples does not split over {self.world_size} ranks")
            part = rows // self.world_size
            yield {k: v[self.rank * part:(self.rank + 1) * part] for k, v in batch.items()}

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)
