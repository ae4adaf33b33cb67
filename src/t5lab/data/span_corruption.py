"""T5's span-corruption objective, ported from `t5.data.preprocessors` (random_spans_helper,
random_spans_noise_mask, noise_span_to_unique_sentinel) to vectorised numpy.

A raw chunk of `tokens_length` tokens (568 for inputs of 512) gets a noise mask of
`round(tokens_length * noise_density)` tokens cut into `round(num_noise / mean_noise_span_length)` spans.
Each noise span becomes one sentinel in the inputs (`<extra_id_0>`, `<extra_id_1>`, ... in order), each
kept span one sentinel in the targets, and both end with EOS. Every chunk of the same length has the same
counts, so a batch corrupts into dense [B, inputs_length] / [B, targets_length] arrays with no padding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from t5lab.errors import T5LabError


def _counts(tokens_length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(num_noise_tokens, num_noise_spans) exactly as `random_spans_noise_mask` computes them.

    Python's `round` rounds half to even, as `tf.round` does.
    """
    length = max(tokens_length, 2)
    num_noise = min(max(round(length * noise_density), 1), length - 1)
    num_spans = max(round(num_noise / mean_noise_span_length), 1)
    return num_noise, num_spans


def _helper_lengths(tokens_length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(inputs, targets) lengths incl. EOS of a corrupted `tokens_length` chunk.

    T5's `random_spans_helper` uses the unclipped counts; clipping them as the mask does changes nothing
    for realistic lengths and keeps the estimate exact for short ones (e.g. UL2's mean span 64).
    """
    num_noise, num_spans = _counts(tokens_length, noise_density, mean_noise_span_length)
    return tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1


def compute_input_and_target_lengths(
    inputs_length: int, noise_density: float, mean_noise_span_length: float
) -> tuple[int, int]:
    """The raw `tokens_length` that corrupts into `inputs_length` inputs, and the targets' length (incl. EOS).

    T5's `random_spans_helper`: the longest raw chunk whose inputs fit, e.g. (512, 0.15, 3.0) -> (568, 114)
    and (512, 0.15, 1.0) -> (511, 155). Its density-0.5 adjustment (one token fewer so that targets equal
    inputs) is kept when the inputs stay exactly `inputs_length` long.

    transformers' Flax pre-training example (run_t5_mlm_flax.py) and nanoT5 copy a variant whose search
    starts one token later (at `inputs_length`, not `inputs_length - 1`). Where T5's answer is
    `inputs_length - 1` the variant returns `inputs_length` and its inputs come out one token too long:
    (512, 0.15, 1.0) -> (512, 155), whose corrupted inputs are 513 tokens. Elsewhere both agree
    ((512, 0.15, 3.0) -> (568, 114) in both). t5lab follows T5, so its inputs always fit.
    """
    _check_params(noise_density, mean_noise_span_length)
    if not isinstance(inputs_length, int) or inputs_length < 2:
        raise T5LabError(f"inputs_length={inputs_length!r}: expected an integer of at least 2")
    tokens_length = inputs_length - 1
    while _helper_lengths(tokens_length + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        tokens_length += 1
    _, targets_length = _helper_lengths(tokens_length, noise_density, mean_noise_span_length)
    if noise_density == 0.5 and targets_length > inputs_length:
        shorter_inputs, _ = _helper_lengths(tokens_length - 1, noise_density, mean_noise_span_length)
        if shorter_inputs == inputs_length:
            tokens_length -= 1
            targets_length -= 1
    return tokens_length, targets_length


def _check_params(noise_density: float, mean_noise_span_length: float) -> None:
    if not 0.0 < noise_density < 1.0:
        raise T5LabError(f"noise_density={noise_density!r}: expected a fraction strictly between 0 and 1")
    if not mean_noise_span_length >= 1.0:
        raise T5LabError(f"mean_noise_span_length={mean_noise_span_length!r}: expected at least 1.0")


def _random_segmentation(num_items: int, num_segments: int, batch: int, rng: np.random.Generator) -> np.ndarray:
    """[batch, num_segments] lengths of uniformly random partitions of `num_items` into non-empty segments.

    T5 shuffles a 0/1 vector with `num_segments - 1` ones over the `num_items - 1` gaps between items;
    taking the first `num_segments - 1` gaps of a random permutation draws the same distribution.
    """
    gaps = np.argsort(rng.random((batch, num_items - 1)), axis=1)[:, : num_segments - 1]
    bounds = np.concatenate(
        [np.zeros((batch, 1), np.int64), np.sort(gaps, axis=1) + 1, np.full((batch, 1), num_items)], axis=1
    )
    return np.diff(bounds, axis=1)


def random_spans_noise_masks(
    batch: int, length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """A boolean [batch, length] noise mask, each row drawn as T5's `random_spans_noise_mask`."""
    _check_params(noise_density, mean_noise_span_length)
    padded = max(length, 2)  # T5 computes on at least 2 tokens and truncates
    num_noise, num_spans = _counts(padded, noise_density, mean_noise_span_length)
    num_nonnoise = padded - num_noise
    if num_spans > num_nonnoise:
        raise T5LabError(
            f"noise_density={noise_density}, mean_noise_span_length={mean_noise_span_length}: "
            f"{num_spans} noise spans need as many kept tokens, but a {length}-token sequence has {num_nonnoise}"
        )
    noise_lengths = _random_segmentation(num_noise, num_spans, batch, rng)
    nonnoise_lengths = _random_segmentation(num_nonnoise, num_spans, batch, rng)
    # Spans alternate kept/noise starting with a kept one; a token is noise when an odd number of span
    # starts lie at or before it (T5's span_num % 2 == 1).
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=2).reshape(batch, 2 * num_spans)
    starts = np.cumsum(interleaved, axis=1)[:, :-1]
    indicator = np.zeros((batch, padded), np.int64)
    np.put_along_axis(indicator, starts, 1, axis=1)
    return (np.cumsum(indicator, axis=1) % 2 == 1)[:, :length]


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator
) -> np.ndarray:
    """A boolean [length] mask of noise spans (T5's `random_spans_noise_mask`, without random roll).

    Spans alternate kept/noise and start with a kept span, as in T5.
    """
    return random_spans_noise_masks(1, length, noise_density, mean_noise_span_length, rng)[0]


