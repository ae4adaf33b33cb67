"""The CPU fast paths against the plain operations: dropout masks, split one-row and oneDNN products, RMS norm."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from t5lab.kernels import cpu_linear
from t5lab.kernels.cpu_dropout import Dropout, dropout
from t5lab.kernels.cpu_linear import (
    CpuLinear,
    count_onednn_flops,
    linear,
    linear_in_major,
    row_blocks_in_major,
)
from t5lab.kernels.rms_norm import FastRMSNorm
from t5lab.model.layers import RMSNorm


@pytest.mark.parametrize("p", [0.1, 0.4, 0.9])
def test_dropout_zeroes_a_fraction_p_and_keeps_the_mean(p):
    x = torch.ones(400_001)  # odd: the last random draw serves one element
    y = dropout(x, p)
    kept = y != 0
    assert abs(1 - kept.float().mean().item() - p) < 4e-3  # about 5 standard deviations
    scale = y[kept].unique()
    assert scale.numel() == 1 and scale.item() == pytest.approx(1 / (1 - p), rel=1e-4)
    assert y.mean().item() == pytest.approx(1.0, abs=0.02)


def test_dropout_gradient_is_the_mask_times_the_scale():
    x = torch.randn(3, 50, 7, requires_grad=True)
    y = dropout(x, 0.3)
    y.sum().backward()
    torch.testing.assert_close(x.grad, y.detach() / x.detach())
    assert x.grad.unique().tolist() == [0.0, pytest.approx(1 / 0.7, rel=1e-4)]


def test_dropout_is_seeded_by_torch_and_off_in_eval():
    x = torch.randn(1000)
    torch.manual_seed(3)
    a = dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(a, dropout(x, 0.5))
    assert not torch.equal(a, dropout(x, 0.5))
    module = Dropout(0.5).eval()
    assert module(x) is x and dropout(x, 0.0) is x and not dropout(x, 1.0).any()
    assert dropout(x.to(torch.bfloat16), 0.5).dtype == torch.bfloat16


@pytest.fixture
def threads():
    """Set torch's thread count for one test (`linear` splits by it), restored afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.mark.parametrize("num_threads", [1, 2, 3, 4])
@pytest.mark.parametrize("outputs", [6, 7, 64])
def test_linear_equals_f_linear_for_every_split(threads, num_threads, outputs):
    threads(num_threads)
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(outputs, 40, generator=g)
    for shape in [(40,), (1, 40), (1, 1, 40), (3, 40), (2, 1, 40)]:
        x = torch.randn(*shape, generator=g)
        y = linear(x, weight)
        assert y.shape == (*shape[:-1], outputs)
        torch.testing.assert_close(y, F.linear(x, weight), rtol=1e-6, atol=1e-5)
    x = torch.randn(1, 1, 40, generator=g)
    torch.testing.assert_close(linear(x, weight.T.contiguous().T), F.linear(x, weight))  # not contiguous: as is


def test_one_row_on_several_threads_reads_the_weight_in_blocks(threads, monkeypatch):
    """The fast path must not silently fall back: one row, 2 threads, an even output count -> one bmm."""
    threads(2)
    calls = []
    bmm = torch.bmm
    monkeypatch.setattr(torch, "bmm", lambda a, b: calls.append((a.shape, b.shape)) or bmm(a, b))
    layer = CpuLinear(40, 64, bias=False)
    x = torch.randn(1, 1, 40, requires_grad=True)
    layer(x).sum().backward()
    assert calls == [((2, 32, 40), (2, 40, 1))]
    torch.testing.assert_close(x.grad, layer.weight.sum(0).view(1, 1, 40))
    layer(torch.randn(3, 40))  # more rows: F.linear
    layer.bfloat16()(x.detach().bfloat16())  # measured for fp32 only: other dtypes keep F.linear
    assert len(calls) == 1
    assert set(CpuLinear(4, 6).state_dict()) == {"weight", "bias"}  # nn.Linear's keys (checkpoints, FSDP, PEFT)


