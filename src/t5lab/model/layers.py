"""T5's building blocks other than attention: dropout, RMS layer norm, bucketed relative position bias, feed-forward."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import flop_counter

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


def one_row_splits(outputs: int) -> int:
    """How many blocks of rows a one-row product splits its weight into: one per thread, at most 8 (measured on
    2 cores only), and a divisor of `outputs` so that the blocks are equal views."""
    return math.gcd(outputs, min(torch.get_num_threads(), 8))


@functools.cache
def _onednn_matmul_available() -> bool:
    """Whether many-row fp32 products on CPU go through oneDNN instead of the BLAS (MKL): where the CPU has
    AVX-512 and torch was built with oneDNN.

    Why: MKL runs its AVX2 code on AMD CPUs, while oneDNN compiles AVX-512 kernels for whatever CPU it finds.
    On 2 cores of an AMD EPYC with AVX-512, x W^T at 4096 x 256 x 1024 took 12-15 vs 20-24 ms, and g W
    12-16 vs 18-23 ms; g^T x was no faster (17-23 vs 17-22 ms), so weight gradients stay with the BLAS.
    With AVX-512 capped (ONEDNN_MAX_CPU_ISA=AVX2) the two were equal, hence the condition. Unmeasured on
    Intel CPUs, where MKL has AVX-512 kernels of its own.
    """
    return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
            and torch.backends.cpu.get_cpu_capability() == "AVX512")


def _count_onednn_linear_flops() -> None:
    """Teach torch's FlopCounterMode (it counts aten.mm; t5lab's FLOP checks use it) the oneDNN op too. At
    import: a FlopCounterMode copies the registry when it is created."""
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return
    op = torch.ops.mkldnn._linear_pointwise
    if op not in flop_counter.flop_registry:  # registering twice raises; a later torch may count it itself
        flop_counter.register_flop_formula(op)(
            lambda x_shape, w_shape, *args, out_shape=None, **kwargs: 2 * math.prod(x_shape) * w_shape[0])


_count_onednn_linear_flops()


def _onednn_linear(x: torch.Tensor, weight_OI: torch.Tensor) -> torch.Tensor:
    # The op Inductor (torch.compile's CPU backend) emits for fp32 linear layers; any leading dims, strided weights.
    return torch.ops.mkldnn._linear_pointwise(x, weight_OI, None, "none", [], "")


def _only_plain_autograd() -> bool:
    """False under torch.func transforms (grad, vmap, jvp) and forward-mode AD: the oneDNN op has no rules for
    them (its reverse-mode gradient comes from `_OneDNNLinear`), so F.linear serves there. Both flags are
    torch internals: a torch without them gets F.linear always."""
    transforms_active = getattr(torch._C, "_are_functorch_transforms_active", None)
    forward_ad_level = getattr(torch.autograd.forward_ad, "_current_level", 0)
    return transforms_active is not None and not transforms_active() and forward_ad_level < 0


class _OneDNNLinear(torch.autograd.Function):
    """x W^T with oneDNN; backward: dx = g W with oneDNN, dW = g^T x with the BLAS (see _onednn_matmul_available).

    A backward that builds a graph (create_graph=True, e.g. a gradient penalty) computes dx with F.linear, whose
    own gradient torch knows: through the oneDNN op that part of the second derivative would be lost.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight_OI: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight_OI)
        return _onednn_linear(x, weight_OI)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        x, weight_OI = ctx.saved_tensors
        grad_x = None
        if ctx.needs_input_grad[0]:
            product = F.linear if torch.is_grad_enabled() else _onednn_linear
            grad_x = product(grad_y, weight_OI.t())
        grad_weight = None
        if ctx.needs_input_grad[1]:
            grad_weight = grad_y.reshape(-1, grad_y.shape[-1]).t() @ x.reshape(-1, x.shape[-1])
        return grad_x, grad_weight


