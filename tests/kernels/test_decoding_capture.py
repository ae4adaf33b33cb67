"""Static-cache decoding (the algorithm CUDA graphs replay) gives the eager path's tokens; on CPU without
graphs, on CUDA (`-m gpu`) with them."""

from __future__ import annotations

import pytest
import torch

from t5lab.generate import generate
from t5lab.kernels.decoding_capture import generate_static
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


@pytest.mark.parametrize("changes", [{}, {"num_kv_heads": 1, "tie_key_value": True}])
def test_greedy_tokens_equal_eager(tiny_config, changes):
    model, ids, mask = _setup(tiny_config, **changes)
    eager = generate(model, ids, mask, max_new_tokens=14)
    assert len(eager.unique()) > 3  # the model wanders: a real comparison
    torch.testing.assert_close(generate_static(model, ids, mask, max_new_tokens=14, capture=False), eager, rtol=0, atol=0)


def test_early_eos_and_sampling_equal_eager(tiny_config):
    model, ids, mask = _setup(tiny_config)
    probe = generate(model, ids, mask, max_new_tokens=12)
    eos = int(probe[0, 2])  # a token row 0 emits at step 2: rows stop early, at different steps
    eager = generate(model, ids, mask, max_new_tokens=12, eos_token_id=eos)
    static = generate_static(model, ids, mask, max_new_tokens=12, eos_token_id=eos, capture=False)
    torch.testing.assert_close(static, eager, rtol=0, atol=0)
    sample = {"max_new_tokens": 10, "do_sample": True, "top_k": 5, "num_return_sequences": 2}
    eager = generate(model, ids, mask, generator=torch.Generator().manual_seed(3), **sample)
    static = generate_static(model, ids, mask, generator=torch.Generator().manual_seed(3), capture=False, **sample)
    torch.testing.assert_close(static, eager, rtol=0, atol=0)


def test_unsupported_options_fall_back_to_eager(tiny_config):
    """Beam search, and CPU tensors for the graph: `generate_static` (capture None) is `generate` then."""
    model, ids, mask = _setup(tiny_config)
    for options in ({"num_beams": 3}, {}):
        torch.testing.assert_close(
            generate_static(model, ids, mask, max_new_tokens=6, **options),
            generate(model, ids, mask, max_new_tokens=6, **options), rtol=0, atol=0,
        )
    with pytest.raises(ValueError, match="not supported"):
        generate_static(model, ids, mask, max_new_tokens=6, num_beams=3, capture=False)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_captured_graph_tokens_equal_eager_on_cuda(tiny_config):
    model, ids, mask = _setup(tiny_config, device="cuda")
    eager = generate(model, ids, mask, max_new_tokens=14)
    torch.testing.assert_close(generate_static(model, ids, mask, max_new_tokens=14, capture=True), eager, rtol=0, atol=0)
