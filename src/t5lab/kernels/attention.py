"""Attention kernels other than the eager reference (`t5lab.model.attention.eager_attention`), all with the
interface `kernel(q_BHTK, k_BGSK, v_BGSK, bias: AttentionBias, dropout_p) -> out_BHTK`."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from t5lab.kernels.cpu_dropout import dropout as cpu_dropout
from t5lab.model.attention import AttentionBias, Kernel, bias_dtype, eager_attention, expand_kv_heads


def eager_cpu_dropout(q, k, v, bias: AttentionBias, dropout_p: float) -> torch.Tensor:
    """The eager reference with `t5lab.kernels.cpu_dropout`'s faster masks for the attention weights."""
    return eager_attention(q, k, v, bias, dropout_p, dropout=cpu_dropout)


def sdpa_attention(q, k, v, bias: AttentionBias, dropout_p: float) -> torch.Tensor:
    """PyTorch's fused scaled_dot_product_attention with T5's dense bias as an additive mask and scale 1."""
    k = expand_kv_heads(k, q.shape[1])
    v = expand_kv_heads(v, q.shape[1])
    dense = bias.dense(q.shape[2], k.shape[2], bias_dtype(q.dtype, q.device.type))
    mask = None if dense is None else dense.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, scale=1.0)


def fused_attention(q, k, v, bias: AttentionBias, dropout_p: float) -> torch.Tensor:
    """SDPA's fused kernels wherever the bias needs no gradient (cross-attention, padding masks, inference),
    which never materialise the [B, H, T, S] probabilities; the eager path where the learned relative bias
    needs its gradient, which PyTorch's fused kernels do not return, and for dropout on CPU, where SDPA
    falls back to its unfused math path with slower dropout masks (cross-attention of t5-efficient-tiny at
    batch 8, forward + backward: 44 ms vs eager 36 ms)."""
    needs_bias_grad = bias.table_RH is not None and bias.table_RH.requires_grad and torch.is_grad_enabled()
    if needs_bias_grad or (dropout_p > 0 and q.device.type == "cpu"):
        return eager_cpu_dropout(q, k, v, bias, dropout_p)
    return sdpa_attention(q, k, v, bias, dropout_p)


# "eager" is the reference with the faster CPU dropout masks (the plain model keeps F.dropout).
ATTENTION_KERNELS: dict[str, Kernel] = {"eager": eager_cpu_dropout, "sdpa": sdpa_attention, "fused": fused_attention}


def triton_or(fallback: Kernel) -> Kernel | None:
    """The Triton T5 attention kernel where `triton` and `t5lab.kernels.triton_attention` import, falling back
    to `fallback` for inputs it does not support; None where it cannot be imported."""
    try:
        import t5lab.kernels.triton_attention as triton_attention
    except ImportError:
        return None

    def triton_kernel(q, k, v, bias: AttentionBias, dropout_p: float) -> torch.Tensor:
        if bias.table_RH is None or not triton_attention.supports(q, k, bias, dropout_p):
            return fallback(q, k, v, bias, dropout_p)
        return triton_attention.t5_attention(
            q, k, v, bias.table_RH, bidirectional=bias.bidirectional, num_buckets=bias.num_buckets,
            max_distance=bias.max_distance, query_offset=bias.query_offset,
            key_padding_mask_BS=bias.key_padding_mask_BS, causal=bias.causal,
        )

    triton_kernel.uses_dense_bias = False  # type: ignore[attr-defined]  # builds the bias inside its tiles
    return triton_kernel
