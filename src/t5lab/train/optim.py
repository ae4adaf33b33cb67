"""Optimisers for T5: AdamW, nanoT5's AdamWScale and Adafactor, with T5's weight-decay groups.

AdamWScale (Nawrot 2023, nanoT5) is AdamW whose per-tensor step is multiplied by max(1e-3, RMS of the
tensor's weights): Adafactor's "relative step size" grafted onto Adam. With it nanoT5 pre-trains T5-v1.1-base
at lr 2e-2 (plain AdamW diverges there) and reaches held-out C4 loss 1.953 in 65,536 steps.
Adafactor is torch's own (`torch.optim.Adafactor`, torch >= 2.5) with T5's settings: decay exponent -0.8,
update clipping at 1.0, parameter scaling by max(1e-3, RMS), no momentum; torch caps each step's rate at
min(lr, 1/sqrt(step)), so the schedule's lr acts as T5's constant 1e-2 phase.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from t5lab.train.config import TrainConfig

# Parameter names that never decay (nanoT5 excludes biases and layer norms; T5 has no biases, but its
# relative position bias tables are per-head scalars like norm gains).
NO_DECAY_MARKERS: tuple[str, ...] = ("norm", "relative_bias", "bias")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups: decayed matrices and undecayed norms/bias tables (tied parameters counted once)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (no_decay if any(m in name for m in NO_DECAY_MARKERS) else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


class AdamWScale(torch.optim.Optimizer):
    """AdamW (bias-corrected, decoupled decay) whose step for each tensor is scaled by max(1e-3, RMS(p)).

    A faithful port of nanoT5's `copied_utils.AdamWScale`, including its order of operations: the RMS is
    taken of the weights *before* this step's update, and weight decay is applied after the update, as
    p -= lr * weight_decay * p (not scaled by the RMS).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        foreach: bool = True,
    ) -> None:
        if lr < 0:
            raise ValueError(f"lr={lr}: expected >= 0")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"betas={betas}: expected two numbers in [0, 1)")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        # foreach: each operation once over the whole group (torch._foreach_*: a few kernels per group on a GPU
        # instead of ~10 per tensor); False: the per-tensor loop, the plain statement of the same arithmetic.
        self.foreach = foreach

    def _tensors(self, group: dict[str, Any]) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor],
                                                        list[torch.Tensor], list[torch.Tensor]]:
        """The group's parameters that have gradients, with their gradients and (created here) state."""
        params, grads, steps, exp_avgs, exp_avg_sqs = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("AdamWScale does not support sparse gradients")
            state = self.state[p]
            if not state:
                # The step count is a host tensor: the state dict holds only tensors and plain values, and
                # reading it never waits for a device.
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            steps.append(state["step"])
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
        return params, grads, steps, exp_avgs, exp_avg_sqs

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            tensors = self._tensors(group)
            # FSDP2's sharded parameters (DTensors) keep the per-tensor loop: torch 2.13's DTensor has no
            # foreach division of its partial norms by a list of scalars.
            foreach = self.foreach and not any(isinstance(p, DTensor) for p in tensors[0])
            if tensors[0]:
                (_foreach_step if foreach else _per_tensor_step)(*tensors, group)
        return loss


def _step_sizes(steps: list[torch.Tensor], group: dict[str, Any]) -> list[float]:
    beta1, beta2 = group["betas"]
    return [group["lr"] * math.sqrt(1.0 - beta2**s) / (1.0 - beta1**s) for s in (int(t.item()) for t in steps)]


def _per_tensor_step(params: list[torch.Tensor], grads: list[torch.Tensor], steps: list[torch.Tensor],
                     exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor], group: dict[str, Any]) -> None:
    beta1, beta2 = group["betas"]
    for p, grad, step, exp_avg, exp_avg_sq in zip(params, grads, steps, exp_avgs, exp_avg_sqs, strict=True):
        step += 1
        (step_size,) = _step_sizes([step], group)
        exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
        denom = exp_avg_sq.sqrt().add_(group["eps"])
        # RMS as a tensor: no host sync per parameter on accelerators.
        scale = (p.norm(2) / math.sqrt(p.numel())).clamp_(min=1e-3)
        p.add_(exp_avg.div(denom).mul_(scale * -step_size))
        if group["weight_decay"] > 0:
            p.add_(p, alpha=-group["lr"] * group["weight_decay"])


def _foreach_step(params: list[torch.Tensor], grads: list[torch.Tensor], steps: list[torch.Tensor],
                  exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor], group: dict[str, Any]) -> None:
    """`_per_tensor_step`'s operations in the same order, each over the whole list."""
    beta1, beta2 = group["betas"]
    torch._foreach_add_(steps, 1.0)
    step_sizes = _step_sizes(steps, group)
    torch._foreach_mul_(exp_avgs, beta1)
    torch._foreach_add_(exp_avgs, grads, alpha=1.0 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - beta2)
    denoms = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denoms, group["eps"])
    scales = torch._foreach_norm(params, 2)  # of the weights before this step's update
    torch._foreach_div_(scales, [math.sqrt(p.numel()) for p in params])
    torch._foreach_clamp_min_(scales, 1e-3)
    torch._foreach_mul_(scales, [-size for size in step_sizes])
    updates = torch._foreach_div(exp_avgs, denoms)
    del denoms
    torch._foreach_mul_(updates, scales)
    torch._foreach_add_(params, updates)
    if group["weight_decay"] > 0:
        torch._foreach_add_(params, params, alpha=-group["lr"] * group["weight_decay"])


def build_optimizer(model: nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimiser named by `config.optimizer` over `param_groups(model, config.weight_decay)`."""
    groups = param_groups(model, config.weight_decay)
    if config.optimizer == "adamw":
        # torch has fused AdamW kernels for CPU (>= 2.4) and CUDA: one kernel for all tensors, ~6x faster
        # than foreach on CPU; elsewhere the foreach implementation.
        fused = device.type in ("cpu", "cuda")
        return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps,
                                 fused=fused, foreach=None if fused else True)
    # foreach on CUDA, where it replaces ~10 kernel launches per tensor by a few per group; CPU's foreach ops loop
    # over the tensors anyway, and the per-tensor loop needs no group-sized temporaries (on 2 busy CPU cores,
    # t5-efficient-tiny's AdamWScale step took 85-184 ms per tensor vs 120-240 ms foreach, Adafactor a tie).
    foreach = device.type == "cuda"
    if config.optimizer == "adamwscale":
        return AdamWScale(groups, lr=config.lr, betas=config.betas, eps=config.eps, foreach=foreach)
    if config.optimizer == "adafactor":
        return torch.optim.Adafactor(groups, lr=config.lr, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0, foreach=foreach)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")
