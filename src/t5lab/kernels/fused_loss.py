"""The output layer and the token cross-entropy in one step, for training.

`linear_cross_entropy(h, W, labels)` equals `F.cross_entropy(h @ W.T, labels, ignore_index=-100)` (mean over
the labelled tokens) with the same gradients, but does less work: it never writes the [N, V] log-probabilities
or reads them back in the backward pass. The gradients are computed in the forward pass, chunk by chunk of
rows: logits -> softmax in place -> minus the one-hot targets -> the two gradient matmuls; the backward pass
only scales them by the incoming gradient (the loss is a scalar that ends the graph in training).

Logits are computed as W h^T, [V, N]: CPU BLAS runs that product faster than h W^T (152 vs 198 ms at
912 x 256 x 32128 on 2 cores). On the output layer of t5-efficient-tiny at batch 8 x 114 targets, forward +
backward took 400-470 ms here vs 510-630 ms for F.linear + F.cross_entropy (2 CPU cores, interleaved runs).

On CPU the chunk's logits can live in a `LogitsBuffer` kept between steps (`FusedOutputLoss` keeps one):
a fresh 64 MiB block is above glibc's largest mmap threshold (32 MiB), so every step mapped it anew
and the kernel zeroed it page by page, ~29k page faults per step of t5-efficient-tiny at batch 8.
"""

from __future__ import annotations

import functools
import threading

import torch

# fp32 logits of one chunk of rows (512 rows of T5's vocabulary): bounds the memory for large batches. On 2
# CPU cores, chunks of 256 to 960 rows were equally fast within the noise (bigger chunks make the matmuls
# more efficient and the elementwise passes less cache-friendly).
_CHUNK_BYTES = 64 * 2**20


class LogitsBuffer:
    """Memory for one chunk of fp32 logits, reused by every `linear_cross_entropy` call given it (CPU only:
    CUDA's caching allocator already reuses its blocks). One block per thread, so that threads training one
    model at once never write into each other's logits."""

    def __init__(self) -> None:
        self._per_thread = threading.local()

    def __reduce__(self):
        return LogitsBuffer, ()  # scratch memory, not state: a copy or a pickle starts empty

    def take(self, rows: int, columns: int, device: torch.device) -> torch.Tensor | None:
        """A [rows, columns] fp32 tensor from this thread's block (grown if too small), or None off the CPU."""
        if device.type != "cpu":
            return None
        flat = getattr(self._per_thread, "flat", None)
        if flat is None or flat.numel() < rows * columns:
            with torch.inference_mode(False):  # usable outside inference mode too
                flat = self._per_thread.flat = torch.empty(rows * columns, dtype=torch.float32)
        return flat[: rows * columns].view(rows, columns)

    @property
    def nbytes(self) -> int:
        """Size of this thread's block (0: none held)."""
        flat = getattr(self._per_thread, "flat", None)
        return 0 if flat is None else flat.nbytes

    def release(self) -> None:
        """Drop every thread's block."""
        self._per_thread = threading.local()


