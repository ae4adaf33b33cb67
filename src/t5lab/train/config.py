"""`TrainConfig`: how the one training loop runs (optimiser, schedule, precision, cadence of eval/save/log).

Frozen and free of torch imports, like `ModelConfig`, so recipes can parse and validate a YAML file
before anything heavy loads. What the model is and where the data comes from live in `ModelConfig` and
`t5lab.data.config.DataConfig`; a recipe composes the three.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from t5lab.errors import T5LabError, field_checker

OptimizerName = Literal["adamw", "adamwscale", "adafactor"]
ScheduleName = Literal["cosine", "linear", "inverse-sqrt", "constant"]
Precision = Literal["auto", "fp32", "bf16", "fp16"]
Parallel = Literal["ddp", "fsdp"]
HostMemory = Literal["auto", "keep", "default"]
OPTIMIZERS: tuple[str, ...] = ("adamw", "adamwscale", "adafactor")
SCHEDULES: tuple[str, ...] = ("cosine", "linear", "inverse-sqrt", "constant")
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
PARALLELS: tuple[str, ...] = ("ddp", "fsdp")
HOST_MEMORIES: tuple[str, ...] = ("auto", "keep", "default")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of the training loop.

    Args:
        steps: optimiser steps to train for (the schedule spans them).
        batch_size: examples per optimiser step, summed over gradient-accumulation micro-batches and, under
            torchrun, over all ranks (the global batch).
        grad_accum: micro-batches per step; each holds batch_size / (grad_accum x world size) examples.
        lr: peak learning rate (reached at the end of warmup).
        optimizer: 'adamw', 'adamwscale' (nanoT5: AdamW scaled by each tensor's RMS) or 'adafactor'.
        betas: Adam's (beta1, beta2).
        eps: Adam's epsilon.
        schedule: after warmup: 'cosine' (to final_lr), 'linear' (to final_lr), 'inverse-sqrt' or 'constant'.
        warmup: steps of linear warmup from 0 to lr.
        final_lr: learning rate at the last step for 'cosine' and 'linear'.
        weight_decay: decoupled weight decay (never applied to layer norms or the relative bias tables).
        clip: clip the gradient's global L2 norm to this (0: no clipping).
        precision: 'auto' (bf16 autocast where the device computes bf16 natively: CUDA devices with bf16,
            CPUs with AVX512-BF16; fp16 with a gradient scaler on CUDA GPUs without bf16; else fp32), 'fp32',
            'bf16' or 'fp16'.
        compile: run the model through torch.compile.
        eval_every: evaluate on the held-out split every this many steps (0: only at the end).
        eval_batches: held-out batches per evaluation (0: no evaluation).
        save_every: write a checkpoint every this many steps (0: only at the end).
        keep_last: checkpoints kept on disk (older ones are deleted once a newer one is complete).
        log_every: write a metrics row every this many steps.
        seed: seeds the model initialisation, dropout and the data order.
        device: 'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'.
        host_memory: 'keep' lets glibc keep freed memory for the next step (`t5lab.device.keep_freed_memory`),
            'default' leaves malloc alone, 'auto' keeps it on CPU runs; recorded in each checkpoint's meta.
        parallel: under torchrun, 'ddp' (replicated model, all-reduced gradients) or 'fsdp' (FSDP2: parameters,
            gradients and optimiser state sharded per T5 block).
        activation_checkpointing: recompute each T5 block's activations in the backward pass (less memory).
        tensorboard: also write TensorBoard event files (needs the `tensorboard` package).
        wandb: also log to this Weights & Biases project (needs the `wandb` package; None: off).
        progress: show a tqdm progress bar.
    """

    steps: int = 1000
    batch_size: int = 32
    grad_accum: int = 1
    lr: float = 1e-3
    optimizer: OptimizerName = "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    schedule: ScheduleName = "cosine"
    warmup: int = 100
    final_lr: float = 1e-5
    weight_decay: float = 0.0
    clip: float = 1.0
    precision: Precision = "auto"
    compile: bool = False
    eval_every: int = 0
    eval_batches: int = 4
    save_every: int = 0
    keep_last: int = 2
    log_every: int = 10
    seed: int = 0
    device: str = "auto"
    host_memory: HostMemory = "auto"
    parallel: Parallel = "ddp"
    activation_checkpointing: bool = False
    tensorboard: bool = False
    wandb: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "betas", tuple(self.betas))

        need = field_checker(self, "train config field")

        for field in ("steps", "batch_size", "grad_accum", "keep_last", "log_every"):
            value = getattr(self, field)
            need(isinstance(value, int) and value >= 1, field, "a positive integer")
        for field in ("warmup", "eval_every", "eval_batches", "save_every"):
            value = getattr(self, field)
            need(isinstance(value, int) and value >= 0, field, "0 or a positive integer")
        need(self.batch_size % self.grad_accum == 0, "batch_size",
             f"a multiple of grad_accum={self.grad_accum} (each micro-batch holds batch_size / grad_accum)")
        need(self.lr > 0, "lr", "a positive learning rate")
        need(0 <= self.final_lr <= self.lr, "final_lr", f"a learning rate in [0, lr={self.lr}]")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}")
        need(self.schedule in SCHEDULES, "schedule", f"one of {', '.join(SCHEDULES)}")
        need(self.precision in PRECISIONS, "precision", f"one of {', '.join(PRECISIONS)}")
        need(self.parallel in PARALLELS, "parallel", f"one of {', '.join(PARALLELS)}")
        need(self.host_memory in HOST_MEMORIES, "host_memory", f"one of {', '.join(HOST_MEMORIES)}")
        need(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "betas", "two numbers in [0, 1)")
        need(self.eps > 0, "eps", "a positive number")
        need(self.weight_decay >= 0, "weight_decay", "0 or a positive number")
        need(self.clip >= 0, "clip", "0 (off) or a positive gradient norm")

    @property
    def micro_batch_size(self) -> int:
        return self.batch_size // self.grad_accum

    def rank_micro_batch_size(self, world_size: int) -> int:
        """Examples per micro-batch on each of `world_size` ranks (`batch_size` is the global batch)."""
        if self.batch_size % (self.grad_accum * world_size):
            raise T5LabError(f"batch_size={self.batch_size}: expected a multiple of world size x grad_accum = "
                             f"{world_size} x {self.grad_accum} (batch_size is the global batch under torchrun)")
        return self.batch_size // (self.grad_accum * world_size)

    def replace(self, **changes: Any) -> TrainConfig:
        return dataclasses.replace(self, **changes)
