"""Attention: AttentionBias builds the dense bias the stacks used to; every kernel equals the eager reference;
the CPU path that runs the batch in cache-sized groups equals the one-shot reference."""

from __future__ import annotations

import pytest
import torch

import t5lab.model.attention as attention
from t5lab.kernels import ATTENTION_CHOICES, attention_kernel
from t5lab.model.attention import AttentionBias, eager_attention
from t5lab.model.layers import relative_position_bias


def _dense_bias(rows: int, generator: torch.Generator) -> AttentionBias:
    """An AttentionBias whose dense form [rows, 3, 6, 7] is a given random tensor (kernels only read `dense`)."""
    bias = AttentionBias(None)
    bias.dense_memo[(6, 7, torch.float32)] = torch.randn(rows, 3, 6, 7, generator=generator, requires_grad=True)
    return bias


@pytest.mark.parametrize("bias_rows", [1, 5])  # a shared relative bias, or one with a per-row padding mask
@pytest.mark.parametrize("kv_heads", [3, 1])  # multi-head, or one shared key/value head (-sh)
def test_grouped_batch_equals_one_shot(bias_rows, kv_heads, monkeypatch):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, 3, 6, 4, generator=g, requires_grad=True)
    k = torch.randn(5, kv_heads, 7, 4, generator=g, requires_grad=True)
    v = torch.randn(5, kv_heads, 7, 4, generator=g, requires_grad=True)
    bias = _dense_bias(bias_rows, g)
    dense = bias.dense(6, 7, torch.float32)
    out_grad = torch.randn(5, 3, 6, 4, generator=g)
    results = []
    for group_bytes in (2**30, 2 * 3 * 6 * 7 * 4):  # all rows at once, then groups of 2 rows (2 + 2 + 1)
        monkeypatch.setattr(attention, "_CPU_SCORES_BYTES", group_bytes)
        for t in (q, k, v, dense):
            t.grad = None
        out = eager_attention(q, k, v, bias, 0.0)
        out.backward(out_grad)
        results.append([out.detach()] + [t.grad for t in (q, k, v, dense)])
    for one_shot, grouped in zip(*results, strict=True):
        torch.testing.assert_close(grouped, one_shot)


def test_half_scores_with_a_fully_masked_row_stay_finite():
    """bf16 q/k/v under autocast with an fp32 padding bias: the bias is added in fp32, as transformers'
    promotion does; rounded to bf16 its minimum would become -inf and the fully masked row NaN."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 4, 8, generator=g).bfloat16() for _ in range(3))
    mask = torch.ones(2, 4)
    mask[1] = 0  # every key of row 1 is padding
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = eager_attention(q, k, v, AttentionBias(None, key_padding_mask_BS=mask), 0.0)
        assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
        torch.testing.assert_close(out[:1], eager_attention(q[:1], k[:1], v[:1], AttentionBias(None), 0.0))


@pytest.mark.parametrize(("causal", "offset", "T", "S"), [(False, 0, 6, 6), (True, 0, 5, 5), (True, 4, 1, 5),
                                                           (True, 2, 3, 5)])
def test_dense_bias_is_relative_bias_plus_causal_and_padding_masks(causal, offset, T, S):
    g = torch.Generator().manual_seed(1)
    table = torch.randn(8, 3, generator=g)
    mask = torch.ones(2, S, dtype=torch.long)
    mask[1, S - 2 :] = 0
    bias = AttentionBias(table, bidirectional=not causal, num_buckets=8, max_distance=20, query_offset=offset,
                         key_padding_mask_BS=mask, causal=causal)
    dense = bias.dense(T, S, torch.float32)
    assert dense.shape == (2, 3, T, S) and bias.dense(T, S, torch.float32) is dense  # memoised
    expected = relative_position_bias(table, T, S, bidirectional=not causal, num_buckets=8, max_distance=20,
                                      query_offset=offset).expand(2, 3, T, S).clone()
    low = torch.finfo(torch.float32).min
    for t in range(T):
        for s in range(S):
            if causal and s > offset + t:
                expected[:, :, t, s] = low
    expected[1, :, :, S - 2 :] += low
    torch.testing.assert_close(dense, expected)
    assert AttentionBias(None).dense(T, S, torch.float32) is None  # cross-attention without padding: nothing


@pytest.mark.parametrize("name", [n for n in ATTENTION_CHOICES if n != "triton"])
@pytest.mark.parametrize("case", ["encoder", "decoder", "cross-padded", "decoding-step"])
def test_every_kernel_equals_the_eager_reference_with_gradients(name, case):
    g = torch.Generator().manual_seed(2)
    B, H, K = 2, 3, 4
    shapes = {"encoder": (6, 6, 0), "decoder": (5, 5, 0), "cross-padded": (5, 7, 0), "decoding-step": (1, 5, 4)}
    T, S, offset = shapes[case]
    table = torch.randn(8, H, generator=g, requires_grad=True)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, S - 2 :] = 0

    def make_bias() -> AttentionBias:
        if case == "cross-padded":
            return AttentionBias(None, key_padding_mask_BS=mask)
        return AttentionBias(table, bidirectional=case == "encoder", num_buckets=8, max_distance=20,
                             query_offset=offset, causal=case != "encoder")

    q = torch.randn(B, H, T, K, generator=g, requires_grad=True)
    k = torch.randn(B, 1, S, K, generator=g, requires_grad=True)  # one shared key/value head
    v = torch.randn(B, 1, S, K, generator=g, requires_grad=True)
    results = []
    for kernel in (eager_attention, attention_kernel(name)):
        out = kernel(q, k, v, make_bias(), 0.0)
        results.append([out, *torch.autograd.grad(out.square().sum(), (q, k, v, table), allow_unused=True)])
    for ours, reference in zip(results[1], results[0], strict=True):
        if reference is None:
            assert ours is None
        else:
            torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
