"""Building blocks: the relative position bias."""

from __future__ import annotations

import pytest
import torch

from t5lab.model.layers import RelativePositionBias, relative_position_bias, relative_position_bucket


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
    got = relative_position_bias(module.embedding.weight, queries, keys, bidirectional=bidirectional, num_buckets=8,
                                 max_distance=6, query_offset=offset)
    assert torch.equal(got, expected)
    upstream = torch.randn_like(got)
    (weight_grad,) = torch.autograd.grad((expected * upstream).sum(), module.embedding.weight)
    got.backward(upstream)
    torch.testing.assert_close(module.embedding.weight.grad, weight_grad)
