"""Pre-training objectives as denoisers: T5's span corruption and UL2's mixture of denoisers.

A denoiser turns a batch of raw chunks [B, tokens_length] into (inputs [B, inputs_length], targets
[B, targets_length]), with fixed lengths so that a batch needs no padding. An objective is a weighted
mixture of denoisers; the stream draws ONE denoiser per batch (so every batch stays dense; over many
batches each denoiser gets its share), and inputs are always `inputs_length` long.

UL2 (Tay et al. 2022, "Unifying Language Learning Paradigms") mixes seven denoisers:
  R (regular):    span corruption (mean span 3, density 0.15) and (8, 0.15)             mode "[NLU]"
  X (extreme):    (3, 0.5), (8, 0.5), (64, 0.15), (64, 0.5)                              mode "[NLG]"
  S (sequential): prefix LM, the last 25% of the chunk is the target                      mode "[S2S]"
sampled uniformly here. The mode token is prepended to the inputs as plain text, tokenized like any
other text (so it needs no dedicated vocabulary entry and works with any tokenizer, at the cost of a few
input positions); fine-tune with the same prefix to select a mode. The S denoiser splits every chunk at
the same point (the chunk itself starts at a random place in the token stream), keeping targets dense.
Density-0.5 span denoisers need many sentinels (128 at inputs 512): building the objective checks it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from t5lab.data.config import OBJECTIVES, Objective
from t5lab.data.span_corruption import SpanCorruption
from t5lab.errors import T5LabError

# (mode, mean span length or None for the prefix LM, noise density / suffix fraction)
UL2_DENOISERS: tuple[tuple[str, float | None, float], ...] = (
    ("[NLU]", 3.0, 0.15),
    ("[NLU]", 8.0, 0.15),
    ("[S2S]", None, 0.25),
    ("[NLG]", 3.0, 0.5),
    ("[NLG]", 8.0, 0.5),
    ("[NLG]", 64.0, 0.15),
    ("[NLG]", 64.0, 0.5),
)


class TokenizerLike(Protocol):
    eos_id: int
    num_sentinels: int

    def sentinel_id(self, i: int) -> int: ...

    def encode(self, text: str, add_eos: bool = True) -> list[int]: ...


class Denoiser(Protocol):
    # Read-only (properties): a frozen dataclass's fields and computed properties both satisfy them.
    @property
    def tokens_length(self) -> int: ...

    @property
    def inputs_length(self) -> int: ...

    @property
    def targets_length(self) -> int: ...

    def __call__(self, chunks_BL: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]: ...


def _with_prefix(prefix: tuple[int, ...], rows_BL: np.ndarray) -> np.ndarray:
    if not prefix:
        return rows_BL
    prefix_BP = np.broadcast_to(np.asarray(prefix, dtype=rows_BL.dtype), (rows_BL.shape[0], len(prefix)))
    return np.concatenate([prefix_BP, rows_BL], axis=1)


@dataclass(frozen=True)
class SpanDenoiser:
    """Span corruption, with optional mode-token ids in front of the inputs."""

    corruption: SpanCorruption
    sentinel_ids: np.ndarray
    eos_id: int
    prefix: tuple[int, ...] = ()

    @property
    def tokens_length(self) -> int:
        return self.corruption.tokens_length

    @property
    def inputs_length(self) -> int:
        return self.corruption.inputs_length + len(self.prefix)

    @property
    def targets_length(self) -> int:
        return self.corruption.targets_length

    def __call__(self, chunks_BL: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        inputs, targets = self.corruption(chunks_BL, self.sentinel_ids, self.eos_id, rng)
        return _with_prefix(self.prefix, inputs), targets


@dataclass(frozen=True)
class PrefixLMDenoiser:
    """UL2's S denoiser: inputs = prefix + first part of the chunk + EOS, targets = the rest + EOS."""

    inputs_length: int
    targets_length: int
    eos_id: int
    prefix: tuple[int, ...] = ()

    @property
    def tokens_length(self) -> int:
        return (self.inputs_length - len(self.prefix) - 1) + (self.targets_length - 1)

    def __call__(self, chunks_BL: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        split = self.inputs_length - len(self.prefix) - 1
        eos_B1 = np.full((chunks_BL.shape[0], 1), self.eos_id, dtype=chunks_BL.dtype)
        inputs = np.concatenate([_with_prefix(self.prefix, chunks_BL[:, :split]), eos_B1], axis=1)
        return inputs, np.concatenate([chunks_BL[:, split:], eos_B1], axis=1)


@dataclass(frozen=True)
class Mixture:
    """Denoisers and their sampling weights; `draw` picks the denoiser of one batch."""

    denoisers: tuple[Denoiser, ...]
    weights: tuple[float, ...]

    def draw(self, rng: np.random.Generator) -> Denoiser:
        if len(self.denoisers) == 1:
            return self.denoisers[0]
        p = np.asarray(self.weights) / sum(self.weights)
        return self.denoisers[int(rng.choice(len(self.denoisers), p=p))]


def _sentinels(tokenizer: TokenizerLike) -> np.ndarray:
    return np.asarray([tokenizer.sentinel_id(i) for i in range(tokenizer.num_sentinels)], dtype=np.int64)


def _span_denoiser(
    tokenizer: TokenizerLike, inputs_length: int, density: float, mean: float, prefix: Sequence[int] = ()
) -> SpanDenoiser:
    corruption = SpanCorruption(inputs_length - len(prefix), density, mean)
    corruption.check_sentinels(tokenizer.num_sentinels)
    return SpanDenoiser(corruption, _sentinels(tokenizer), tokenizer.eos_id, tuple(prefix))


def build_objective(
    objective: Objective,
    tokenizer: TokenizerLike,
    inputs_length: int,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
) -> Mixture:
    """The mixture for a config's `objective`; `noise_density`/`mean_noise_span_length` apply to
    span_corruption (UL2 has its own table, `UL2_DENOISERS`)."""
    if objective == "span_corruption":
        return Mixture((_span_denoiser(tokenizer, inputs_length, noise_density, mean_noise_span_length),), (1.0,))
    if objective != "ul2":
        raise T5LabError(f"objective={objective!r}: expected one of {', '.join(OBJECTIVES)}")
    denoisers: list[Denoiser] = []
    for mode, mean, rate in UL2_DENOISERS:
        prefix = tuple(tokenizer.encode(mode, add_eos=False))
        if mean is None:
            targets_length = max(round(inputs_length * rate / (1 - rate)), 2)
            denoisers.append(PrefixLMDenoiser(inputs_length, targets_length, tokenizer.eos_id, prefix))
            continue
        try:
            denoisers.append(_span_denoiser(tokenizer, inputs_length, rate, mean, prefix))
        except T5LabError as e:
            raise T5LabError(f"objective='ul2', denoiser {mode} (mean span {mean}, density {rate}): {e}") from None
    return Mixture(tuple(denoisers), tuple(1.0 for _ in denoisers))
