"""T5's building blocks other than attention: dropout, RMS layer norm, bucketed relative position bias, feed-forward."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from t5lab.config import ModelConfig


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 - p).

    On CPU the keep mask comes from 15 random bits per element, two elements per 32-bit draw of the default
    generator (so p is rounded to a multiple of 1/32768, and the scale uses the rounded p). Why: torch's CPU
    `bernoulli_` draws one Mersenne-Twister number per element, serially, and was a fifth of a Switch training
    step; on the 8.4M attention probabilities of one t5-efficient-tiny layer at batch 8, forward + backward
    took 65-88 ms here vs 109-141 ms with F.dropout (interleaved runs). Other devices use F.dropout (fused there).
    """
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    n = x.numel()
    bits = torch.empty((n + 1) // 2, dtype=torch.int32).random_().view(torch.int16)[:n]
    threshold = round(p * 32768)
    # 15 uniform bits (random_() leaves an int32's sign bit 0). The comparison writes the 0/1 mask straight
    # into x's dtype: 5x faster than comparing to bool and converting.
    mask = torch.ge(bits.bitwise_and_(0x7FFF), threshold, out=torch.empty(n, dtype=x.dtype))
    return x * mask.mul_(32768 / (32768 - threshold)).view_as(x)


def in_major(*weights_OI: torch.Tensor, rows_per_block: int = 512) -> torch.Tensor:
    """Linear weights [O_i, I] stacked along O and stored transposed: one contiguous [I, sum O_i] matrix.

    One-row decoding on CPU reads some matrices faster in this layout (see `t5lab.generate.DecoderSteps`).
    The copy goes in row blocks that stay in cache: 1.6-2x faster than `.t().contiguous()` here.
    """
    out_IO = weights_OI[0].new_empty(weights_OI[0].shape[1], sum(w.shape[0] for w in weights_OI))
    column = 0
    for weight_OI in weights_OI:
        for start in range(0, weight_OI.shape[0], rows_per_block):
            block = weight_OI[start : start + rows_per_block]
            out_IO[:, column + start : column + start + block.shape[0]] = block.t()
        column += weight_OI.shape[0]
    return out_IO


def in_major_linears(*linears: nn.Module) -> torch.Tensor | None:
    """`in_major` of the linears' weights; None if one of them is not a plain `nn.Linear` (e.g. int8-quantised,
    which has no weight tensor to copy)."""
    if not all(isinstance(linear, nn.Linear) for linear in linears):
        return None
    return in_major(*(linear.weight for linear in linears))


class Dropout(nn.Module):
    """`dropout` as a module (active in training mode only), like nn.Dropout."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class RMSNorm(nn.Module):
    """T5's layer norm: scale only, no mean subtraction, no bias; the variance is taken in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch.rms_norm is one op (x * rsqrt(mean(x^2) + eps), times the weight), bitwise equal to the
        # explicit form on fp32 input; fewer ops matter when decoding one token at a time.
        if x.dtype == self.weight.dtype == torch.float32:
            return torch.rms_norm(x, x.shape[-1:], self.weight, eps=self.eps)
        # Half input is normalised in fp32.
        x = torch.rms_norm(x.float(), x.shape[-1:], eps=self.eps)
        # Half-precision weights: return in their dtype, as transformers does (it keeps the residual in fp32).
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


def relative_position_bucket(
    relative_position: torch.Tensor, bidirectional: bool, num_buckets: int, max_distance: int
) -> torch.Tensor:
    """Mesh-TF's bucketing of (key position - query position).

    Half of the buckets hold exact small distances, the rest log-spaced distances up to `max_distance`
    (farther ones share the last bucket). Bidirectional (encoder) buckets spend half their range on each
    sign; causal (decoder) ones only see the past.
    """
    buckets = torch.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).long() * num_buckets
        distance = relative_position.abs()
    else:
        distance = -torch.clamp(relative_position, max=0)
    max_exact = num_buckets // 2
    is_small = distance < max_exact
    log_bucket = max_exact + (
        torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    log_bucket = torch.clamp(log_bucket, max=num_buckets - 1)
    return buckets + torch.where(is_small, distance, log_bucket)


class RelativePositionBias(nn.Module):
    """Learned scalar bias per (bucket, head), added to every layer's attention scores of one stack."""

    def __init__(self, config: ModelConfig, bidirectional: bool) -> None:
        super().__init__()
        buckets, heads = config.relative_attention_num_buckets, config.num_heads
        self.embedding = nn.Embedding(buckets, heads, _weight=torch.empty(buckets, heads))  # see T5.__init__
        self.bidirectional = bidirectional
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance

    def forward(self, query_length: int, key_length: int, query_offset: int = 0) -> torch.Tensor:
        """Bias [1, H, T, S] for queries at positions offset..offset+T-1 and keys at 0..S-1.

        The bias depends only on key - query position, so it is looked up once per distance (T + S - 1 of them)
        and spread over [T, S] as sliding windows: the backward then sums windows instead of scattering T * S
        rows into the table (fwd + bwd at 512 x 512, 4 heads: 3 vs 27 ms on CPU).
        """
        T, S = query_length, key_length
        # Distances key - query from -(offset + T - 1) (last query, first key) to S - 1 - offset.
        distance_R = torch.arange(-(query_offset + T - 1), S - query_offset, device=self.embedding.weight.device)
        buckets_R = relative_position_bucket(distance_R, self.bidirectional, self.num_buckets, self.max_distance)
        bias_HR = self.embedding(buckets_R).t()
        # Window u holds distances starting at index u: row u is query T-1-u, hence the flip.
        return bias_HR.unfold(1, S, 1).flip(1).unsqueeze(0)


ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    # transformers maps T5's "gated-gelu" to gelu_new, the tanh approximation; parity needs the same.
    "gated-gelu": lambda x: F.gelu(x, approximate="tanh"),
    "gated-silu": F.silu,
}


class FeedForward(nn.Module):
    """Dense T5 feed-forward: wo(act(wi x)), or wo(act(wi_0 x) * wi_1 x) when gated (T5 v1.1)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.gated = config.is_gated
        if self.gated:
            self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
            self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        else:
            self.wi = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)
        self.act = ACTIVATIONS[config.feed_forward]
        self.dropout = Dropout(config.dropout)

    def in_major_input(self) -> torch.Tensor | None:
        """The input projection(s) as one in-major matrix [D, F] (gated: [D, 2F]), for `forward`'s `input_DX`;
        None if they are not plain `nn.Linear` (e.g. int8-quantised)."""
        return in_major_linears(self.wi_0, self.wi_1) if self.gated else in_major_linears(self.wi)

    def forward(self, x_BTD: torch.Tensor, input_DX: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        """Returns (output, router statistics); a dense layer has no router, hence None.

        `input_DX`: `in_major_input()`, used instead of the input projections' own weights (one-row decoding).
        """
        if input_DX is not None:
            h_BTX = x_BTD @ input_DX
            if self.gated:
                gate_BTF, linear_BTF = h_BTX.chunk(2, dim=-1)
                h_BTF = self.act(gate_BTF) * linear_BTF
            else:
                h_BTF = self.act(h_BTX)
        elif self.gated:
            h_BTF = self.act(self.wi_0(x_BTD)) * self.wi_1(x_BTD)
        else:
            h_BTF = self.act(self.wi(x_BTD))
        return self.wo(self.dropout(h_BTF)), None