def _loss_and_gradients(hidden_ND: torch.Tensor, weight_VD: torch.Tensor, labels_N: torch.Tensor,
                        buffer: LogitsBuffer | None, compute_dtype: torch.dtype, need_hidden: bool,
                        need_weight: bool) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """The mean loss and the gradients of it asked for (None: not asked for), chunk by chunk of rows."""
    with torch.autocast(hidden_ND.device.type, enabled=False):  # the casts are explicit below
        N, V = hidden_ND.shape[0], weight_VD.shape[0]
        # The matmuls run in compute_dtype (`product_dtype`: e.g. autocast's bf16); softmax and loss in fp32.
        lowp_weight_VD = weight_VD.to(compute_dtype)
        keep_N = labels_N != -100
        count = keep_N.sum().clamp(min=1)
        loss = torch.zeros((), dtype=torch.float32, device=hidden_ND.device)
        grad_hidden_ND = torch.empty_like(hidden_ND) if need_hidden else None
        grad_weight_VD = None
        rows = max(64, _CHUNK_BYTES // (4 * V) // 64 * 64)  # a multiple of 64 keeps the matmuls aligned
        for start in range(0, N, rows):
            h_nD, keep_n = hidden_ND[start : start + rows], keep_N[start : start + rows]
            h_nD = h_nD.to(compute_dtype)
            target_n = labels_N[start : start + rows].clamp(min=0)
            fp32 = lowp_weight_VD.dtype == h_nD.dtype == torch.float32
            out = buffer.take(V, h_nD.shape[0], weight_VD.device) if buffer and fp32 else None
            logits_Vn = (lowp_weight_VD @ h_nD.T).float() if out is None else torch.mm(lowp_weight_VD, h_nD.T, out=out)
            target_logit_n = logits_Vn.gather(0, target_n[None])[0]
            # Softmax in place, each pass over the [V, n] logits once: max, exp(x - max), sum, scale.
            max_n = logits_Vn.amax(dim=0)
            exp_Vn = logits_Vn.sub_(max_n).exp_()
            sum_n = exp_Vn.sum(dim=0)
            loss += ((max_n + sum_n.log() - target_logit_n) * keep_n).sum()
            # d(mean loss)/d(logits) = (softmax - onehot) / count on labelled columns, 0 on the others.
            grad_Vn = exp_Vn.mul_(torch.where(keep_n, 1.0 / (sum_n * count), 0.0))
            # Unlabelled columns add 0 (no boolean indexing: on a GPU it would wait for the device every chunk).
            columns = torch.arange(h_nD.shape[0], device=h_nD.device)
            grad_Vn.index_put_((target_n, columns), torch.where(keep_n, -1.0 / count.float(), 0.0), accumulate=True)
            grad_Vn = grad_Vn.to(h_nD.dtype)
            if grad_hidden_ND is not None:
                grad_hidden_ND[start : start + rows] = grad_Vn.T @ lowp_weight_VD
            if need_weight:  # accumulated in the weight's dtype
                if grad_weight_VD is None:
                    grad_weight_VD = (grad_Vn @ h_nD).to(weight_VD.dtype)
                elif grad_weight_VD.dtype == h_nD.dtype:
                    grad_weight_VD.addmm_(grad_Vn, h_nD)
                else:
                    grad_weight_VD += grad_Vn @ h_nD
        if need_weight and grad_weight_VD is None:  # no rows
            grad_weight_VD = torch.zeros_like(weight_VD)
        return loss / count, grad_hidden_ND, grad_weight_VD


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_ND: torch.Tensor, weight_VD: torch.Tensor, labels_N: torch.Tensor,
                buffer: LogitsBuffer | None, compute_dtype: torch.dtype) -> torch.Tensor:
        need_hidden, need_weight = ctx.needs_input_grad[:2]  # e.g. a frozen output layer needs no dW
        loss, *ctx.grads = _loss_and_gradients(hidden_ND, weight_VD, labels_N, buffer, compute_dtype, need_hidden,
                                               need_weight)
        return loss

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden_ND, grad_weight_VD = ctx.grads
        del ctx.grads  # differentiable once (see linear_cross_entropy); so the gradients can be scaled in place
        return (None if grad_hidden_ND is None else grad_hidden_ND.mul_(grad_loss),
                None if grad_weight_VD is None else grad_weight_VD.mul_(grad_loss), None, None, None)


