"""Generation: parity with transformers' generate (greedy, beam), sampling, the KV cache, options."""

from __future__ import annotations

import copy
import tempfile

import pytest
import torch

import t5lab.generate as generate_module
from t5lab.errors import T5LabError
from t5lab.generate import (
    GenerationConfig,
    OutputLayer,
    _filter_logits,
    clear_output_cache,
    generate,
    quantize_int8,
)
from t5lab.interop.hf import save_pretrained
from t5lab.kernels import apply
from t5lab.model import build_model

# Weights 3x the usual scale: a random T5 at the usual scale repeats one token forever; this one wanders,
# so rows end at different steps and beams compete.
VOCAB = 50


def _kernels(model, on: bool):
    return apply(model, device="cpu", training=False) if on else model


@pytest.fixture(params=[False, True], ids=["plain", "cpu-kernels"])
def setup(tiny_config, request):
    """A model (as many encoder as decoder layers, so that transformers can run it; plain and with the CPU
    kernels applied), a padded batch, and an EOS id the model actually emits mid-sequence (it never picks the
    real EOS at random init)."""
    config = tiny_config.replace(num_encoder_layers=3, vocab_size=VOCAB, init_scale=3.0)
    model = _kernels(build_model(config, seed=0), request.param).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask[3, 7:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    # EOS: the token that the most rows emit at steps 1-3, so that several rows stop early, at different steps.
    probe = generate(model, ids, mask, max_new_tokens=12)[:, 1:4]
    eos = max(probe.unique().tolist(), key=lambda token: ((probe == token).any(1).sum(), -token))
    return model, ids, mask, eos


def _until_eos(seqs_BT: torch.Tensor, eos: int) -> torch.Tensor:
    """Blank everything after each row's first EOS (transformers' beam search fills with EOS, we with pad)."""
    after = (seqs_BT == eos).int().cumsum(1) - (seqs_BT == eos).int() > 0
    return seqs_BT.masked_fill(after, -1)


def _hf_generate(model, ids, mask, eos, **options):
    transformers = pytest.importorskip("transformers")
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp).eval()
    out = hf.generate(
        input_ids=ids, attention_mask=mask, eos_token_id=eos, pad_token_id=0, decoder_start_token_id=0,
        do_sample=False, **options,
    )
    return out[:, 1:]  # drop the decoder start token


def test_greedy_matches_transformers(setup):
    model, ids, mask, eos = setup
    ours = generate(model, ids, mask, max_new_tokens=12, eos_token_id=eos)
    theirs = _hf_generate(model, ids, mask, eos, max_new_tokens=12)
    assert (ours == eos).any(1).sum() >= 2, "the test needs rows that stop early"
    assert torch.equal(ours, theirs)


def test_single_row_greedy_matches_transformers(setup):
    """One row and >= 16 steps: the path that reads a transposed copy of the output matrix (tied and untied)."""
    model, ids, mask, eos = setup
    for untied in (False, True):
        if untied:
            kernels = type(model.encoder.final_norm).__name__ == "FastRMSNorm"  # this run's fixture applied them
            model = _kernels(build_model(model.config.replace(tie_embeddings=False), seed=3), kernels).eval()
        for row in range(ids.shape[0]):
            ids_1S, mask_1S = ids[row : row + 1], mask[row : row + 1]
            ours = generate(model, ids_1S, mask_1S, max_new_tokens=20, min_new_tokens=20, eos_token_id=eos)
            assert torch.equal(ours, _hf_generate(model, ids_1S, mask_1S, eos, max_new_tokens=20, min_new_tokens=20))


@pytest.mark.parametrize(
    ("num_beams", "length_penalty", "early_stopping"),
    [(3, 1.0, False), (4, 0.5, True), (4, 2.0, "never"), (4, -1.0, False)],
)
def test_beam_search_matches_transformers(setup, num_beams, length_penalty, early_stopping):
    model, ids, mask, eos = setup
    options = dict(max_new_tokens=10, num_beams=num_beams, length_penalty=length_penalty,
                   early_stopping=early_stopping, num_return_sequences=2)
    ours = generate(model, ids, mask, eos_token_id=eos, **options)
    theirs = _hf_generate(model, ids, mask, eos, **options)
    assert ours.shape == theirs.shape
    assert torch.equal(_until_eos(ours, eos), _until_eos(theirs, eos))


def test_rows_are_padded_after_eos(setup):
    model, ids, mask, eos = setup
    for out in (generate(model, ids, mask, max_new_tokens=12, eos_token_id=eos),
                generate(model, ids, mask, max_new_tokens=12, eos_token_id=eos, num_beams=3)):
        ended = (out == eos).int().cumsum(1) - (out == eos).int() > 0
        assert ended.any()
        assert (out[ended] == model.config.pad_token_id).all()