@pytest.mark.parametrize("num_threads", [1, 2, 3, 4])
@pytest.mark.parametrize("outputs", [6, 7, 64])
def test_in_major_blocks_give_f_linear_for_one_row(threads, num_threads, outputs):
    threads(num_threads)
    g = torch.Generator().manual_seed(1)
    weight = torch.randn(outputs, 40, generator=g)
    blocks = row_blocks_in_major(weight)
    if blocks is None:  # no split (one thread, or an output count the threads do not divide): nothing to gain
        assert linear(torch.zeros(40), weight).shape == (outputs,) and math.gcd(outputs, num_threads) == 1
        return
    assert blocks.shape == (math.gcd(outputs, num_threads), 40, outputs // blocks.shape[0])
    for shape in [(40,), (1, 40), (1, 1, 40)]:
        x = torch.randn(*shape, generator=g)
        torch.testing.assert_close(linear_in_major(x, blocks), F.linear(x, weight), rtol=1e-6, atol=1e-5)
    with torch.inference_mode():
        built_in_inference = row_blocks_in_major(weight)
    assert not built_in_inference.is_inference()  # usable outside inference mode too


onednn = pytest.mark.skipif(not hasattr(torch.ops.mkldnn, "_linear_pointwise") or not torch.backends.mkldnn.is_available(),
                            reason="this torch build has no oneDNN linear op")


@onednn
@pytest.mark.parametrize("needs", [(True, True), (True, False), (False, True)])
def test_onednn_linear_equals_f_linear_with_gradients(needs, monkeypatch):
    """Many-row products go through oneDNN where the CPU has AVX-512; forced on here, so any CPU checks the path."""
    monkeypatch.setattr(cpu_linear, "onednn_matmul_available", lambda: True)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3, 5, 40, generator=g).requires_grad_(needs[0])
    weight = torch.randn(24, 40, generator=g).requires_grad_(needs[1])
    y = linear(x, weight)
    assert y.grad_fn is not None and type(y.grad_fn).__name__ == "_OneDNNLinearBackward"
    grad_y = torch.randn(3, 5, 24, generator=g)
    grads = torch.autograd.grad(y, [t for t in (x, weight) if t.requires_grad], grad_y)
    y_ref = F.linear(x, weight)
    grads_ref = torch.autograd.grad(y_ref, [t for t in (x, weight) if t.requires_grad], grad_y)
    torch.testing.assert_close(y, y_ref)
    for ours, reference in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(ours, reference)
    with torch.no_grad():
        torch.testing.assert_close(linear(x, weight), y_ref)  # no graph: the op itself
        assert linear(torch.empty(0, 40), weight).shape == (0, 24)  # no rows: F.linear
        count_onednn_flops()  # what `apply` does; never at import
        with FlopCounterMode(display=False) as counter:  # FLOP counts (t5lab bench, MFU) still see the product
            linear(x, weight)
        assert counter.get_total_flops() == 2 * 15 * 40 * 24


@onednn
def test_onednn_linear_steps_aside_for_autocast_and_when_disabled(monkeypatch):
    monkeypatch.setattr(cpu_linear, "onednn_matmul_available", lambda: True)
    calls = []
    op = cpu_linear._onednn_linear
    monkeypatch.setattr(cpu_linear, "_onednn_linear", lambda x, w: calls.append(x.shape) or op(x, w))
    x, weight = torch.randn(4, 40), torch.randn(24, 40)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x, weight).dtype == torch.bfloat16  # F.linear under autocast, as nn.Linear
    linear(x, weight)
    assert calls == [(4, 40)]
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)  # the user's switch for oneDNN
    linear(x, weight)
    assert calls == [(4, 40)]


@onednn
def test_onednn_linear_has_second_derivatives(monkeypatch):
    """A graph-building backward (gradient penalty) differentiates through dx: F.linear computes it there."""
    monkeypatch.setattr(cpu_linear, "onednn_matmul_available", lambda: True)
    g = torch.Generator().manual_seed(3)
    x0, weight0 = torch.randn(6, 40, generator=g), torch.randn(24, 40, generator=g)
    grads = []
    for product in (linear, F.linear):
        x, weight = x0.clone().requires_grad_(), weight0.clone().requires_grad_()
        (grad_x,) = torch.autograd.grad(product(x, weight).pow(2).sum(), x, create_graph=True)
        grad_x.pow(2).sum().backward()
        grads.append((x.grad, weight.grad))
    assert grads[0][0].abs().sum() > 0
    for ours, reference in zip(*grads, strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-2)  # |grads| ~ 1e5: oneDNN vs BLAS rounding


