"""The fused output layer + cross-entropy equals F.linear + F.cross_entropy, value and gradients."""

from __future__ import annotations

import pickle
import threading

import pytest
import torch
import torch.nn.functional as F

import t5lab.kernels.fused_loss as loss_module
from t5lab.kernels.fused_loss import LogitsBuffer, linear_cross_entropy


@pytest.mark.parametrize("buffer", [None, LogitsBuffer()])
@pytest.mark.parametrize("chunk_rows", [64, 1000])  # several chunks (with a short last one), or one
def test_equals_linear_then_cross_entropy(chunk_rows, buffer, monkeypatch):
    V = 300
    monkeypatch.setattr(loss_module, "_CHUNK_BYTES", chunk_rows * 4 * V)
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(150, 16, generator=g, requires_grad=True)
    weight = torch.randn(V, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, V, (150,), generator=g)
    labels[::5] = -100
    results = []
    for fn in (lambda: linear_cross_entropy(hidden, weight, labels, buffer),
               lambda: F.cross_entropy(F.linear(hidden, weight), labels, ignore_index=-100)):
        hidden.grad = weight.grad = None
        loss = fn()
        (loss * 3.0).backward()  # the incoming gradient scales the stored ones
        results.append((loss.detach(), hidden.grad, weight.grad))
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference, atol=1e-6, rtol=1e-5)


def test_under_autocast_the_matmuls_run_in_bf16_like_f_linear():
    """Autocast's dtype for the two products, fp32 softmax: F.linear + F.cross_entropy(logits.float()) under
    autocast, within bf16 rounding; gradients come back in the fp32 inputs' dtype."""
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(150, 16, generator=g, requires_grad=True)
    weight = torch.randn(300, 16, generator=g, requires_grad=True)
    labels = torch.randint(0, 300, (150,), generator=g)
    results = []
    for fn in (lambda: linear_cross_entropy(hidden, weight, labels, LogitsBuffer()),
               lambda: F.cross_entropy(F.linear(hidden, weight).float(), labels)):
        hidden.grad = weight.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fn()
        loss.backward()
        results.append((loss.detach(), hidden.grad, weight.grad))
    assert [t.dtype for t in results[0]] == [torch.float32] * 3
    fp32_loss = F.cross_entropy(F.linear(hidden, weight), labels)
    assert (results[0][0] - fp32_loss).abs() > 1e-6  # bf16 products did run
    for ours, reference in zip(*results, strict=True):
        torch.testing.assert_close(ours, reference, atol=1e-3, rtol=1e-2)


def test_frozen_weight_and_unlabelled_batches():
    hidden = torch.randn(10, 8, requires_grad=True)
    weight = torch.randn(20, 8)  # no gradient wanted
    labels = torch.randint(0, 20, (10,))
    linear_cross_entropy(hidden, weight, labels).backward()
    expected = torch.autograd.grad(F.cross_entropy(F.linear(hidden, weight), labels), hidden)[0]
    torch.testing.assert_close(hidden.grad, expected)
    hidden.grad = None
    nothing = linear_cross_entropy(hidden, weight, torch.full((10,), -100))
    nothing.backward()
    assert nothing.item() == 0.0 and not hidden.grad.any()


def test_logits_buffer_is_reused_across_calls_and_grows():
    buffer = LogitsBuffer()
    first = buffer.take(300, 64, torch.device("cpu"))
    assert first.shape == (300, 64) and first.dtype == torch.float32
    assert buffer.take(300, 22, torch.device("cpu")).data_ptr() == first.data_ptr()  # a short last chunk: same memory
    assert buffer.take(300, 128, torch.device("cpu")).shape == (300, 128)  # grown
    assert buffer.take(300, 64, torch.device("meta")) is None  # CPU only
    with torch.inference_mode():
        assert not buffer.take(300, 256, torch.device("cpu")).is_inference()
    assert buffer.nbytes == 300 * 256 * 4
    buffer.release()
    assert buffer.nbytes == 0


def test_logits_buffer_gives_each_thread_its_own_block():
    buffer = LogitsBuffer()
    mine = buffer.take(100, 8, torch.device("cpu"))
    theirs = []
    thread = threading.Thread(target=lambda: theirs.append(buffer.take(100, 8, torch.device("cpu"))))
    thread.start()
    thread.join()
    assert theirs[0].data_ptr() != mine.data_ptr()
    assert buffer.take(100, 8, torch.device("cpu")).data_ptr() == mine.data_ptr()
    assert pickle.loads(pickle.dumps(buffer)).nbytes == 0  # scratch memory: copies start empty


def test_half_precision_weights_do_not_use_the_fp32_buffer():
    buffer = LogitsBuffer()
    hidden = torch.randn(10, 8, dtype=torch.bfloat16, requires_grad=True)
    weight = torch.randn(20, 8, dtype=torch.bfloat16, requires_grad=True)
    labels = torch.randint(0, 20, (10,))
    linear_cross_entropy(hidden, weight, labels, buffer).backward()
    assert buffer.nbytes == 0 and hidden.grad.dtype == torch.bfloat16
