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
    """`batch` on `device`. To CUDA from page-locked host memory, so the copy runs asynchronously (from pageable
    memory a "non-blocking" copy waits for the device); on CPU the tensors themselves."""
    if device.type == "cuda":
        return {k: (v if v.is_pinned() else v.pin_memory()).to(device, non_blocking=True) for k, v in batch.items()}
    return {k: v.to(device) for k, v in batch.items()}


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
    # Summed on the device and read once at the end: a read per batch would wait for the device each time.
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    count = torch.zeros((), dtype=torch.int64, device=device)
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
                                            ignore_index=-100, reduction="sum")
                correct += (logits.argmax(-1).eq(labels) & keep).sum()
                count += keep.sum()
    finally:
        model.train(was_training)
    total, right, tokens = torch.stack([loss_sum, correct.double(), count.double()]).tolist()
    if tokens == 0:
        return {}
    return {"eval_loss": total / tokens, "eval_accuracy": right / tokens, "eval_tokens": int(tokens)}