def test_min_new_tokens_delays_eos(setup):
    model, ids, mask, eos = setup
    out = generate(model, ids, mask, max_new_tokens=8, min_new_tokens=8, eos_token_id=eos)
    assert out.shape == (4, 8)
    assert not (out == eos).any()


def test_sampling_is_reproducible_and_top_k_1_is_greedy(setup):
    model, ids, mask, eos = setup

    def sample(seed, **options):
        g = torch.Generator().manual_seed(seed)
        return generate(model, ids, mask, max_new_tokens=10, do_sample=True, generator=g, **options)

    assert torch.equal(sample(0), sample(0))
    assert not torch.equal(sample(0, temperature=5.0), sample(1, temperature=5.0))
    greedy = generate(model, ids, mask, max_new_tokens=10)
    assert torch.equal(sample(3, top_k=1, temperature=5.0), greedy)
    assert torch.equal(sample(3, top_p=1e-6, temperature=5.0), greedy)
    several = sample(0, num_return_sequences=3)
    assert several.shape[0] == 12


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    kept = lambda **kw: torch.isfinite(_filter_logits(logits, GenerationConfig(**kw)))[0].tolist()  # noqa: E731
    assert kept(top_k=2) == [True, True, False, False]
    p = logits.softmax(-1)[0]
    # Keep the fewest most-probable tokens whose mass reaches top_p.
    assert kept(top_p=float(p[0]) + 1e-3) == [True, True, False, False]
    assert kept(top_p=float(p[0]) - 1e-3) == [True, False, False, False]
    assert kept(top_p=float(p[:3].sum()) + 1e-3) == [True, True, True, True]


def _no_cache_greedy(model, ids, mask, steps):
    """Reference: recompute the whole decoder prefix every step (no cache, no precomputed bias)."""
    hidden, _ = model.encode(ids, mask)
    dec = torch.full((ids.shape[0], 1), model.config.decoder_start_token_id)
    for _ in range(steps):
        logits, _ = model.decode(dec, hidden, mask)
        dec = torch.cat([dec, logits[:, -1].argmax(-1, keepdim=True)], 1)
    return dec[:, 1:]


