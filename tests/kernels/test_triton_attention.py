"""The fused T5 attention kernel against the plain torch computation, run under Triton's interpreter on CPU.

Tile sizes on CPU are 16 x 16, so these small odd shapes still span several query and key tiles, partial
tiles at both ends, and (32 buckets, max distance 128, 200 keys) tiles wholly in the last bucket.
Tolerances, relative to each tensor's largest entry: fp32 1e-4, fp16 5e-3, bf16 3e-2.
"""

from __future__ import annotations

import pytest
import torch
from interpreted_checks import assert_buckets_match, assert_matches_reference, unsupported_reason


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("num_buckets", "max_distance"), [(32, 128), (8, 20), (16, 1000), (32, 64)])
def test_buckets_match_the_model_at_every_distance(interpreted, bidirectional, num_buckets, max_distance):
    """-4096..4096; with 32 buckets up to 128, distances 16, 32 and 64 sit exactly on bucket edges."""
    interpreted(assert_buckets_match, bidirectional, num_buckets, max_distance)


def test_encoder_bidirectional_with_padding(interpreted):
    mask = torch.ones(2, 37)
    mask[1, 29:] = 0
    interpreted(assert_matches_reference, B=2, H=2, G=2, T=37, S=37, K=32, key_padding_mask_BS=mask)


def test_odd_lengths_shared_kv_head(interpreted):
    interpreted(assert_matches_reference, B=1, H=3, G=1, T=37, S=53, K=64)


def test_decoder_causal_grouped_heads_head_dim_96(interpreted):
    interpreted(assert_matches_reference, B=1, H=4, G=2, T=29, S=29, K=96, bidirectional=False, causal=True)


def test_cached_decoding_step(interpreted):
    """One new query after 22 cached positions: it sits at position 22 and sees keys 0..22."""
    interpreted(
        assert_matches_reference, B=2, H=2, G=2, T=1, S=23, K=32, bidirectional=False, causal=True, query_offset=22
    )


def test_cached_decoding_chunk_with_padding(interpreted):
    mask = torch.ones(1, 40)
    mask[0, :3] = 0
    interpreted(
        assert_matches_reference, B=1, H=2, G=1, T=5, S=40, K=32, bidirectional=False, causal=True,
        query_offset=35, key_padding_mask_BS=mask,
    )


def test_default_buckets_far_keys_head_dim_128(interpreted):
    """32 buckets up to distance 128 over 200 keys: far tiles fall wholly in the last bucket."""
    interpreted(assert_matches_reference, B=1, H=2, G=2, T=9, S=200, K=128, num_buckets=32, max_distance=128)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_inputs(interpreted, dtype):
    mask = torch.ones(1, 33)
    mask[0, 30:] = 0
    interpreted(assert_matches_reference, B=1, H=2, G=1, T=21, S=33, K=32, dtype=dtype, key_padding_mask_BS=mask)


def test_a_row_of_padding_only_averages_it_like_eager(interpreted):
    """A batch row whose keys are all padding: eager adds the dtype's minimum everywhere, so its softmax is
    uniform (and the table still gets a gradient there); the kernel must not return 0/0."""
    mask = torch.ones(2, 19)
    mask[1] = 0
    interpreted(assert_matches_reference, B=2, H=2, G=2, T=19, S=19, K=32, key_padding_mask_BS=mask)


@pytest.mark.slow
@pytest.mark.parametrize(("T", "S", "K", "G"), [(130, 130, 64, 4), (77, 301, 32, 1), (64, 64, 128, 2)])
@pytest.mark.parametrize("causal", [False, True])
def test_larger_shapes(interpreted, T, S, K, G, causal):
    interpreted(
        assert_matches_reference, B=2, H=4, G=G, T=T, S=S, K=K, num_buckets=32, max_distance=128,
        bidirectional=not causal, causal=causal, query_offset=S - T if causal else 0,
    )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"dropout_p": 0.1}, "dropout"),
        ({"table_RH": None}, "no position bias"),
        ({"dtype": torch.float64}, "dtypes"),
        ({"K": 256}, "head dim 256"),
        ({"K": 8}, "head dim 8"),
        ({"G": 3}, "G dividing H"),
        ({}, "device cpu"),
    ],
)
def test_unsupported_calls_fall_back(interpreted, change, reason):
    """What the kernel does not cover is refused, each with its reason, and the caller keeps eager; CPU
    tensors too, as the kernel runs on CPU only under the interpreter."""
    why, supported = interpreted(unsupported_reason, change)
    assert why is not None and reason in why
    assert not supported
