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


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden_ND: torch.Tensor, weight_VD: torch.Tensor, labels_N: torch.Tensor,
                buffer: LogitsBuffer | None, compute_dtype: torch.dtype) -> torch.Tensor:
        with torch.autocast(hidden_ND.device.type, enabled=False):  # the casts are explicit below
            return _LinearCrossEntropy._loss_and_gradients(ctx, hidden_ND, weight_VD, labels_N, buffer, compute_dtype)

    @staticmethod
    def _loss_and_gradients(ctx, hidden_ND, weight_VD, labels_N, buffer, compute_dtype) -> torch.Tensor:
        N, V = hidden_ND.shape[0], weight_VD.shape[0]
        # The matmuls run in compute_dtype (`product_dtype`: e.g. autocast's bf16); softmax and loss in fp32.
        lowp_weight_VD = weight_VD.to(compute_dtype)
        keep_N = labels_N != -100
        count = keep_N.sum().clamp(min=1)
        loss = torch.zeros((), dtype=torch.float32, device=hidden_ND.device)
        need_hidden, need_weight = ctx.needs_input_grad[:2]  # e.g. a frozen output layer needs no dW
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
        ctx.grads = (grad_hidden_ND, grad_weight_VD)
        return loss / count

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        grad_hidden_ND, grad_weight_VD = ctx.grads
        del ctx.grads  # differentiable once (see linear_cross_entropy); so the gradients can be scaled in place
        return (None if grad_hidden_ND is None else grad_hidden_ND.mul_(grad_loss),
                None if grad_weight_VD is None else grad_weight_VD.mul_(grad_loss), None, None, None)


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
    return _LinearCrossEntropy.apply(hidden_ND, weight_VD, labels_N, buffer, product_dtype(weight_VD))


class FusedOutputLoss:
    """The model's `output_loss` seam (see `t5lab.model.t5.T5`): `linear_cross_entropy` with a logits buffer kept
    between training steps; None (the model's plain logits + F.cross_entropy) where it does not apply.

    Eager only: under torch.compile the plain path stays one graph, which the compiler fuses itself. Not in
    fp16: the fused loss makes the logits' gradients in the forward pass, before a GradScaler scales them up,
    and fp16 would flush many of them (of order 1 / (tokens x vocab)) to zero. Not for an output layer that
    computes its own product (weight None, e.g. quantised).
    """

    def __init__(self) -> None:
        self.buffer = LogitsBuffer()

    def __call__(self, hidden_ND: torch.Tensor, weight_VD: torch.Tensor | None,
                 labels_N: torch.Tensor) -> torch.Tensor | None:
        if weight_VD is None or product_dtype(weight_VD) == torch.float16 or torch.compiler.is_compiling():
            return None
        return linear_cross_entropy(hidden_ND, weight_VD, labels_N, self.buffer)
