"""Switch checkpoints both ways with transformers' SwitchTransformersForConditionalGeneration (random weights)."""

from __future__ import annotations

import pytest
import torch

from t5lab.interop.hf import load_pretrained, save_pretrained
from t5lab.interop.hf_config import to_hf
from t5lab.model import KVCache, build_model

transformers = pytest.importorskip("transformers")


@pytest.fixture
def switch_config(tiny_config):
    """Sparse block 1 in both stacks, 4 experts, 3 slots each: batches below drop tokens in both stacks."""
    return tiny_config.replace(num_encoder_layers=3, num_experts=4, expert_capacity=3, router_jitter_noise=0.0)


def _batch(config, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, config.vocab_size, (3, 11), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    labels = torch.randint(2, config.vocab_size, (3, 9), generator=g)
    return ids, mask, labels


def _assert_same_outputs(ours, theirs, config):
    ids, mask, labels = _batch(config)
    with torch.no_grad():
        a = ours(ids, mask, labels=labels)
        b = theirs(input_ids=ids, attention_mask=mask, labels=labels, output_router_logits=True)
    assert min(r.dropped_fraction.item() for r in a.router) > 0  # capacity drops happen in both stacks
    torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=1e-4)
    # One sparse block per stack, so transformers' per-stack router losses equal t5lab's per-layer ones.
    torch.testing.assert_close(a.loss, b.loss, atol=1e-4, rtol=1e-4)


def test_transformers_loads_what_we_write(switch_config, tmp_path):
    ours = build_model(switch_config, seed=0).eval()
    save_pretrained(ours, tmp_path / "ckpt")
    theirs, info = transformers.SwitchTransformersForConditionalGeneration.from_pretrained(
        tmp_path / "ckpt", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    _assert_same_outputs(ours, theirs.eval(), switch_config)


def test_we_load_what_transformers_writes(switch_config, tmp_path):
    hf_config = transformers.SwitchTransformersConfig(
        **{k: v for k, v in to_hf(switch_config).items() if not k.startswith("t5lab_")}
    )
    torch.manual_seed(0)
    theirs = transformers.SwitchTransformersForConditionalGeneration(hf_config).eval()
    theirs.save_pretrained(tmp_path / "hf")
    ours = load_pretrained(tmp_path / "hf")
    for decoder, layers in ((False, switch_config.num_encoder_layers), (True, switch_config.num_decoder_layers)):
        assert [ours.config.is_sparse_layer(i, decoder) for i in range(layers)] == [
            switch_config.is_sparse_layer(i, decoder) for i in range(layers)
        ]
    _assert_same_outputs(ours, theirs, switch_config)


def test_greedy_decoding_matches_transformers_generate(switch_config, tmp_path):
    """Step-by-step decoding with the KV cache (routing one new token per sequence per step).

    t5lab.generate is not on this branch yet: the greedy loop is written out here.
    """
    ours = build_model(switch_config, seed=1).eval()
    save_pretrained(ours, tmp_path / "ckpt")
    theirs = transformers.SwitchTransformersForConditionalGeneration.from_pretrained(tmp_path / "ckpt").eval()
    ids, mask, _ = _batch(switch_config, seed=1)
    steps = 8
    with torch.no_grad():
        expected = theirs.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                                   min_new_tokens=steps)[:, 1:]
        hidden, _ = ours.encode(ids, mask)
        cache = KVCache.empty(switch_config.num_decoder_layers, max_length=steps)
        token = torch.full((ids.shape[0], 1), switch_config.decoder_start_token_id)
        generated = []
        for _ in range(steps):
            logits, _ = ours.decode(token, hidden, mask, cache)
            token = logits[:, -1:].argmax(-1)
            generated.append(token)
    torch.testing.assert_close(torch.cat(generated, dim=1), expected)
