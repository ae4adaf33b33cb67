"""Parallelism applied from outside a plain model, as torchtitan does: DDP, or FSDP2 (`fully_shard` per T5
block, then the root), and activation checkpointing per block; nothing in `t5lab.model` knows of it.

Gradient scale: both DDP and FSDP2 average gradients over ranks, so the loop scales each rank's loss by the
world size (see `train`): the result is the gradient of the mean over the global batch's target tokens,
the same as one rank computes for the whole batch.

Switch (MoE) layers are data-parallel like every other weight: each rank holds (DDP) or shards (FSDP2) all
experts and routes its own tokens; experts a rank's tokens do not reach get zero gradients there.
"""

from __future__ import annotations

import contextlib
import copy
import math

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from t5lab.errors import T5LabError
from t5lab.model.t5 import Block
from t5lab.train.config import TrainConfig


def blocks(model: nn.Module) -> list[nn.Module]:
    """The T5 blocks, the unit of sharding and of activation checkpointing."""
    return [m for m in model.modules() if isinstance(m, Block)]


def parallelize(model: nn.Module, config: TrainConfig, device: torch.device,
                dtype: torch.dtype | None) -> nn.Module:
    """Apply activation checkpointing and, under torchrun, DDP or FSDP2 to `model` (already on `device`);
    returns the module to call. FSDP2 shards `model` in place (its parameters become DTensors)."""
    if config.activation_checkpointing:
        from torch.distributed._composable import checkpoint  # keeps parameter names, unlike a wrapper module

        for block in blocks(model):
            checkpoint(block)
    distributed = dist.is_available() and dist.is_initialized()
    if config.parallel == "fsdp":
        if not distributed:
            raise T5LabError("train config field 'parallel'='fsdp': needs torchrun (e.g. torchrun "
                             "--nproc-per-node 2 -m t5lab pretrain ...)")
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        # bf16 parameters in compute, fp32 master weights and fp32 gradient reduction.
        policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=torch.float32) if dtype else MixedPrecisionPolicy()
        for block in blocks(model):
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)  # the rest: embeddings, relative biases, final norms
        return model
    if distributed and dist.get_world_size() > 1:
        # A Switch layer's expert that none of a rank's tokens reach has no gradient there.
        sparse = getattr(getattr(model, "config", None), "num_experts", 0) > 0
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                       find_unused_parameters=sparse)
    return model


@contextlib.contextmanager
def gradient_sync(module: nn.Module, enabled: bool):
    """Reduce gradients over ranks in this backward pass or not: off for all but the last micro-batch of a
    step, so accumulation communicates once per step."""
    if isinstance(module, DistributedDataParallel) and not enabled:
        with module.no_sync():
            yield
        return
    if isinstance(module, FSDPModule):  # FSDP2
        module.set_requires_gradient_sync(enabled)
    yield


def clip_gradients(parameters: list[nn.Parameter], max_norm: float) -> float:
    """Clip the global gradient norm (over all ranks' shards under FSDP2) to `max_norm` (0: no clipping);
    returns the norm before clipping."""
    norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm if max_norm > 0 else math.inf)
    if isinstance(norm, DTensor):
        norm = norm.full_tensor()
    return float(norm)


def unwrap(module: nn.Module) -> nn.Module:
    return module.module if isinstance(module, DistributedDataParallel) else module


def is_sharded(model: nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in model.parameters())


def plain_copy(model: nn.Module, blueprint: nn.Module | None) -> nn.Module | None:
    """The trained weights in a plain module on CPU: `model` itself unless FSDP2 sharded it; then every rank
    takes part in gathering the full state and rank 0 loads it into `blueprint` (None elsewhere)."""
    if not is_sharded(model):
        return model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if blueprint is None:
        return None
    blueprint.load_state_dict(full)
    return blueprint


def blueprint_of(model: nn.Module, config: TrainConfig) -> nn.Module | None:
    """A CPU copy of `model` before FSDP2 shards it, kept on rank 0 to receive the final weights."""
    if config.parallel != "fsdp" or (dist.is_initialized() and dist.get_rank() != 0):
        return None
    return copy.deepcopy(model).to("cpu")
