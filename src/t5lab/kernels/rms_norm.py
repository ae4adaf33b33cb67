"""T5's RMS norm in fewer kernels: torch.rms_norm on GPUs, fewer per-call overheads on CPU (decoding is bound
by them)."""

from __future__ import annotations

import torch

from t5lab.model.layers import RMSNorm


class FastRMSNorm(RMSNorm):
    """`RMSNorm` (same parameter); fp32 on CPU runs the ops torch.rms_norm runs there (bitwise equal) with dim
    and eps as tensors, elsewhere fp32 runs torch.rms_norm (one fused kernel on GPUs), other dtypes the plain path.

    Why tensors: each Python number costs a wrapped-scalar tensor. The 19 norms of a t5-efficient-small
    decoding step cost 2.0-2.5 ms of its 16-18 ms; this form saved 0.5-0.75 ms of it (training: no slower).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__(dim, eps)
        # Not state: fixed by the constructor, never moved. Normal tensors even when built under
        # inference_mode: autograd saves the divisor for backward.
        with torch.inference_mode(False):
            self._cpu_dim, self._cpu_eps = torch.tensor(float(dim), device="cpu"), torch.tensor(eps, device="cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == self.weight.dtype == torch.float32:
            if x.device.type == "cpu":
                mean_square = torch.sum(x * x, -1, keepdim=True).div_(self._cpu_dim).add_(self._cpu_eps)
                return torch.mul(x, mean_square.rsqrt_()).mul_(self.weight)
            return torch.rms_norm(x, x.shape[-1:], self.weight, eps=self.eps)
        return super().forward(x)
