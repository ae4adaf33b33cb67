"""The compiled kernel on CUDA against the plain torch computation (`pytest -m gpu`); skipped without a GPU.

In its own module: the CPU tests run the kernel under the interpreter in a worker process, these in the
pytest process with Triton compiling for the device.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}


@pytest.fixture(scope="module")
def kernels():
    pytest.importorskip("triton")
    from t5lab.kernels import triton_attention

    return triton_attention


def _check(kernels, B, H, G, T, S, K, dtype, key_padding_mask_BS=None, **options):
    options = {"bidirectional": True, "num_buckets": 32, "max_distance": 128} | options
    generator = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (
        torch.randn(B, heads, length, K, device="cuda", generator=generator).to(dtype).requires_grad_()
        for heads, length in ((H, T), (G, S), (G, S))
    )
    table = torch.randn(options["num_buckets"], H, device="cuda", generator=generator).requires_grad_()
    grad_out = torch.randn(B, H, T, K, device="cuda", generator=generator).to(dtype)
    assert kernels.supports(q, k, dropout_p=0.0, table_RH=table)
    out = kernels.t5_attention(q, k, v, table, key_padding_mask_BS=key_padding_mask_BS, **options)
    grads = torch.autograd.grad(out, (q, k, v, table), grad_out)
    inputs32 = [x.detach().float().requires_grad_() for x in (q, k, v, table)]
    want = kernels.reference_attention(*inputs32, key_padding_mask_BS=key_padding_mask_BS, **options)
    want_grads = torch.autograd.grad(want, inputs32, grad_out.float())
    tolerance = TOLERANCE[dtype]
    for name, got, expected in zip(("out", "dq", "dk", "dv", "dtable"), (out, *grads), (want, *want_grads), strict=True):
        scale = expected.abs().max().item()
        torch.testing.assert_close(
            got.float(), expected, rtol=tolerance, atol=tolerance * scale, msg=lambda m, n=name: f"{n}: {m}"
        )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_encoder_layer_with_padding(kernels, dtype):
    mask = torch.ones(4, 512, device="cuda")
    mask[1, 300:] = 0
    mask[3] = 0
    _check(kernels, B=4, H=12, G=12, T=512, S=512, K=64, dtype=dtype, key_padding_mask_BS=mask)


@pytest.mark.parametrize(("K", "G"), [(32, 1), (96, 4), (128, 2)])
def test_decoder_head_dims_and_groups(kernels, K, G):
    _check(kernels, B=2, H=8, G=G, T=114, S=114, K=K, dtype=torch.bfloat16, bidirectional=False, causal=True)


def test_cached_decoding_step(kernels):
    _check(kernels, B=32, H=12, G=12, T=1, S=77, K=64, dtype=torch.bfloat16, bidirectional=False, causal=True,
           query_offset=76)


def test_memory_is_linear_in_length(kernels):
    """8k tokens: a dense fp32 [B, H, T, S] score tensor alone would take 3 GiB; the kernel's whole
    forward + backward stays far below it."""
    B, H, T, K = 1, 12, 8192, 64
    q, k, v = (torch.randn(B, H, T, K, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    table = torch.randn(32, H, device="cuda", requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = kernels.t5_attention(q, k, v, table, bidirectional=True, num_buckets=32, max_distance=128)
    out.backward(torch.ones_like(out))
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before < B * H * T * T * 4 / 20
