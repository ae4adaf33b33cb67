from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from span_inverse import reconstruct

from t5lab.data.span_corruption import (
    SpanCorruption,
    compute_input_and_target_lengths,
    random_spans_noise_mask,
    random_spans_noise_masks,
    span_corrupt,
)
from t5lab.errors import T5LabError

VOCAB = 1000
SENTINELS = np.arange(VOCAB - 1, VOCAB - 101, -1)  # <extra_id_0> = vocab - 1, counting down
EOS = 1


def test_t5_default_lengths() -> None:
    assert compute_input_and_target_lengths(512, 0.15, 3.0) == (568, 114)
    sc = SpanCorruption(512, 0.15, 3.0)
    assert (sc.tokens_length, sc.targets_length, sc.num_spans) == (568, 114, 28)


def test_density_half_keeps_targets_equal_to_inputs() -> None:
    # T5's random_spans_helper shortens the chunk by one so that targets (513) become 512
    assert compute_input_and_target_lengths(512, 0.5, 3.0) == (766, 512)


@settings(max_examples=60, deadline=None)
@given(
    inputs_length=st.integers(16, 600),
    noise_density=st.floats(0.05, 0.5),
    mean=st.floats(1.0, 10.0),
    batch=st.integers(1, 4),
    seed=st.integers(0, 2**32 - 1),
)
def test_corruption_properties(inputs_length: int, noise_density: float, mean: float, batch: int, seed: int) -> None:
    try:
        sc = SpanCorruption(inputs_length, noise_density, mean)
    except T5LabError:
        return  # settings T5 cannot satisfy are rejected; tested below
    if sc.num_spans > len(SENTINELS):
        return
    rng = np.random.default_rng(seed)
    tokens = rng.integers(3, VOCAB - 100, size=(batch, sc.tokens_length))
    inputs, targets = sc(tokens, SENTINELS, EOS, rng)
    # exact lengths, EOS included
    assert inputs.shape == (batch, inputs_length)
    assert targets.shape == (batch, sc.targets_length)
    assert (inputs[:, -1] == EOS).all() and (targets[:, -1] == EOS).all()
    num_noise = min(max(round(sc.tokens_length * noise_density), 1), sc.tokens_length - 1)
    num_spans = max(round(num_noise / mean), 1)
    for b in range(batch):
        assert reconstruct(inputs[b].tolist(), targets[b].tolist(), set(SENTINELS.tolist())) == tokens[b].tolist()
        # sentinels used in order from <extra_id_0>, once each, in both inputs and targets
        used = [t for t in inputs[b].tolist() if t in set(SENTINELS.tolist())]
        assert used == SENTINELS[:num_spans].tolist()
        assert [t for t in targets[b].tolist() if t in set(SENTINELS.tolist())] == used
        assert len(targets[b]) - 1 - num_spans == num_noise  # noise fraction as T5 computes it


@settings(max_examples=40, deadline=None)
@given(length=st.integers(2, 400), density=st.floats(0.01, 0.6), mean=st.floats(1.0, 8.0), seed=st.integers(0, 1000))
def test_noise_mask_counts(length: int, density: float, mean: float, seed: int) -> None:
    num_noise = min(max(round(length * density), 1), length - 1)
    num_spans = max(round(num_noise / mean), 1)
    if num_spans > length - num_noise:
        with pytest.raises(T5LabError):
            random_spans_noise_mask(length, density, mean, np.random.default_rng(seed))
        return
    mask = random_spans_noise_mask(length, density, mean, np.random.default_rng(seed))
    assert mask.shape == (length,) and mask.dtype == bool
    assert mask.sum() == num_noise
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    assert starts.sum() == num_spans
    assert not mask[0]  # T5's spans start with a kept span


def test_noise_spans_are_spread_out() -> None:
    # Every position except the first can be noise, and noise is not stuck at the end (a known weakness
    # of some ports for short sequences).
    masks = random_spans_noise_masks(2000, 100, 0.15, 3.0, np.random.default_rng(0))
    rate = masks.mean(axis=0)
    assert rate[0] == 0 and rate[1:].min() > 0.03 and abs(rate.mean() - 0.15) < 1e-9


def test_span_corrupt_by_hand() -> None:
    tokens = np.array([[10, 11, 12, 13, 14]])
    mask = np.array([[False, True, True, False, True]])
    inputs, targets = span_corrupt(tokens, mask, SENTINELS, EOS)
    assert inputs.tolist() == [[10, 999, 13, 998, 1]]
    assert targets.tolist() == [[999, 11, 12, 998, 14, 1]]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(noise_density=0.0), "noise_density"),
        (dict(noise_density=1.0), "noise_density"),
        (dict(mean_noise_span_length=0.5), "mean_noise_span_length"),
        (dict(noise_density=0.8), "noise_density"),  # targets longer than inputs
        (dict(inputs_length=1), "inputs_length"),
        (dict(inputs_length=2), "inputs_length"),
    ],
)
def test_impossible_settings_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(T5LabError, match=field):
        SpanCorruption(**kwargs)


def test_too_few_sentinels() -> None:
    sc = SpanCorruption(512, 0.15, 3.0)
    with pytest.raises(T5LabError, match="sentinels"):
        sc(np.zeros((1, 568), np.int64), SENTINELS[:10], EOS, np.random.default_rng(0))


def _flax_example_variant(inputs_length: int, noise_density: float, mean_noise_span_length: float):
    """run_t5_mlm_flax.py's / nanoT5's copy: the search starts at inputs_length (T5's at inputs_length - 1)."""

    def lengths(tokens_length: int) -> tuple[int, int]:
        noise = int(round(tokens_length * noise_density))
        spans = int(round(noise / mean_noise_span_length))
        return tokens_length - noise + spans + 1, noise + spans + 1

    tokens_length = inputs_length
    while lengths(tokens_length + 1)[0] <= inputs_length:
        tokens_length += 1
    return tokens_length, lengths(tokens_length)[1], lengths(tokens_length)[0]


def test_lengths_follow_t5s_helper_not_the_flax_example_variant():
    assert compute_input_and_target_lengths(512, 0.15, 1.0) == (511, 155)
    assert _flax_example_variant(512, 0.15, 1.0) == (512, 155, 513)  # one input token too many
    assert compute_input_and_target_lengths(512, 0.15, 3.0) == (568, 114) == _flax_example_variant(512, 0.15, 3.0)[:2]
