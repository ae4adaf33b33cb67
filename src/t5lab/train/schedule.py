"""Learning-rate schedules: linear warmup, then cosine / linear decay to a final lr, inverse square root, or
constant.

`lr_at` is the whole schedule as a pure function of the step; `WarmupSchedule` wraps it as a torch
`LRScheduler` whose state dict holds only numbers and strings (it loads with `weights_only=True`).
Step k (0-based: the k-th optimiser step) runs at `lr_at(k)`: warmup reaches the peak lr on step
`warmup - 1`, and the decay ends at `final_lr` on the last step, `total - 1`.
"""

from __future__ import annotations

import math

import torch

from t5lab.errors import T5LabError
from t5lab.train.config import SCHEDULES


def lr_at(step: int, *, kind: str, lr: float, warmup: int, total: int, final_lr: float = 0.0) -> float:
    """The learning rate of optimiser step `step` (0-based) of `total`."""
    if kind not in SCHEDULES:
        raise T5LabError(f"schedule {kind!r}: expected one of {', '.join(SCHEDULES)}")
    if step < warmup:
        return lr * (step + 1) / warmup
    if kind == "constant":
        return lr
    if kind == "inverse-sqrt":
        # T5's rsqrt decay, normalised so that the decay continues from the peak: lr * sqrt(w / step).
        return lr * math.sqrt(max(warmup, 1) / max(step, 1))
    span = total - 1 - warmup
    progress = min(1.0, (step - warmup) / span) if span > 0 else 1.0
    if kind == "linear":
        return lr + (final_lr - lr) * progress
    return final_lr + (lr - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


class WarmupSchedule(torch.optim.lr_scheduler.LRScheduler):
    """`lr_at` for every parameter group (scaled by each group's initial lr relative to the peak)."""

    def __init__(self, optimizer: torch.optim.Optimizer, *, kind: str, warmup: int, total: int,
                 final_lr: float = 0.0) -> None:
        if kind not in SCHEDULES:
            raise T5LabError(f"schedule {kind!r}: expected one of {', '.join(SCHEDULES)}")
        self.kind, self.warmup, self.total, self.final_lr = kind, warmup, total, final_lr
        super().__init__(optimizer)

    def get_lr(self) -> list[float | torch.Tensor]:  # the base class's type: torch allows tensor lrs
        step = self.last_epoch
        base_lrs = [float(base) for base in self.base_lrs]
        peak = max(base_lrs)
        return [
            lr_at(step, kind=self.kind, lr=base, warmup=self.warmup, total=self.total,
                  final_lr=self.final_lr * base / peak)
            for base in base_lrs
        ]
