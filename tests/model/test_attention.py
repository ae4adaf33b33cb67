"""Attention kernels: the CPU path that runs the batch in cache-sized groups equals the one-shot reference."""

from __future__ import annotations

import pytest
import torch

import t5lab.model.attention as attention


@pytest.mark.parametrize("bias_rows", [1, 5])  # a shared relative bias, or one with a per-row padding mask
@pytest.mark.parametrize("kv_heads", [3, 1])  # multi-head, or one shared key/value head (-sh)
def test_grouped_batch_equals_one_shot(bias_rows, kv_heads, monkeypatch):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, 3, 6, 4, generator=g, requires_grad=True)
    k = torch.randn(5, kv_heads, 7, 4, generator=g, requires_grad=True)
    v = torch.randn(5, kv_heads, 7, 4, generator=g, requires_grad=True)
    bias = torch.randn(bias_rows, 3, 6, 7, generator=g, requires_grad=True)
    out_grad = torch.randn(5, 3, 6, 4, generator=g)
    results = []
    for group_bytes in (2**30, 2 * 3 * 6 * 7 * 4):  # all rows at once, then groups of 2 rows (2 + 2 + 1)
        monkeypatch.setattr(attention, "_CPU_SCORES_BYTES", group_bytes)
        for t in (q, k, v, bias):
            t.grad = None
        out = attention.eager_attention(q, k, v, bias, 0.0)
        out.backward(out_grad)
        results.append([out.detach()] + [t.grad for t in (q, k, v, bias)])
    for one_shot, grouped in zip(*results, strict=True):
        torch.testing.assert_close(grouped, one_shot)


def test_half_scores_with_a_fully_masked_row_stay_finite():
    """bf16 q/k/v (as under autocast) with an fp32 padding bias: the bias is added in fp32, as transformers'
    promotion does; rounded to bf16 its minimum would become -inf and the fully masked row NaN."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 4, 8, generator=g).bfloat16() for _ in range(3))
    bias = torch.zeros(2, 1, 1, 4)
    bias[1] = torch.finfo(torch.float32).min  # every key of row 1 is padding
    out = attention.eager_attention(q, k, v, bias, 0.0)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    torch.testing.assert_close(out[:1], attention.eager_attention(q[:1], k[:1], v[:1], None, 0.0))  # zero bias
