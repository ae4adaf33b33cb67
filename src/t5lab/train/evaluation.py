"""Held-out evaluation inside training, and the forked RNG that keeps bookkeeping off the training RNG."""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from t5lab.device import autocast


def quiet_rng():
    """Runs bookkeeping (DataLoader seeding, evaluation) without moving the training RNG."""
    return torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_initialized() else [])


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    max_batches: int,
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Token-level cross-entropy and accuracy (argmax == label) over up to `max_batches` batches."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    try:
        with quiet_rng():
            for i, batch in enumerate(batches):
                if i >= max_batches:
                    break
                batch = to_device(batch, device)
                with autocast(device, dtype):
                    logits = model(**batch).logits
                labels = batch["labels"]
                keep = labels != -100
                loss_sum += F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                                            ignore_index=-100, reduction="sum").item()
                correct += int((logits.argmax(-1).eq(labels) & keep).sum())
                count += int(keep.sum())
    finally:
        model.train(was_training)
    if count == 0:
        return {}
    return {"eval_loss": loss_sum / count, "eval_accuracy": correct / count, "eval_tokens": count}
