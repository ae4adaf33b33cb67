"""Building blocks: the CPU dropout's statistics, scaling, gradient and reproducibility."""

from __future__ import annotations

import pytest
import torch

from t5lab.model.layers import Dropout, RelativePositionBias, dropout, relative_position_bucket


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


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize(("queries", "keys", "offset"), [(7, 7, 0), (1, 9, 8), (3, 12, 4), (5, 2, 0)])
def test_relative_bias_is_the_table_entry_of_each_distance(tiny_config, bidirectional, queries, keys, offset):
    """The sliding-window construction equals looking up bucket(key - query) for every pair, gradient included."""
    module = RelativePositionBias(tiny_config.replace(relative_attention_num_buckets=8,
                                                      relative_attention_max_distance=6), bidirectional)
    torch.nn.init.normal_(module.embedding.weight, generator=torch.Generator().manual_seed(0))
    distance_TS = torch.arange(keys)[None, :] - torch.arange(offset, offset + queries)[:, None]
    buckets_TS = relative_position_bucket(distance_TS, bidirectional, 8, 6)
    expected = module.embedding.weight[buckets_TS].permute(2, 0, 1)[None]
    got = module(queries, keys, query_offset=offset)
    assert torch.equal(got, expected)
    upstream = torch.randn_like(got)
    (weight_grad,) = torch.autograd.grad((expected * upstream).sum(), module.embedding.weight)
    got.backward(upstream)
    torch.testing.assert_close(module.embedding.weight.grad, weight_grad)
