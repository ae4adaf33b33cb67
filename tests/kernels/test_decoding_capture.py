"""Static-cache decoding (the algorithm CUDA graphs replay) gives the eager path's tokens; on CPU without
graphs, on CUDA (`-m gpu`) with them. Token choice is generate's own loop, fed StaticDecoderSteps."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from t5lab.generate import GenerationConfig, _greedy_or_sample, generate
from t5lab.kernels.decoding_capture import StaticDecoderSteps, supports_capture
from t5lab.model import build_model

VOCAB = 50  # weights at 8x scale: a random T5 then wanders between tokens instead of repeating one


def _setup(tiny_config, device="cpu", **changes):
    config = tiny_config.replace(vocab_size=VOCAB, init_scale=8.0, num_encoder_layers=3, **changes)
    model = build_model(config, seed=0, device=device).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[3, 7:] = 0
    return model, ids.masked_fill(mask == 0, 0).to(device), mask.to(device)


@torch.inference_mode()
def _generate_static(model, ids, mask, capture=False, generator=None, **options):
    """What `generate` does for greedy/sampling, with the static steps in place of DecoderSteps."""
    config = dataclasses.replace(GenerationConfig(eos_token_id=model.config.eos_token_id), **options)
    hidden_BSD, _ = model.encode(ids, mask)
    copies = config.num_return_sequences
    hidden_BSD, mask = hidden_BSD.repeat_interleave(copies, 0), mask.repeat_interleave(copies, 0)
    steps = StaticDecoderSteps(model, hidden_BSD, mask, config.max_new_tokens, capture)
    return _greedy_or_sample(steps, config, generator)


@pytest.mark.parametrize("changes", [{}, {"num_kv_heads": 1, "tie_key_value": True}])
def test_greedy_tokens_equal_eager(tiny_config, changes):
    model, ids, mask = _setup(tiny_config, **changes)
    eager = generate(model, ids, mask, max_new_tokens=14)
    assert len(eager.unique()) > 3  # the model wanders: a real comparison
    torch.testing.assert_close(_generate_static(model, ids, mask, max_new_tokens=14), eager, rtol=0, atol=0)


def test_early_eos_and_sampling_equal_eager(tiny_config):
    model, ids, mask = _setup(tiny_config)
    eos = int(generate(model, ids, mask, max_new_tokens=4)[0, 2])  # rows stop early, at different steps
    eager = generate(model, ids, mask, max_new_tokens=12, eos_token_id=eos)
    torch.testing.assert_close(_generate_static(model, ids, mask, max_new_tokens=12, eos_token_id=eos), eager,
                               rtol=0, atol=0)
    sample = {"max_new_tokens": 10, "do_sample": True, "top_k": 5, "num_return_sequences": 2}
    eager = generate(model, ids, mask, generator=torch.Generator().manual_seed(3), **sample)
    static = _generate_static(model, ids, mask, generator=torch.Generator().manual_seed(3), **sample)
    torch.testing.assert_close(static, eager, rtol=0, atol=0)


def test_capture_only_for_greedy_or_sampling_of_dense_models_on_cuda(tiny_config):
    dense = build_model(tiny_config, device="meta")
    switch = build_model(tiny_config.replace(num_experts=4), device="meta")
    assert supports_capture(dense, torch.device("cuda"), num_beams=1)
    assert not supports_capture(dense, torch.device("cuda"), num_beams=4)
    assert not supports_capture(dense, torch.device("cpu"), num_beams=1)
    assert not supports_capture(switch, torch.device("cuda"), num_beams=1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_captured_graph_tokens_equal_eager_on_cuda(tiny_config):
    model, ids, mask = _setup(tiny_config, device="cuda")
    eager = generate(model, ids, mask, max_new_tokens=14)
    torch.testing.assert_close(_generate_static(model, ids, mask, capture=True, max_new_tokens=14), eager, rtol=0, atol=0)