def linear(x: torch.Tensor, weight_OI: torch.Tensor) -> torch.Tensor:
    """`F.linear(x, weight_OI)` without bias, on CPU in fp32: many rows through oneDNN where that is faster (see
    `_onednn_matmul_available`), and one row (a batch-1 decoding step) split across cores.

    CPU BLAS (MKL here) runs a one-row product as fast on 1 thread as on 2, and one core streams about half
    of the memory bandwidth, which is what a decoding step is bound by. torch's `bmm` runs its batch entries
    on separate threads, so the weight, viewed as `splits` blocks of rows (no copy), is read by every core:
    12-18 vs 6-10 GB/s on 2 AMD EPYC cores for the matrices of t5-efficient-tiny/small (512 x 512: 15 vs
    9 GB/s; 32128 x 512: 18 vs 7 GB/s). The sums may round differently from F.linear's (~1e-5 relative at
    512 inputs) and, as with any multi-threaded BLAS, can depend on the thread count. Measured on 2 cores
    and fp32 only: other dtypes keep F.linear, and at most 8 blocks are used.
    """
    # Traced (FX, torch.jit) or compiled: the tracer's own kernels. Under autocast: F.linear, whose weight casts
    # autocast caches (the one-row blocks would be cast anew at every decoding step: 2x slower at batch 1).
    if (isinstance(x, torch.fx.Proxy) or torch.compiler.is_compiling() or torch.jit.is_tracing()
            or x.device.type != "cpu" or x.dtype != torch.float32 or torch.is_autocast_enabled("cpu")):
        return F.linear(x, weight_OI)
    if x.numel() != x.shape[-1]:
        if (x.numel() == 0 or not _onednn_matmul_available() or not torch.backends.mkldnn.enabled
                or not _only_plain_autograd()):
            return F.linear(x, weight_OI)
        if torch.is_grad_enabled() and (x.requires_grad or weight_OI.requires_grad):
            return _OneDNNLinear.apply(x, weight_OI)
        return _onednn_linear(x, weight_OI)
    splits = one_row_splits(weight_OI.shape[0])
    if splits == 1 or not weight_OI.is_contiguous():
        return F.linear(x, weight_OI)
    O, I = weight_OI.shape
    # The row as a column [I, 1] with leading dimension I, shared by every block (strides 0, 1, I). With
    # leading dimension 1 (e.g. `x.reshape(1, I, 1).expand(...)`) torch's bmm took a path 2x slower than F.linear.
    column = x.contiguous().as_strided((splits, I, 1), (0, 1, I))
    return torch.bmm(weight_OI.view(splits, O // splits, I), column).view(*x.shape[:-1], O)


def row_blocks_in_major(weight_OI: torch.Tensor) -> torch.Tensor | None:
    """A copy of `weight_OI` for `linear_in_major`: `splits` blocks of rows (as `linear` splits them), each
    stored transposed, [splits, I, O / splits]. None where `linear` would not split (one thread, or
    an O that the threads do not divide).

    Why a copy: a one-row product reads an [I, O/splits] block at the speed of a plain sum (one pass of
    axpy-like updates), but a row-major [O/splits, I] block (one dot product per row) about 30% slower, once
    O is large: output layer of t5-efficient-small on 2 cores, 3.1 vs 4.5 ms (21 vs 15 GB/s); tiny's 1.5 vs
    2.3 ms. For the square and wide matrices of the layers it was slower (512 x 512: 9 vs 11.5 GB/s), so
    only the output layer uses it.
    """
    splits = one_row_splits(weight_OI.shape[0])
    if splits == 1:
        return None
    O, I = weight_OI.shape
    # A normal tensor even when built under inference_mode, so it can be used outside it.
    with torch.inference_mode(False):
        return weight_OI.detach().view(splits, O // splits, I).transpose(1, 2).contiguous()


def linear_in_major(x: torch.Tensor, blocks_SIO: torch.Tensor) -> torch.Tensor:
    """`F.linear(x, weight)` for one row `x`, from `row_blocks_in_major(weight)`: every core reads its block."""
    S, I, O = blocks_SIO.shape
    return torch.bmm(x.reshape(1, 1, I).expand(S, 1, I), blocks_SIO).view(*x.shape[:-1], S * O)


class Linear(nn.Linear):
    """`nn.Linear` (same parameters, same state-dict keys) whose bias-free products go through `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) if self.bias is not None else linear(x, self.weight)


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
        # The CPU path's dim and eps as tensors (not state: fixed by the constructor, never moved). Normal
        # tensors even when built under inference_mode: autograd saves the divisor for backward.
        with torch.inference_mode(False):
            self._cpu_dim, self._cpu_eps = torch.tensor(float(dim), device="cpu"), torch.tensor(eps, device="cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:
            if x.device.type == "cpu":
                # x * rsqrt(mean(x^2) + eps) * weight in the ops torch.rms_norm runs on CPU (bitwise equal), but
                # with dim and eps as tensors: each Python number costs a wrapped-scalar tensor. Decoding one row
                # is bound by such overheads: the 19 norms of a t5-efficient-small step cost 2.0-2.5 ms of its
                # 16-18 ms; this form saved 0.5-0.75 ms of it (training: no slower).
                mean_square = torch.sum(x * x, -1, keepdim=True).div_(self._cpu_dim).add_(self._cpu_eps)
                return torch.mul(x, mean_square.rsqrt_()).mul_(self.weight)
            return torch.rms_norm(x, x.shape[-1:], self.weight, eps=self.eps)  # one fused kernel on GPUs
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
            self.wi_0 = Linear(config.d_model, config.d_ff, bias=False)
            self.wi_1 = Linear(config.d_model, config.d_ff, bias=False)
        else:
            self.wi = Linear(config.d_model, config.d_ff, bias=False)
        self.wo = Linear(config.d_ff, config.d_model, bias=False)
        self.act = ACTIVATIONS[config.feed_forward]
        self.dropout = Dropout(config.dropout)

    def forward(self, x_BTD: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Returns (output, router statistics); a dense layer has no router, hence None."""
        if self.gated:
            h_BTF = self.act(self.wi_0(x_BTD)) * self.wi_1(x_BTD)
        else:
            h_BTF = self.act(self.wi(x_BTD))
        return self.wo(self.dropout(h_BTF)), None