def _replace_spans(tokens_BL: np.ndarray, mask_BL: np.ndarray, sentinel_ids: np.ndarray) -> np.ndarray:
    """Each run of masked tokens -> one sentinel (the i-th run of a row gets sentinel_ids[i]); rows must
    have the same number of runs and masked tokens (true for a batch of same-length chunks)."""
    prev_BL = np.zeros_like(mask_BL)
    prev_BL[:, 1:] = mask_BL[:, :-1]
    first_BL = mask_BL & ~prev_BL
    span_index_BL = np.cumsum(first_BL, axis=1) - 1
    out_BL = np.where(first_BL, sentinel_ids[np.maximum(span_index_BL, 0)], tokens_BL)
    keep_BL = ~(mask_BL & prev_BL)
    return out_BL[keep_BL].reshape(tokens_BL.shape[0], -1)


def span_corrupt(
    tokens_BL: np.ndarray, noise_mask_BL: np.ndarray, sentinel_ids: np.ndarray, eos_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) for a batch of chunks and their noise masks, each row ending with EOS.

    Inputs keep the unmasked tokens and put a sentinel for each noise span; targets hold each sentinel
    followed by the span it replaced (T5's noise_span_to_unique_sentinel / nonnoise_span_to_unique_sentinel).
    """
    batch = tokens_BL.shape[0]
    eos_B1 = np.full((batch, 1), eos_id, dtype=tokens_BL.dtype)
    inputs = _replace_spans(tokens_BL, noise_mask_BL, sentinel_ids)
    targets = _replace_spans(tokens_BL, ~noise_mask_BL, sentinel_ids)
    return np.concatenate([inputs, eos_B1], axis=1), np.concatenate([targets, eos_B1], axis=1)


@dataclass(frozen=True)
class SpanCorruption:
    """Span corruption with validated settings: raw chunks of `tokens_length` -> exact-length arrays."""

    inputs_length: int = 512
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    tokens_length: int = field(init=False)
    targets_length: int = field(init=False)
    num_spans: int = field(init=False)

    def __post_init__(self) -> None:
        tokens_length, targets_length = compute_input_and_target_lengths(
            self.inputs_length, self.noise_density, self.mean_noise_span_length
        )
        num_noise, num_spans = _counts(tokens_length, self.noise_density, self.mean_noise_span_length)
        exact = (tokens_length - num_noise + num_spans + 1, num_noise + num_spans + 1)
        if tokens_length < 2 or exact != (self.inputs_length, targets_length) or num_spans > tokens_length - num_noise:
            raise T5LabError(
                f"inputs_length={self.inputs_length} is too short for noise_density={self.noise_density} "
                f"and mean_noise_span_length={self.mean_noise_span_length} (no raw length corrupts into it)"
            )
        slack = 1 if self.noise_density == 0.5 else 0  # T5 lets density 0.5 have targets == inputs (+1)
        if targets_length > self.inputs_length + slack:
            raise T5LabError(
                f"noise_density={self.noise_density}: targets ({targets_length} tokens) would be longer "
                f"than inputs ({self.inputs_length}); expected a density of at most 0.5"
            )
        object.__setattr__(self, "tokens_length", tokens_length)
        object.__setattr__(self, "targets_length", targets_length)
        object.__setattr__(self, "num_spans", num_spans)

    def check_sentinels(self, num_sentinels: int) -> None:
        if self.num_spans > num_sentinels:
            raise T5LabError(
                f"mean_noise_span_length={self.mean_noise_span_length}: {self.num_spans} noise spans per "
                f"example but the tokenizer has only {num_sentinels} sentinels"
            )

    def __call__(
        self, tokens_BL: np.ndarray, sentinel_ids: np.ndarray, eos_id: int, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Corrupt [B, tokens_length] raw chunks into ([B, inputs_length], [B, targets_length])."""
        if tokens_BL.ndim != 2 or tokens_BL.shape[1] != self.tokens_length:
            raise ValueError(f"expected chunks of shape [B, {self.tokens_length}], got {tokens_BL.shape}")
        self.check_sentinels(len(sentinel_ids))
        mask_BL = random_spans_noise_masks(
            tokens_BL.shape[0], self.tokens_length, self.noise_density, self.mean_noise_span_length, rng
        )
        return span_corrupt(tokens_BL, mask_BL, sentinel_ids, eos_id)
