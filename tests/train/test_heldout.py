"""Held-out span-corruption evaluation: its definitions, its independence from batching, and the command."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from t5lab.cli import main
from t5lab.data.span_corruption import SpanCorruption
from t5lab.data.tokenizer import Tokenizer
from t5lab.interop.hf import save_pretrained
from t5lab.model import build_model
from t5lab.train.heldout import piece_bytes, span_corruption_heldout


@pytest.fixture
def tok(spiece_model):
    return Tokenizer.from_file(spiece_model)


@pytest.fixture
def documents(shared_data):
    lines = (shared_data / "tinyshakespeare" / "input.txt").read_text().splitlines()
    return [line for line in lines[:150] if line.strip()]


@pytest.fixture
def model(tiny_config):
    return build_model(tiny_config.replace(vocab_size=32128), seed=0).eval()


def test_piece_bytes_spell_the_text(tok):
    table = piece_bytes(tok)
    for text in ("Hello world", "café crème, 3.14 €", "To be, or not to be"):
        ids = tok.encode(text, add_eos=False)
        assert tok.unk_id not in ids
        assert table[ids].sum() == len(text.encode("utf-8")) + 1  # the first word's boundary marker: one space
    assert table[tok.eos_id] == table[tok.pad_id] == table[tok.unk_id] == table[tok.sentinel_id(0)] == 0


def test_every_document_once_and_batching_changes_nothing(model, tok, documents):
    settings = dict(inputs_length=48, noise_density=0.15, mean_noise_span_length=3.0, seed=3)
    one = span_corruption_heldout(model, tok, documents, batch_size=1, **settings)
    many = span_corruption_heldout(model, tok, documents, batch_size=5, **settings)
    assert one.loss == pytest.approx(many.loss, rel=1e-5) and one.token_accuracy == many.token_accuracy
    assert one.bits_per_byte == pytest.approx(many.bits_per_byte, rel=1e-5)
    tokens = sum(len(tok.encode(d)) for d in documents)
    raw_length = SpanCorruption(48, 0.15, 3.0).tokens_length
    assert one.documents == len(documents) and one.chunks == math.ceil(tokens / raw_length)
    assert one.target_tokens <= one.chunks * one.targets_length
    assert 0 < one.text_tokens < one.target_tokens and one.text_bytes > one.text_tokens
    # A random model: about log(V) nats per token, and the text part in bits over its bytes.
    assert 0.8 * math.log(32128) < one.loss < 1.5 * math.log(32128)
    assert one.bits_per_byte * one.text_bytes * math.log(2) < one.loss * one.target_tokens
    other_seed = span_corruption_heldout(model, tok, documents, batch_size=5, **{**settings, "seed": 4})
    assert other_seed.loss != many.loss


def test_unpadded_chunk_matches_the_model_loss(model, tok, documents):
    """A document of exactly one chunk: the reported loss is the model's own mean target cross-entropy."""
    import torch

    lengths = {}
    for inputs_length in range(16, 80):
        lengths.setdefault(SpanCorruption(inputs_length, 0.15, 3.0).tokens_length, inputs_length)
    text, inputs_length = next((d, lengths[len(tok.encode(d))]) for d in documents if len(tok.encode(d)) in lengths)
    corruption = SpanCorruption(inputs_length, 0.15, 3.0)
    sentinels = np.array([tok.sentinel_id(i) for i in range(100)])
    inputs, targets = corruption(np.array([tok.encode(text)]), sentinels, tok.eos_id, np.random.default_rng([0, 0]))
    with torch.inference_mode():
        expected = model(torch.from_numpy(inputs), labels=torch.from_numpy(targets)).loss.item()
    result = span_corruption_heldout(model, tok, [text], inputs_length=inputs_length, seed=0)
    assert result.chunks == 1 and result.loss == pytest.approx(expected, rel=1e-5)


def test_cli_prints_settings_and_writes_a_summary(model, tok, documents, tmp_path, capsys):
    save_pretrained(model, tmp_path / "ckpt", tokenizer=tok)
    (tmp_path / "text.txt").write_text("\n".join(documents[:60]) + "\n")
    args = ["evaluate", "--task", "span-corruption", "--model", str(tmp_path / "ckpt"), "--data",
            str(tmp_path / "text.txt"), "--max-input-length", "64", "--seed", "1", "--out", str(tmp_path / "out")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "noise density 0.15, mean span 3.0, inputs 64" in printed and "seed 1" in printed and "bits/byte" in printed
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["documents"] == 60 and summary["inputs_length"] == 64 and summary["bits_per_byte"] > 0
    assert main(["evaluate", "--task", "span-corruption", "--model", str(tmp_path / "ckpt")]) == 1
    assert "--data" in capsys.readouterr().err
