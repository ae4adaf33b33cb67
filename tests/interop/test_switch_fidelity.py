"""Named Switch shapes saved by t5lab compute the same in transformers (fixed expert capacity, issue 19)."""

from __future__ import annotations

import pytest
import torch

from t5lab import ModelConfig, from_name
from t5lab.interop.hf import save_pretrained
from t5lab.model import build_model

transformers = pytest.importorskip("transformers")


def _small(name: str) -> ModelConfig:
    # The named shape's routing settings (fixed capacity 64) on small dims, so that the test stays fast.
    return from_name(name).replace(
        vocab_size=96, d_model=24, d_ff=37, d_kv=10, num_heads=3, num_encoder_layers=2, num_decoder_layers=3,
        dropout=0.0, expert_dropout=0.0)


@pytest.mark.parametrize("name", ["t5-efficient-tiny-moe8", "switch-base-8"])
@pytest.mark.parametrize("batch, length", [(1, 16), (4, 128)])
def test_transformers_computes_what_a_named_switch_shape_computes(name, batch, length, tmp_path):
    config = _small(name)
    assert config.expert_capacity == 64
    ours = build_model(config, seed=0).eval()
    save_pretrained(ours, tmp_path / "ckpt")
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "ckpt").eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, config.vocab_size, (batch, length), generator=g)
    labels = torch.randint(2, config.vocab_size, (batch, length // 2), generator=g)
    with torch.no_grad():
        a = ours(ids, labels=labels).logits
        b = theirs(input_ids=ids, labels=labels).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_saving_a_factor_capacity_switch_model_warns_naming_both_capacities(tmp_path):
    ours = build_model(_small("switch-base-8").replace(expert_capacity=None), seed=0)
    with pytest.warns(UserWarning, match=r"capacity factors .* fixed expert_capacity, written as 64"):
        save_pretrained(ours, tmp_path / "ckpt")
