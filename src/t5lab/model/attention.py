"""Multi-head attention for T5, with a KV cache, behind one small kernel interface.

T5 specifics: no 1/sqrt(d_kv) scaling (folded into the initialisation), softmax in fp32, no biases on
q/k/v/o, inner width H*K that need not equal d_model. Variants: `num_kv_heads` < H (shared heads: one key/
value head serves all query heads) and `tie_key_value` (one projection gives both keys and values).

A kernel is `kernel(q [B,H,T,K], k [B,G,S,K], v [B,G,S,K], bias: AttentionBias, dropout_p) -> [B,H,T,K]`.
`AttentionBias` carries what a kernel needs to build T5's additive bias itself (the relative-position table,
its bucket parameters, the query offset, the padding mask, the causal flag) rather than a dense
[B|1, H, T, S] tensor, which grows with T*S. `eager_attention` is the reference every other kernel (in
`t5lab.kernels`) is checked against; it builds the dense bias with `AttentionBias.dense`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from t5lab.config import ModelConfig
from t5lab.model.layers import relative_position_bias


@dataclass(eq=False)
class AttentionBias:
    """What a kernel needs to build T5's additive attention bias itself (inside its tiles), instead of a dense
    [B|1, H, T, S] tensor that grows with T*S. One per stack forward, shared by all its layers."""

    table_RH: torch.Tensor | None  # learned relative-position bias [num_buckets, H]; None: no position bias
    bidirectional: bool = True  # encoder buckets (True) or decoder/causal buckets (False)
    num_buckets: int = 32
    max_distance: int = 128
    query_offset: int = 0  # absolute position of the first query (KV-cached decoding: the cached length)
    key_padding_mask_BS: torch.Tensor | None = None  # 1 keep / 0 padding, per key
    causal: bool = False  # a query at absolute position p sees keys 0..p
    # dense(...) results by (T, S, dtype): every layer of the stack reuses the first one's.
    dense_memo: dict[tuple[int, int, torch.dtype], torch.Tensor | None] = field(default_factory=dict, repr=False)

    def dense(self, query_length: int, key_length: int, dtype: torch.dtype) -> torch.Tensor | None:
        """The additive bias [1|B, H|1, T, S] (None: nothing to add): relative position bias, then the causal
        mask and the padding mask as the dtype's most negative value. Built once, then memoised."""
        key = (query_length, key_length, dtype)
        if key in self.dense_memo:
            return self.dense_memo[key]
        bias = None
        if self.table_RH is not None:
            bias = relative_position_bias(
                self.table_RH, query_length, key_length, bidirectional=self.bidirectional,
                num_buckets=self.num_buckets, max_distance=self.max_distance, query_offset=self.query_offset,
            ).to(dtype)
        if self.causal:
            device = self.table_RH.device if self.table_RH is not None else None
            future = torch.ones(query_length, key_length, dtype=torch.bool, device=device).triu(self.query_offset + 1)
            if bias is None:
                bias = torch.zeros(1, 1, query_length, key_length, dtype=dtype, device=device)
            bias = bias.masked_fill(future, torch.finfo(dtype).min)
        if self.key_padding_mask_BS is not None:
            mask = self.key_padding_mask_BS[:, None, None, :].to(dtype)
            padding = (1.0 - mask) * torch.finfo(dtype).min
            bias = padding if bias is None else bias + padding
        self.dense_memo[key] = bias
        return bias


Kernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, AttentionBias, float], torch.Tensor]


def bias_dtype(dtype: torch.dtype, device_type: str) -> torch.dtype:
    """The dtype a dense bias is built in: the residual stream's, i.e. fp32 under autocast (whose q/k/v are
    half while the hidden states stay fp32), else the dtype of the queries."""
    autocast = torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type)
    return torch.float32 if autocast else dtype


