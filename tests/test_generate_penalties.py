"""Repetition penalty, no-repeat n-grams and the token streamer of `t5lab.generate`, against transformers."""

from __future__ import annotations

import tempfile

import pytest
import torch

from t5lab.config import ModelConfig
from t5lab.errors import T5LabError
from t5lab.generate import GenerationConfig, _penalise_repeats, generate
from t5lab.interop.hf import save_pretrained
from t5lab.model import build_model

VOCAB = 50


@pytest.fixture(scope="module")
def setup():
    """A random model at 3x the usual weight scale (so that it wanders instead of repeating one token), as many
    encoder as decoder layers (so that transformers can run it), its transformers twin, and a padded batch.
    Module-scoped: every test only reads them."""
    transformers = pytest.importorskip("transformers")
    config = ModelConfig(name="tiny-test", vocab_size=VOCAB, d_model=24, d_ff=37, d_kv=10, num_heads=3,
                         num_encoder_layers=3, num_decoder_layers=3, relative_attention_num_buckets=8,
                         relative_attention_max_distance=20, dropout=0.0, init_scale=3.0)
    model = build_model(config, seed=0).eval()
    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        hf = transformers.T5ForConditionalGeneration.from_pretrained(tmp).eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, VOCAB, (4, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    return model, hf, ids, mask


def _theirs(hf, ids, mask, **options):
    out = hf.generate(input_ids=ids, attention_mask=mask, eos_token_id=1, pad_token_id=0,
                      decoder_start_token_id=0, do_sample=False, **options)
    return out[:, 1:]


@pytest.mark.parametrize(
    "options",
    [
        dict(repetition_penalty=1.5),
        dict(repetition_penalty=0.7),
        dict(no_repeat_ngram_size=2),
        dict(no_repeat_ngram_size=1),
        dict(repetition_penalty=1.3, no_repeat_ngram_size=3),
        dict(repetition_penalty=1.3, no_repeat_ngram_size=2, num_beams=3),
    ],
    ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()),
)
def test_penalties_match_transformers(setup, options):
    model, hf, ids, mask = setup
    ours = generate(model, ids, mask, max_new_tokens=12, **options)
    theirs = _theirs(hf, ids, mask, max_new_tokens=12, **options)
    plain = generate(model, ids, mask, max_new_tokens=12, num_beams=options.get("num_beams", 1))
    assert not torch.equal(ours, plain), "the option must change this model's output for the test to mean anything"
    assert torch.equal(ours, theirs)


def test_no_repeat_ngram_bans_exactly_the_completing_tokens():
    history = torch.tensor([[0, 5, 6, 5, 7, 5]])  # bigrams starting with the last token 5: (5,6), (5,7)
    scores = torch.zeros(1, 10)
    out = _penalise_repeats(scores, history, GenerationConfig(no_repeat_ngram_size=2))
    assert torch.isinf(out[0]).nonzero().flatten().tolist() == [6, 7]


def test_streamer_sees_every_step_of_greedy_and_sampling(setup):
    model, _, ids, mask = setup
    for options in (dict(), dict(do_sample=True, top_k=5)):
        seen = []
        out = generate(model, ids, mask, max_new_tokens=7, streamer=seen.append,
                       generator=torch.Generator().manual_seed(0), **options)
        assert torch.equal(torch.stack(seen, 1), out)
    with pytest.raises(T5LabError, match="streamer"):
        generate(model, ids, mask, max_new_tokens=3, num_beams=2, streamer=print)


def test_bad_penalty_options_are_user_errors():
    with pytest.raises(T5LabError, match="repetition_penalty"):
        GenerationConfig(repetition_penalty=0)
    with pytest.raises(T5LabError, match="no_repeat_ngram_size"):
        GenerationConfig(no_repeat_ngram_size=-1)