@functools.cache
def register_compilable_op() -> torch._library.custom_ops.CustomOpDef:
    """Register (once; never on import) `_loss_and_gradients` as the custom op t5lab::linear_cross_entropy, which
    torch.compile keeps whole (a fake implementation gives it the outputs' shapes) instead of tracing into the
    chunk loop; `linear_cross_entropy` uses it under compile once registered (`FusedOutputLoss` registers it).
    Without a logits buffer: memory the op wrote between calls would be state a compiled graph cannot see."""

    @torch.library.custom_op("t5lab::linear_cross_entropy", mutates_args=())
    def op(hidden_ND: torch.Tensor, weight_VD: torch.Tensor, labels_N: torch.Tensor, compute_dtype: torch.dtype,
           need_hidden: bool, need_weight: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        loss, grad_hidden_ND, grad_weight_VD = _loss_and_gradients(hidden_ND, weight_VD, labels_N, None,
                                                                   compute_dtype, need_hidden, need_weight)
        # An op returns tensors: an empty one stands for a gradient not asked for.
        return (loss, hidden_ND.new_empty(0) if grad_hidden_ND is None else grad_hidden_ND,
                weight_VD.new_empty(0) if grad_weight_VD is None else grad_weight_VD)

    @op.register_fake
    def _(hidden_ND, weight_VD, labels_N, compute_dtype, need_hidden, need_weight):
        return (hidden_ND.new_empty((), dtype=torch.float32),
                torch.empty_like(hidden_ND) if need_hidden else hidden_ND.new_empty(0),
                torch.empty_like(weight_VD) if need_weight else weight_VD.new_empty(0))

    def setup_context(ctx, inputs, output) -> None:
        ctx.need = inputs[4:6]
        ctx.save_for_backward(*output[1:])

    def backward(ctx, grad_loss, _grad_of_grad_hidden, _grad_of_grad_weight):
        grad_hidden_ND, grad_weight_VD = ctx.saved_tensors
        need_hidden, need_weight = ctx.need
        return (grad_hidden_ND * grad_loss if need_hidden else None,
                grad_weight_VD * grad_loss if need_weight else None, None, None, None, None)

    op.register_autograd(backward, setup_context=setup_context)
    _compilable_ops.append(op)
    return op


_compilable_ops: list[torch._library.custom_ops.CustomOpDef] = []  # the op once registered


def product_dtype(weight_VD: torch.Tensor) -> torch.dtype:
    """The dtype the output layer's products run in: autocast's where autocast is on, else the weight's."""
    device = weight_VD.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else weight_VD.dtype


def linear_cross_entropy(hidden_ND: torch.Tensor, weight_VD: torch.Tensor, labels_N: torch.Tensor,
                         buffer: LogitsBuffer | None = None) -> torch.Tensor:
    """Mean cross-entropy of the logits `hidden_ND @ weight_VD.T` against `labels_N` (-100: ignored).

    For a loss that ends the graph (training): the gradients are made in the forward pass, so the result
    must be differentiated at most once. 0 when no token is labelled, like a sum over nothing. `buffer`:
    where the logits of a chunk go on CPU, kept by the caller between steps (see the module's docstring).
    Under autocast the two matmuls run in autocast's dtype, as F.linear's would, and the softmax in fp32, as
    F.cross_entropy on `logits.float()`; the gradients come back in the inputs' own dtypes.
    """
    if torch.compiler.is_compiling() and _compilable_ops:
        loss, _, _ = _compilable_ops[0](hidden_ND, weight_VD, labels_N, product_dtype(weight_VD),
                                        hidden_ND.requires_grad, weight_VD.requires_grad)
        return loss
    return _LinearCrossEntropy.apply(hidden_ND, weight_VD, labels_N, buffer, product_dtype(weight_VD))


class FusedOutputLoss:
    """The model's `output_loss` seam (see `t5lab.model.t5.T5`): `linear_cross_entropy` with a logits buffer kept
    between training steps; None (the model's plain logits + F.cross_entropy) where it does not apply.

    Under torch.compile through the custom op of `register_compilable_op` (the compiler would otherwise materialise the
    [N, V] logits and their gradient). Not in fp16: the fused loss makes the logits' gradients in the forward pass, before a GradScaler scales them up,
    and fp16 would flush many of them (of order 1 / (tokens x vocab)) to zero. Not for an output layer that
    computes its own product (weight None, e.g. quantised).
    """

    def __init__(self) -> None:
        self.buffer = LogitsBuffer()
        register_compilable_op()

    def __call__(self, hidden_ND: torch.Tensor, weight_VD: torch.Tensor | None,
                 labels_N: torch.Tensor) -> torch.Tensor | None:
        if weight_VD is None or product_dtype(weight_VD) == torch.float16:
            return None
        return linear_cross_entropy(hidden_ND, weight_VD, labels_N, self.buffer)