def expand_kv_heads(x_BGSK: torch.Tensor, num_heads: int) -> torch.Tensor:
    groups = x_BGSK.shape[1]
    if groups == num_heads:
        return x_BGSK
    return x_BGSK.repeat_interleave(num_heads // groups, dim=1)


# Scores of one group of batch rows that the CPU path keeps together: a few MiB stay in cache.
_CPU_SCORES_BYTES = 8 * 2**20

Dropout = Callable[[torch.Tensor, float], torch.Tensor]


def eager_attention(q, k, v, bias: AttentionBias, dropout_p: float, dropout: Dropout = F.dropout) -> torch.Tensor:
    """The reference: explicit scores, bias added, fp32 softmax, as transformers' T5.

    On CPU the batch runs in groups of rows whose [rows, H, T, S] scores fit in 8 MiB, so that the bias,
    softmax and dropout passes (and their backward) work in cache rather than memory: forward + backward
    of an encoder layer of t5-efficient-tiny at batch 8 x 512 took 103-125 ms instead of 140-177 ms.
    `dropout(x, p)` drops attention weights (a backend may bring a faster one).
    """
    B, H, T, _ = q.shape
    dense = bias.dense(T, k.shape[2], bias_dtype(q.dtype, q.device.type))
    rows = max(1, _CPU_SCORES_BYTES // (H * T * k.shape[2] * 4))
    if q.device.type != "cpu" or rows >= B:
        return dense_bias_attention(q, k, v, dense, dropout_p, dropout)
    # split, not slicing: its backward concatenates the groups' gradients, where each slice's backward would
    # zero-fill a full-size gradient and add it up (48 fills and 36 adds of [8, 4, 512, 64] per step).
    biases = itertools.repeat(dense) if dense is None or dense.shape[0] == 1 else dense.split(rows)
    groups = zip(q.split(rows), k.split(rows), v.split(rows), biases, strict=False)  # biases may repeat forever
    return torch.cat([dense_bias_attention(*group, dropout_p, dropout) for group in groups])


def dense_bias_attention(q, k, v, bias: torch.Tensor | None, dropout_p: float, dropout: Dropout = F.dropout):
    """Attention with an explicit dense bias [B|1, H|1, T, S] (or None)."""
    k = expand_kv_heads(k, q.shape[1])
    v = expand_kv_heads(v, q.shape[1])
    scores_BHTS = torch.matmul(q, k.transpose(-1, -2))
    if bias is not None:
        # In place where the sum keeps the scores' dtype and shape (the product is fresh and its backward does
        # not need it; torch.broadcast_shapes would cost 38 us per call). Not for bf16 scores with an fp32 bias
        # (autocast): rounded to bf16, the mask's fp32 minimum becomes -inf, and a fully masked row's softmax
        # NaN; `+` promotes to fp32 as before.
        if bias.dtype == scores_BHTS.dtype and bias.shape[0] in (1, scores_BHTS.shape[0]):
            scores_BHTS = scores_BHTS.add_(bias)
        else:
            scores_BHTS = scores_BHTS + bias
    if scores_BHTS.dtype == q.dtype == torch.float32:
        weights_BHTS = torch.softmax(scores_BHTS, dim=-1)
    else:
        weights_BHTS = torch.softmax(scores_BHTS.float(), dim=-1).type_as(q)
    if dropout_p > 0:
        weights_BHTS = dropout(weights_BHTS, dropout_p)
    return torch.matmul(weights_BHTS, v)


@dataclass
class KVCache:
    """Decoder keys/values kept across generation steps.

    Self-attention keys/values live in preallocated buffers [B, G, max_length, K] per layer, written in
    place, so a step costs no reallocation. Cross-attention keys/values are computed from the encoder
    output once, at the first step, and reused.
    """

    max_length: int
    length: int = 0
    self_k: list[torch.Tensor | None] = field(default_factory=list)
    self_v: list[torch.Tensor | None] = field(default_factory=list)
    cross_k: list[torch.Tensor | None] = field(default_factory=list)
    cross_v: list[torch.Tensor | None] = field(default_factory=list)

    @classmethod
    def empty(cls, num_layers: int, max_length: int) -> KVCache:
        none: list[torch.Tensor | None] = [None] * num_layers
        return cls(max_length, 0, list(none), list(none), list(none), list(none))

    def append(self, layer: int, k_BGTK: torch.Tensor, v_BGTK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this step's keys/values for `layer`; return all keys/values so far."""
        keys, values = self.self_k[layer], self.self_v[layer]
        if keys is None or values is None:
            B, G, _, K = k_BGTK.shape
            keys = self.self_k[layer] = k_BGTK.new_empty(B, G, self.max_length, K)
            values = self.self_v[layer] = v_BGTK.new_empty(B, G, self.max_length, K)
        end = self.length + k_BGTK.shape[2]
        if end > self.max_length:
            raise ValueError(f"KV cache holds {self.max_length} positions; step would reach {end}")
        keys[:, :, self.length:end] = k_BGTK
        values[:, :, self.length:end] = v_BGTK
        return keys[:, :, :end], values[:, :, :end]

    def reorder(self, index_B: torch.Tensor, cross: bool = True) -> None:
        """Follow beam search: row b of the batch becomes row index_B[b].

        `cross=False` leaves the cross-attention keys/values alone: right when rows only move among copies
        of the same input (beam search), and it saves copying them every step.
        """
        for buffers in (self.self_k, self.self_v, self.cross_k, self.cross_v)[: 4 if cross else 2]:
            for i, t in enumerate(buffers):
                if t is not None:
                    buffers[i] = t.index_select(0, index_B)


class Attention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.num_kv_heads = config.kv_heads
        self.d_kv = config.d_kv
        kv_dim = self.num_kv_heads * config.d_kv
        self.q = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.k = nn.Linear(config.d_model, kv_dim, bias=False)
        # `-skv`: one projection serves keys and values (the value path reuses `k`).
        self.v = None if config.tie_key_value else nn.Linear(config.d_model, kv_dim, bias=False)
        self.o = nn.Linear(config.inner_dim, config.d_model, bias=False)
        self.dropout = config.dropout
        self.kernel: Kernel = eager_attention  # t5lab.kernels may set a faster one

    def _heads(self, x_BTX: torch.Tensor, heads: int) -> torch.Tensor:
        B, T, _ = x_BTX.shape
        return x_BTX.view(B, T, heads, self.d_kv).transpose(1, 2)

    def _project_kv(self, source_BSD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k_BGSK = self._heads(self.k(source_BSD), self.num_kv_heads)
        v_BGSK = k_BGSK if self.v is None else self._heads(self.v(source_BSD), self.num_kv_heads)
        return k_BGSK, v_BGSK

    def forward(
        self,
        x_BTD: torch.Tensor,
        bias: AttentionBias,
        source_BSD: torch.Tensor | None = None,
        cache: KVCache | None = None,
        layer: int = 0,
    ) -> torch.Tensor:
        """Self-attention when `source_BSD` is None, else cross-attention over `source_BSD`.

        With a cache, self-attention appends this step's keys/values and cross-attention computes its
        keys/values once (`layer` indexes the cache).
        """
        q_BHTK = self._heads(self.q(x_BTD), self.num_heads)
        if source_BSD is None:
            k, v = self._project_kv(x_BTD)
            if cache is not None:
                k, v = cache.append(layer, k, v)
        elif cache is None:
            k, v = self._project_kv(source_BSD)
        else:
            cached_k, cached_v = cache.cross_k[layer], cache.cross_v[layer]
            if cached_k is None or cached_v is None:
                # Stored contiguous: the head-split view would make every later step's matmul copy it.
                k, v = self._project_kv(source_BSD)
                cached_k, cached_v = k.contiguous(), v.contiguous()
                cache.cross_k[layer], cache.cross_v[layer] = cached_k, cached_v
            k, v = cached_k, cached_v
        out_BHTK = self.kernel(q_BHTK, k, v, bias, self.dropout if self.training else 0.0)
        B, _, T, _ = out_BHTK.shape
        return self.o(out_BHTK.transpose(1, 2).reshape(B, T, -1))
