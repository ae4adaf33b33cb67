"""`t5lab generate` inputs from --prompts FILE and standard input (`-`), streaming, and the penalty flags."""

from __future__ import annotations

import io
import sys

import pytest
import torch

from t5lab.cli import main
from t5lab.data.tokenizer import Tokenizer
from t5lab.interop.hf import save_pretrained
from t5lab.model import build_model
from t5lab.recipes.generate import TokenPrinter


@pytest.fixture
def checkpoint(tmp_path, tiny_config, spiece_model):
    model = build_model(tiny_config.replace(vocab_size=32128, num_encoder_layers=3, init_scale=3.0), seed=0)
    save_pretrained(model, tmp_path / "ckpt", tokenizer=Tokenizer.from_file(spiece_model))
    return tmp_path / "ckpt"


def _outputs(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if not line.startswith(">")]


def test_prompts_file_and_stdin_stream_the_same_text_as_a_batch(checkpoint, tmp_path, monkeypatch, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello world\n\nThe <extra_id_0> walks\n")
    common = ["generate", "--model", str(checkpoint), "--max_new_tokens", "6"]
    assert main([*common, "--prompts", str(prompts)]) == 0
    batch = capsys.readouterr().out
    monkeypatch.setattr(sys, "stdin", io.StringIO(prompts.read_text()))
    assert main([*common, "-", "--stream"]) == 0
    streamed = capsys.readouterr().out
    assert [line for line in streamed.splitlines() if line.startswith(">")] == ["> Hello world", "> The <extra_id_0> walks"]
    # The same greedy tokens: the plain output of the first input, the filled-in line of the second.
    assert _outputs(streamed)[0] == _outputs(batch)[0]
    assert _outputs(streamed)[2] == _outputs(batch)[1]


def test_penalty_flags_reach_the_decoder(checkpoint, capsys):
    common = ["generate", "--model", str(checkpoint), "--max_new_tokens", "12", "--texts+", "Hello world"]
    assert main(common) == 0
    plain = capsys.readouterr().out
    assert main([*common, "--no-repeat-ngram-size", "1", "--repetition-penalty", "2.0"]) == 0
    penalised = capsys.readouterr().out
    assert plain != penalised


def test_stream_with_beams_and_missing_prompts_file_are_one_line_errors(checkpoint, tmp_path, capsys):
    assert main(["generate", "--model", str(checkpoint), "--stream", "--num_beams", "2", "--texts+", "x"]) == 1
    assert main(["generate", "--model", str(checkpoint), "--prompts", str(tmp_path / "none.txt")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "--stream" in err[0] and "none.txt" in err[1]


def test_token_printer_prints_suffixes_until_eos(spiece_model):
    tok = Tokenizer.from_file(spiece_model)
    out = io.StringIO()
    printer = TokenPrinter(tok, file=out)
    for token in [*tok.encode("a small test", add_eos=False), tok.eos_id, *tok.encode("more", add_eos=False)]:
        printer(torch.tensor([token]))
    assert out.getvalue() == "a small test"
