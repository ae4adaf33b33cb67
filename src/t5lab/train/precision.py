"""A run's arithmetic: which autocast dtype it trains in (resolved once, kept on resume) and, for fp16, the
gradient scaler.

fp16 (precision 'fp16', and 'auto' on CUDA GPUs without native bf16: T4, V100) has 5 exponent bits: small
gradients underflow to 0 unless the loss is scaled up before the backward pass and the gradients scaled back
before clipping and the step, which torch's `GradScaler` does, skipping the steps whose gradients overflowed
and lowering the scale. T5's activations overflow fp16 too; the model clamps them (`model.t5.clamp_fp16`),
and the fused output loss stays off in fp16 (`kernels.fused_loss.FusedOutputLoss`).
"""

from __future__ import annotations

from typing import Any

import torch

from t5lab.device import autocast_dtype

_NAMES = {torch.bfloat16: "bfloat16", torch.float16: "float16"}
_DTYPES = {name: dtype for dtype, name in _NAMES.items()}


def run_dtype(precision: str, device: torch.device, recorded: dict[str, Any] | None) -> torch.dtype | None:
    """The autocast dtype of a run (None: fp32). `recorded`: the resumed checkpoint's loop state, whose
    'autocast' a resumed 'auto' run keeps even where this machine would choose otherwise (exact resumption
    needs the same arithmetic)."""
    if precision == "auto" and recorded is not None and "autocast" in recorded:
        return _DTYPES.get(recorded["autocast"])
    return autocast_dtype(precision, device)


def dtype_name(dtype: torch.dtype | None) -> str | None:
    """What `TrainState.autocast` records for `dtype`."""
    return _NAMES.get(dtype) if dtype is not None else None


class LossScaling:
    """The backward pass and optimiser step of a run in `dtype`: through a `GradScaler` in fp16, plain otherwise.

    On CUDA, torch's fused AdamW takes the scaler's inf check on the device; other optimisers make
    `GradScaler.step` read it (one host-device sync per step, in fp16 alone).
    """

    def __init__(self, dtype: torch.dtype | None, device: torch.device) -> None:
        self.scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Bring the gradients back to their true size (before clipping)."""
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            optimizer.step()
            return
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.scaler is None else {"scaler": self.scaler.state_dict()}

    def load_state_dict(self, training: dict[str, Any]) -> None:
        """Restore from a checkpoint's training state (written by `state_dict`; absent: nothing to restore)."""
        if self.scaler is not None and "scaler" in training:
            self.scaler.load_state_dict(training["scaler"])