def test_deeper_decoder_generates_as_without_cache(tiny_config):
    """transformers 5.23 fails when the decoder is deeper than the encoder; the cache must not care."""
    config = tiny_config.replace(num_encoder_layers=1, num_decoder_layers=4, vocab_size=VOCAB, init_scale=3.0)
    model = build_model(config, seed=2).eval()
    ids = torch.randint(2, VOCAB, (3, 7), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[2, 4:] = 0
    with torch.inference_mode():
        reference = _no_cache_greedy(model, ids, mask, 9)
    out = generate(model, ids, mask, max_new_tokens=9, min_new_tokens=9)
    assert torch.equal(out, reference)
    assert generate(model, ids, mask, max_new_tokens=6, num_beams=3).shape[0] == 3


@pytest.fixture
def two_threads():
    """2 threads, so that one-row products with an even number of outputs split their weights
    (`t5lab.kernels.cpu_linear.linear`)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("variant", [
    {}, {"feed_forward": "gated-gelu", "tie_embeddings": False}, {"tie_key_value": True}, {"num_kv_heads": 1},
    {"num_experts": 4, "decoder_sparse_step": 2, "encoder_sparse_step": 2},
])
def test_one_row_steps_match_no_cache(tiny_config, variant, two_threads):
    """One row, CPU kernels applied: the products with an even number of outputs (output layer, q/k/v/o, wo)
    read their weights split across threads, d_ff 37 does not split. Same tokens as the plain model
    recomputing the whole prefix each step."""
    config = tiny_config.replace(vocab_size=VOCAB, init_scale=3.0, **variant)
    plain = build_model(config, seed=4).eval()
    model = _kernels(build_model(config, seed=4), True).eval()
    ids = torch.randint(2, VOCAB, (1, 7), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        reference = _no_cache_greedy(plain, ids, None, 17)
    assert torch.equal(generate(model, ids, max_new_tokens=17, min_new_tokens=17), reference)


@pytest.mark.parametrize("tied", [True, False])
def test_one_row_output_layer_copy_is_kept_and_follows_the_weight(tiny_config, tied, two_threads):
    """Batch-1 decoding reads the output layer from a transposed copy that `generate` keeps: same logits as the
    weight itself, reused across calls, rebuilt when the weight or the thread count changes."""
    clear_output_cache()
    model = build_model(tiny_config.replace(vocab_size=VOCAB, tie_embeddings=tied), seed=0).eval()
    hidden = torch.randn(1, 1, tiny_config.d_model)
    reference = model.output_logits(hidden)
    output = OutputLayer(model)
    with torch.inference_mode():
        torch.testing.assert_close(output(hidden), reference)
        copy = generate_module._one_row_blocks[2]
        assert copy is not None
        output(hidden)
        assert generate_module._one_row_blocks[2] is copy
        for rows in (2, 5):  # a few rows: the thin product W h^T
            many = torch.randn(rows, 1, tiny_config.d_model)
            torch.testing.assert_close(output(many), model.output_logits(many))
    with torch.no_grad():
        model.output_weight().mul_(2.0)  # e.g. an optimizer step
    with torch.inference_mode():
        torch.testing.assert_close(output(hidden), 2 * reference)
    assert generate_module._one_row_blocks[2] is not copy
    torch.set_num_threads(1)  # (the fixture restores the count)
    with torch.inference_mode():
        torch.testing.assert_close(output(hidden), 2 * reference)
    assert generate_module._one_row_blocks[2] is None  # one thread: nothing to split, the weight itself is read
    clear_output_cache()
    assert generate_module._one_row_blocks is None


def test_bad_options_are_user_errors(setup):
    model, ids, mask, _ = setup
    with pytest.raises(T5LabError, match="known options"):
        generate(model, ids, mask, max_tokens=3)
    with pytest.raises(T5LabError, match="num_return_sequences"):
        generate(model, ids, mask, num_beams=2, num_return_sequences=3)
    with pytest.raises(T5LabError, match="top_p"):
        generate(model, ids, mask, do_sample=True, top_p=0.0)
    with pytest.raises(T5LabError, match="input_ids"):
        generate(model, ids[0], None)


def test_int8_quantised_model_generates_close_logits(setup, tiny_config):
    _, ids, mask, _ = setup
    model = build_model(tiny_config.replace(vocab_size=VOCAB), seed=0).eval()  # usual scale: errors stay small
    quantised = quantize_int8(model)
    assert type(quantised.decoder.layers[0].ffn.wi).__name__ == "Linear"  # dynamic-quantised module class
    assert type(quantised.decoder.layers[0].ffn.wi).__module__.startswith("torch.ao.nn.quantized")
    assert type(model.decoder.layers[0].ffn.wi) is torch.nn.Linear  # the original is untouched
    dec = torch.zeros(4, 1, dtype=torch.long)
    with torch.inference_mode():
        a = model(ids, mask, decoder_input_ids=dec).logits
        b = quantised(ids, mask, decoder_input_ids=dec).logits
    assert (a - b).abs().max() < 0.1 * a.abs().max()
    assert generate(quantised, ids, mask, max_new_tokens=5).shape[0] == 4


@pytest.mark.parametrize("tied", [True, False])
def test_int8_quantised_model_generates_one_row(tiny_config, tied, two_threads):
    """One row and an untied head: quantised linears have no weight tensor, so they compute their own
    products (the tied output layer stays fp32 and splits)."""
    quantised = quantize_int8(build_model(tiny_config.replace(vocab_size=VOCAB, tie_embeddings=tied), seed=0).eval())
    ids = torch.randint(2, VOCAB, (1, 7), generator=torch.Generator().manual_seed(6))
    out = generate(quantised, ids, max_new_tokens=17, min_new_tokens=17)
    assert out.shape == (1, 17)
    fast = apply(copy.deepcopy(quantised), device="cpu", training=False)  # as `t5lab generate --quantize` runs it
    assert torch.equal(generate(fast, ids, max_new_tokens=17, min_new_tokens=17), out)
    with torch.inference_mode():
        assert torch.equal(out, _no_cache_greedy(quantised, ids, None, 17))


def test_decoder_bias_is_built_once_per_generate_call(tiny_config, monkeypatch):
    """The decoder's relative bias + causal mask is computed for all positions once; each step reads its row."""
    import t5lab.model.attention as attention

    calls = []
    build = attention.relative_position_bias
    monkeypatch.setattr(attention, "relative_position_bias", lambda *a, **kw: calls.append(a[1:3]) or build(*a, **kw))
    model = build_model(tiny_config.replace(vocab_size=VOCAB), seed=0).eval()
    generate(model, torch.randint(2, VOCAB, (2, 5)), max_new_tokens=6, min_new_tokens=6)
    assert calls == [(5, 5), (6, 6)]  # the encoder's, then the decoder's table for all 6 steps
