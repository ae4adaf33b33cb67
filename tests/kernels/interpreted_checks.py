"""Checks that run inside the interpreter's worker process (see conftest.py): the kernel vs the plain torch
computation, with Triton interpreting the kernels on CPU."""

from __future__ import annotations

import os
from types import SimpleNamespace

import torch

from t5lab.model.layers import relative_position_bucket

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


def _kernels():
    """The kernel module, in a process where the interpreter is on."""
    assert os.environ.get("TRITON_INTERPRET") == "1", "run this through the `interpreted` fixture"
    _allow_index_of_one_element_arrays()
    torch.set_num_threads(1)  # the interpreter runs many tiny ops, which threads only slow down
    from t5lab.kernels import triton_attention

    return triton_attention


def _allow_index_of_one_element_arrays() -> None:
    """Triton 3.6's interpreter holds scalar arguments as 1-element arrays and turns them into loop bounds with
    int(array), which NumPy 2.4 refuses for arrays that are not 0-dimensional; take the element instead.
    Only in this worker process."""
    import numpy as np
    import triton.runtime.interpreter as interpreter

    try:
        int(np.array([1]))
        return
    except TypeError:
        pass
    if getattr(interpreter, "_t5lab_patched", False):
        return
    patch_tensor = interpreter._patch_lang_tensor

    def patched(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.item()))

    interpreter._patch_lang_tensor = patched
    interpreter._t5lab_patched = True


def assert_buckets_match(bidirectional: bool, num_buckets: int, max_distance: int) -> None:
    rel = torch.arange(-4096, 4097)
    got = _kernels().bucket_ids(rel, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance)
    want = relative_position_bucket(rel, bidirectional, num_buckets, max_distance)
    mismatches = (got != want).nonzero().flatten()
    assert len(mismatches) == 0, f"buckets differ at distances {rel[mismatches[:10]].tolist()}"


def _inputs(B, H, G, T, S, K, num_buckets, dtype, seed=0):
    generator = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, K, generator=generator).to(dtype).requires_grad_()
    k = torch.randn(B, G, S, K, generator=generator).to(dtype).requires_grad_()
    v = torch.randn(B, G, S, K, generator=generator).to(dtype).requires_grad_()
    table = (2 * torch.randn(num_buckets, H, generator=generator)).requires_grad_()
    grad_out = torch.randn(B, H, T, K, generator=generator).to(dtype)
    return (q, k, v, table), grad_out


def assert_matches_reference(B, H, G, T, S, K, dtype=torch.float32, key_padding_mask_BS=None, **options) -> None:
    """Output, dq, dk, dv and the table's gradient of the kernel vs `reference_attention` in fp32."""
    kernels = _kernels()
    options = {"bidirectional": True, "num_buckets": 8, "max_distance": 20} | options
    inputs, grad_out = _inputs(B, H, G, T, S, K, options["num_buckets"], dtype)
    out = kernels.t5_attention(*inputs, key_padding_mask_BS=key_padding_mask_BS, **options)
    grads = torch.autograd.grad(out, inputs, grad_out)
    # The reference in fp32 from the same (rounded) inputs: the kernel's error, not the reference's.
    inputs32 = [x.detach().float().requires_grad_() for x in inputs]
    expected = kernels.reference_attention(*inputs32, key_padding_mask_BS=key_padding_mask_BS, **options)
    expected_grads = torch.autograd.grad(expected, inputs32, grad_out.float())
    assert out.dtype == dtype and out.shape == (B, H, T, K)
    assert [g.dtype for g in grads] == [dtype, dtype, dtype, torch.float32]
    tolerance = TOLERANCE[dtype]
    names = ("out", "dq", "dk", "dv", "dtable")
    for name, got, want in zip(names, (out, *grads), (expected, *expected_grads), strict=True):
        scale = want.abs().max().item()  # relative to the tensor's size: table gradients sum thousands of terms
        torch.testing.assert_close(
            got.float(), want, rtol=tolerance, atol=tolerance * scale, msg=lambda message, n=name: f"{n}: {message}"
        )


def unsupported_reason(change: dict) -> tuple[str | None, bool]:
    """(unsupported_reason, supports) for a bf16 call [1, 4, 8, 64] with `change` applied, asked the way
    `t5lab.kernels` asks: (q, k, an AttentionBias, dropout_p)."""
    kernels = _kernels()
    K, G, dtype = change.get("K", 64), change.get("G", 4), change.get("dtype", torch.bfloat16)
    q = torch.zeros(1, 4, 8, K, dtype=dtype)
    k = torch.zeros(1, G, 8, K, dtype=dtype)
    bias = SimpleNamespace(table_RH=change.get("table_RH", torch.zeros(32, 4)), num_buckets=32, max_distance=128)
    dropout_p = change.get("dropout_p", 0.0)
    return kernels.unsupported_reason(q, k, bias, dropout_p), kernels.supports(q, k, bias, dropout_p)
