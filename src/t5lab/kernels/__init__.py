"""Speed paths for the plain model, applied from outside: `apply(model, device=...)`.

What `apply` chooses (each tested against the plain model in tests/kernels and tests/model):
- attention kernel (`attention.py`): on CUDA the Triton T5 kernel where `triton` imports and the inputs are
  supported (`triton_attention.supports`), else "fused" (SDPA where the bias needs no gradient); on CPU
  "eager", the reference with the faster dropout masks. Or the one named: eager, sdpa, fused, triton.
- on CPU, bias-free linear layers through oneDNN / split one-row products (`cpu_linear.py`);
- RMS norm in fewer kernels (`rms_norm.py`);
- the faster CPU dropout (`cpu_dropout.py`), whose random stream differs from F.dropout's;
- for training, the fused output layer + loss with its kept logits buffer (`fused_loss.py`), through the
  model's `output_loss` seam; under torch.compile as the custom op t5lab::linear_cross_entropy.
Nothing here registers into torch at import time (the custom op registers when `apply` makes the fused loss). Modules are replaced by subclasses that share the
original parameters (same objects, same state-dict keys), so apply before building an optimizer or not: both work.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from t5lab.errors import T5LabError
from t5lab.kernels.attention import ATTENTION_KERNELS, triton_or
from t5lab.kernels.cpu_dropout import Dropout
from t5lab.kernels.cpu_linear import CpuLinear, count_onednn_flops
from t5lab.kernels.fused_loss import FusedOutputLoss
from t5lab.kernels.rms_norm import FastRMSNorm
from t5lab.model import T5
from t5lab.model.attention import Attention, Kernel
from t5lab.model.layers import RMSNorm

ModuleT = TypeVar("ModuleT", bound=nn.Module)

ATTENTION_CHOICES = (*ATTENTION_KERNELS, "triton")

__all__ = ["ATTENTION_CHOICES", "apply", "attention_kernel", "set_attention"]


def attention_kernel(name: str) -> Kernel:
    """The kernel called `name` (one of ATTENTION_CHOICES)."""
    if name == "triton":
        kernel = triton_or(ATTENTION_KERNELS["fused"])
        if kernel is None:
            raise T5LabError("attention 'triton': needs the triton package and a CUDA build of torch")
        return kernel
    if name not in ATTENTION_KERNELS:
        raise T5LabError(f"attention {name!r}: expected one of {', '.join(ATTENTION_CHOICES)}")
    return ATTENTION_KERNELS[name]


def set_attention(model: ModuleT, name: str) -> ModuleT:
    """Give every attention layer of `model` the kernel called `name`; returns `model`."""
    kernel = attention_kernel(name)
    for module in model.modules():
        if isinstance(module, Attention):
            module.kernel = kernel
    return model


def apply(model: T5, *, device: torch.device | str, training: bool | None = None, attention: str | None = None) -> T5:
    """Put the speed paths for `device` into `model` (in place; returns it). `training=False` leaves out what only
    training uses (the fused loss and its buffer); `attention` names a kernel instead of the device's default.
    `device` is where the model will run ("auto": CUDA where available, as the trainer resolves it)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device_type = torch.device(device).type
    if attention is None:
        cuda_kernel = triton_or(ATTENTION_KERNELS["fused"]) if device_type == "cuda" else None
        kernel = cuda_kernel or ATTENTION_KERNELS["fused" if device_type == "cuda" else "eager"]
    else:
        kernel = attention_kernel(attention)
    for module in model.modules():
        if isinstance(module, Attention):
            module.kernel = kernel
    if device_type == "cpu":
        count_onednn_flops()
        _replace(model, nn.Linear, _cpu_linear, when=lambda m: m.bias is None)
    _replace(model, RMSNorm, _fast_norm)
    _replace(model, nn.Dropout, _cpu_dropout)
    if training is not False:
        model.output_loss = FusedOutputLoss()
    return model


def _replace(model: nn.Module, kind: type[ModuleT], make: Callable[[ModuleT], nn.Module],
             when: Callable[[ModuleT], bool] = lambda m: True) -> None:
    # Exactly `kind`, not a subclass: a subclass may be a speed path put in already.
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is kind and when(child):
                setattr(parent, name, make(child).train(child.training))


def _cpu_linear(plain: nn.Linear) -> CpuLinear:
    fast = CpuLinear(plain.in_features, plain.out_features, bias=False, device="meta")
    fast.weight = plain.weight
    return fast


def _fast_norm(plain: RMSNorm) -> FastRMSNorm:
    fast = FastRMSNorm(plain.weight.shape[0], plain.eps)
    fast.weight = plain.weight
    return fast


def _cpu_dropout(plain: nn.Dropout) -> Dropout:
    return Dropout(plain.p, plain.inplace)