@onednn
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")  # still used, and must still work
def test_onednn_linear_steps_aside_for_torch_func_forward_ad_and_jit_trace(monkeypatch):
    monkeypatch.setattr(cpu_linear, "onednn_matmul_available", lambda: True)
    g = torch.Generator().manual_seed(4)
    x, weight, tangent = torch.randn(6, 40, generator=g), torch.randn(24, 40, generator=g), torch.randn(6, 40)
    grad = torch.func.grad(lambda w: linear(x, w).square().sum())(weight)
    torch.testing.assert_close(grad, torch.func.grad(lambda w: F.linear(x, w).square().sum())(weight))
    _, ours = torch.func.jvp(lambda x: linear(x, weight), (x,), (tangent,))
    torch.testing.assert_close(ours, F.linear(tangent, weight))
    with torch.autograd.forward_ad.dual_level():
        y = linear(torch.autograd.forward_ad.make_dual(x, tangent), weight)
        torch.testing.assert_close(torch.autograd.forward_ad.unpack_dual(y).tangent, F.linear(tangent, weight))
    traced = torch.jit.trace(lambda x: linear(x, weight), (x,))
    torch.testing.assert_close(traced(x), F.linear(x, weight))


@onednn
def test_onednn_linear_needs_torchs_transform_flags(monkeypatch):
    """Without torch's internal flags it cannot tell a torch.func transform from plain autograd: F.linear."""
    monkeypatch.setattr(cpu_linear, "onednn_matmul_available", lambda: True)
    x, weight = torch.randn(6, 40), torch.randn(24, 40, requires_grad=True)
    assert type(linear(x, weight).grad_fn).__name__ == "_OneDNNLinearBackward"
    monkeypatch.delattr(torch._C, "_are_functorch_transforms_active")
    assert type(linear(x, weight).grad_fn).__name__ != "_OneDNNLinearBackward"


def test_linear_traces_with_fx_like_nn_linear():
    """FX does not treat CpuLinear as a leaf (nn.Linear is one); its fast path must not branch on a traced
    value."""
    layer = CpuLinear(40, 64, bias=False)
    x = torch.randn(1, 1, 40)
    torch.testing.assert_close(torch.fx.symbolic_trace(layer)(x), layer(x))


@pytest.mark.parametrize("dim", [24, 37, 512])
def test_rms_norm_equals_torch_rms_norm(dim):
    """The CPU path (dim and eps as tensors) is torch.rms_norm's arithmetic (bitwise equal on torch 2.13), with the
    same gradients, also when the module was built under inference_mode; the plain RMSNorm agrees."""
    with torch.inference_mode():
        norm = FastRMSNorm(dim, eps=1e-5)
    norm.weight = torch.nn.Parameter(torch.randn(dim))
    x = torch.randn(3, 5, dim, requires_grad=True)
    y, reference = norm(x), torch.rms_norm(x, (dim,), norm.weight, eps=1e-5)
    torch.testing.assert_close(y, reference, rtol=1e-6, atol=1e-6)
    plain = RMSNorm(dim, eps=1e-5)
    plain.weight = norm.weight
    torch.testing.assert_close(plain(x), reference, rtol=1e-6, atol=1e-6)
    grad = torch.randn_like(y)
    for ours, theirs in zip(torch.autograd.grad(y, (x, norm.weight), grad),
                            torch.autograd.grad(reference, (x, norm.weight), grad), strict=True):
        torch.testing.assert_close(ours, theirs)
    half = norm.to(torch.bfloat16)(x.detach().bfloat16())  # half weights: normalised in fp32, returned in bf16
    assert half.dtype == torch.bfloat16
    torch.testing.assert_close(half.float(), reference.detach(), rtol=0.02, atol=0.05)
