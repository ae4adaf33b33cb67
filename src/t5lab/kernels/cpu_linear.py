"""Bias-free linear layers on CPU: many rows through oneDNN where it is faster than the BLAS, one row (a batch-1
decoding step) split across cores; and the output matrix stored for batch-1 decoding.

`CpuLinear` is an `nn.Linear` (same parameters, same state-dict keys) that `t5lab.kernels.apply` puts in place of
the model's bias-free `nn.Linear`s. The FLOP formula of the oneDNN op is registered with torch's FlopCounterMode
by `count_onednn_flops`, which `apply` calls (never at import).
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import flop_counter


def one_row_splits(outputs: int) -> int:
    """How many blocks of rows a one-row product splits its weight into: one per thread, at most 8 (measured on
    2 cores only), and a divisor of `outputs` so that the blocks are equal views."""
    return math.gcd(outputs, min(torch.get_num_threads(), 8))


@functools.cache
def onednn_matmul_available() -> bool:
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


def count_onednn_flops() -> None:
    """Teach torch's FlopCounterMode (it counts aten.mm; t5lab's FLOP checks use it) the oneDNN op too. A
    FlopCounterMode copies the registry when it is created, so this runs before any is (in `apply`)."""
    if not hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        return
    op = torch.ops.mkldnn._linear_pointwise
    if op not in flop_counter.flop_registry:  # registering twice raises; a later torch may count it itself
        flop_counter.register_flop_formula(op)(
            lambda x_shape, w_shape, *args, out_shape=None, **kwargs: 2 * math.prod(x_shape) * w_shape[0])


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
    """x W^T with oneDNN; backward: dx = g W with oneDNN, dW = g^T x with the BLAS (see onednn_matmul_available).

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
    `onednn_matmul_available`), and one row (a batch-1 decoding step) split across cores.

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
        if (x.numel() == 0 or not onednn_matmul_available() or not torch.backends.mkldnn.enabled
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
    only the output layer uses it (in decoding, `t5lab.generate`).
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


class CpuLinear(nn.Linear):
    """`nn.Linear` (same parameters, same state-dict keys) whose bias-free products go through `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) if self.bias is not None else linear(x, self.weight)
