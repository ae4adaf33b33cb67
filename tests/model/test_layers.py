"""Building blocks: the CPU dropout's statistics, scaling, gradient and reproducibility."""

from __future__ import annotations

import pytest
import torch

from t5lab.model.layers import Dropout, dropout


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
