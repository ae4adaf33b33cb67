"""Each step's loss and gradient norm, kept on the device until something needs them as numbers.

Reading a value from an accelerator (`float(t)`, `.item()`, `.tolist()`) waits until the device has finished
every queued kernel, so a read per step leaves the device idle while the host prepares the next step. The
loop instead records the step's device tensors here and reads them all in one transfer when a metrics row,
an evaluation or a checkpoint needs them. A non-finite loss is still found: at that read, naming the step
it happened at; no checkpoint is written before the read, so every checkpoint holds finite training.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from t5lab.errors import T5LabError
from t5lab.train.checkpoint import latest_checkpoint
from t5lab.train.state import TrainState


class DeferredLosses:
    """The unread steps of a run: their summed-over-ranks losses and the last gradient norm, on the device."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.first_step = 0  # the step of losses[0]
        self.losses: list[torch.Tensor] = []
        self.grad_norm: torch.Tensor | float = math.nan
        self.last_loss = math.nan
        self.last_grad_norm = math.nan

    def add(self, step: int, loss_sum: torch.Tensor, grad_norm: torch.Tensor | float) -> None:
        if not self.losses:
            self.first_step = step
        self.losses.append(loss_sum.detach())
        self.grad_norm = grad_norm

    def read(self, state: TrainState, checkpoints: Path) -> None:
        """Move the unread losses into `state`'s logging window (in step order, as floats: the same sums as
        adding one step at a time) and read the last gradient norm; a non-finite loss stops the run, naming the
        last checkpoint under `checkpoints` (written before it: every checkpoint follows a read)."""
        if not self.losses:
            return
        values = torch.stack(self.losses).tolist()  # one device read for the whole window
        self.losses = []
        for offset, summed in enumerate(values):
            loss = summed / self.world_size
            if not math.isfinite(loss):
                last_good = latest_checkpoint(checkpoints)
                raise T5LabError(
                    f"step {self.first_step + offset}: the training loss is {loss}; stopped (last good "
                    f"checkpoint: {last_good if last_good else 'none'}); try a lower --lr, more warmup or fp32 "
                    "precision")
            state.log_loss_sum += loss
            state.log_steps += 1
            self.last_loss = loss
        self.last_grad_norm = float(self.grad_norm)
