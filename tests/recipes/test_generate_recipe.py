"""`t5lab generate` through the real entry point, and its span-filling output."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from t5lab.data.tokenizer import Tokenizer
from t5lab.errors import T5LabError
from t5lab.interop.hf import save_pretrained
from t5lab.model import build_model
from t5lab.recipes.generate import format_result, generate, spans_by_sentinel

REPO_ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "t5lab", "generate", *args],
        input=stdin, capture_output=True, text=True, env=env, timeout=120,
    )


@pytest.fixture
def checkpoint(tmp_path, tiny_config, spiece_model):
    """A tiny random model with the real T5 vocabulary, saved as a transformers folder with spiece.model."""
    model = build_model(tiny_config.replace(vocab_size=32128), seed=0)
    save_pretrained(model, tmp_path / "ckpt", tokenizer=Tokenizer.from_file(spiece_model))
    return tmp_path / "ckpt"


def test_cli_fills_spans_from_arguments_and_stdin(checkpoint):
    text = "The <extra_id_0> walks in <extra_id_1> park"
    result = _run("--model", str(checkpoint), "--max_new_tokens", "4", "--texts+", text, "--texts+", "Hello")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"> {text}"
    assert lines[1].startswith("  The [") and lines[1].endswith("] park")
    assert lines[2].startswith("  raw: ")
    assert lines[3] == "> Hello" and lines[4].startswith("  ")
    piped = _run("--model", str(checkpoint), "--max_new_tokens", "4", "--num_beams", "2", stdin=f"{text}\n\nHi\n")
    assert piped.returncode == 0, piped.stderr
    assert [line for line in piped.stdout.splitlines() if line.startswith("> ")] == [f"> {text}", "> Hi"]


def test_cli_error_is_one_line():
    result = _run("--model", "no/such/folder", "--texts+", "x")
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "no such checkpoint folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_recipe_errors_name_the_fix(checkpoint, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(T5LabError, match="no input text"):
        generate(model=str(checkpoint))
    with pytest.raises(T5LabError, match="--tokenizer"):
        generate(["x"], model="t5-efficient-tiny-nl2")
    with pytest.raises(T5LabError, match="--model"):
        generate(["x"])


def test_spans_fill_their_sentinels(spiece_model):
    tok = Tokenizer.from_file(spiece_model)
    out = [tok.sentinel_id(0), *tok.encode("cute dog", add_eos=False), tok.sentinel_id(1),
           *tok.encode("the", add_eos=False), tok.sentinel_id(2), tok.eos_id, 0, 0]
    assert spans_by_sentinel(out, tok) == {0: "cute dog", 1: "the", 2: ""}
    text = format_result("The <extra_id_0> walks in <extra_id_1> park <extra_id_5>", out, tok)
    assert text.splitlines()[1] == "  The [cute dog] walks in [the] park [?]"
    assert "<extra_id_0>" in text.splitlines()[2] and "</s>" not in text



def test_an_input_longer_than_max_input_length_is_refused_naming_the_limit(tmp_path, spiece_model, tiny_config):
    folder = tmp_path / "m"
    save_pretrained(build_model(tiny_config.replace(vocab_size=32128), seed=0), folder)
    with pytest.raises(T5LabError, match="max_input_length=4"):
        generate(["one two three four five six seven"], model=str(folder), tokenizer=str(spiece_model),
                 max_input_length=4, device="cpu")
