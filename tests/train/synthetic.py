"""A tiny resumable batch source with the interface of `t5lab.data.pretraining.PretrainingStream`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch


class SyntheticBatches:
    """Batch k is a pure function of (seed, k): random inputs; labels copy the inputs' first tokens, so the
    task is learnable and the loss falls."""

    def __init__(self, vocab_size: int, batch_size: int = 4, inputs_length: int = 12, targets_length: int = 5,
                 seed: int = 0) -> None:
        self.vocab_size, self.batch_size = vocab_size, batch_size
        self.inputs_length, self.targets_length, self.seed = inputs_length, targets_length, seed
        self.position = 0

    def batch(self, k: int) -> dict[str, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + k)
        inputs = torch.randint(2, self.vocab_size, (self.batch_size, self.inputs_length), generator=g)
        labels = inputs[:, : self.targets_length].clone()
        return {"input_ids": inputs, "labels": labels}

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            k = self.position
            self.position += 1
            yield self.batch(k)

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


class GlobalBatches:
    """A world-size-independent source, as `PretrainingStream(config, tokenizer, rank=r, world_size=w)` is
    specified: example i of the corpus is a pure function of (seed, i); global step s holds examples
    [s * global_batch, (s + 1) * global_batch); rank r's micro-batches are its contiguous slice of them, so the
    ranks of one step together hold exactly what one rank holds. Labels are padded (-100) to varying lengths,
    so that the loss's normalisation by the all-ranks target-token count matters. The position is global."""

    def __init__(self, vocab_size: int, global_batch: int, grad_accum: int, rank: int = 0, world_size: int = 1,
                 inputs_length: int = 12, targets_length: int = 5, seed: int = 0) -> None:
        self.vocab_size, self.global_batch, self.grad_accum = vocab_size, global_batch, grad_accum
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.inputs_length, self.targets_length = inputs_length, targets_length
        self.micro = global_batch // (grad_accum * world_size)
        self.yielded = 0  # micro-batches this rank has yielded

    def example(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        inputs = torch.randint(2, self.vocab_size, (self.inputs_length,), generator=g)
        labels = inputs[: self.targets_length].clone()
        keep = int(torch.randint(1, self.targets_length + 1, (), generator=g))
        labels[keep:] = -100
        return inputs, labels

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        while True:
            step, micro = divmod(self.yielded, self.grad_accum)
            first = step * self.global_batch + (self.rank * self.grad_accum + micro) * self.micro
            self.yielded += 1
            pairs = [self.example(i) for i in range(first, first + self.micro)]
            yield {"input_ids": torch.stack([p[0] for p in pairs]), "labels": torch.stack([p[1] for p in pairs])}

    def state_dict(self) -> dict[str, Any]:
        return {"examples": self.yielded // self.grad_accum * self.global_batch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.yielded = int(state["examples"]) // self.global_batch * self.grad_accum
