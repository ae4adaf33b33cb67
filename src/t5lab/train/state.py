"""What a run's state is made of: `TrainState` (the loop's own counters, what a checkpoint holds besides the
model, optimiser, schedule, data position and RNG; the loop advances one object, the checkpoint stores its
`state_dict()`), the resumable `Batches` source, and the seeding of every RNG."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch

from t5lab.errors import T5LabError


class Batches(Protocol):
    """A resumable source of batches: dicts of tensors with at least "input_ids" and "labels". Under torchrun,
    each rank's source yields its own part of every global batch (see `t5lab.data.pretraining`)."""

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices): dropout and anything else drawn during training."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@dataclass
class TrainState:
    """Counters, the partial logging window, the monitor's best/patience and the arithmetic the run chose.

    Attributes:
        step: optimiser steps done.
        log_loss_sum, log_steps: the training losses since the last metrics row (rows fall on multiples of
            log_every, so an interrupted run resumes mid-window and still logs the same rows).
        elapsed_s: seconds spent in training steps, summed over resumes.
        best, best_step, best_results: the monitored metric's best value, its step and its evaluation.
        stale_evals: evaluations in a row without improvement (for early stopping).
        stopped: stopped early; a resumed run stays stopped.
        autocast: 'bfloat16' or None (fp32): precision 'auto' is resolved once per run and kept on resume.
    """

    step: int = 0
    log_loss_sum: float = 0.0
    log_steps: int = 0
    elapsed_s: float = 0.0
    best: float | None = None
    best_step: int | None = None
    best_results: dict[str, float] = field(default_factory=dict)
    stale_evals: int = 0
    stopped: bool = False
    autocast: str | None = None

    def state_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict[str, Any], where: object = "checkpoint") -> TrainState:
        """Also reads the `loop` dict of checkpoints written before TrainState (the same keys; 'autocast' may
        be absent there); a key this version does not know is refused rather than dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(state) - known)
        if unknown:
            raise T5LabError(f"{where}: training state has fields {unknown} this t5lab does not know "
                             "(written by a newer version?)")
        return cls(**state)

    def end_log_window(self) -> float:
        """The mean loss of the window that a metrics row closes; starts the next window."""
        mean = self.log_loss_sum / self.log_steps
        self.log_loss_sum, self.log_steps = 0.0, 0
        return mean
