"""`t5lab scale-study` through the real entry point: two tiny shapes, a budget of two steps each."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from t5lab.cli import main
from t5lab.errors import T5LabError
from t5lab.recipes.scale_study import steps_for_budget
from t5lab.shapes import from_name

SHAPES = ["t5-efficient-tiny-nl1-ff48-dm32-kv8-nh2", "t5-efficient-tiny-el2-dl1-ff48-dm32-kv8-nh2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A few hundred built-in paragraphs as a text file, and a 200-piece tokenizer trained on them."""
    pytest.importorskip("torch")
    from t5lab.data.builtin_corpus import builtin_documents
    from t5lab.data.tokenizer import Tokenizer

    folder = tmp_path_factory.mktemp("corpus")
    docs = [" ".join(d.split()) for d in builtin_documents()[:200]]
    text = folder / "docs.txt"
    text.write_text("\n".join(docs) + "\n")
    Tokenizer.train(docs, 200, folder / "tok", num_sentinels=100)
    return text, folder / "tok" / "spiece.model"


def study(corpus: tuple[Path, Path], out: Path, *extra: str) -> int:
    text, model = corpus
    return main(["scale-study", "--shapes", *SHAPES, "--budget", "tokens", "--amount", "256",
                 "--data", str(text), "--tokenizer", str(model), "--inputs-length", "32", "--eval-fraction",
                 "0.1", "--train.batch_size", "4", "--train.eval_batches", "2", "--train.progress", "false",
                 "--threads", "1", "--out", str(out), *extra])


def test_two_shape_study(corpus: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "study"
    assert study(corpus, out) == 0
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == SHAPES
    for row in rows:
        assert row["steps"] == 2 and row["tokens"] == 2 * 4 * 32  # 256 tokens of 4 x 32 per step
        assert math.isfinite(row["loss"]) and 0 < row["loss"] < 10  # ln(300) = 5.7 for a uniform guess
        assert row["vocab_size"] == 300 and row["budget"] == "tokens" and row["tokens_per_s"] > 0
        assert (out / row["name"] / "metrics.jsonl").is_file()  # the training loop's own log
    assert rows[1]["params"] > rows[0]["params"]
    assert (out / "pareto.png").read_bytes().startswith(b"\x89PNG")
    assert "| t5-efficient-tiny-nl1" in (out / "pareto.md").read_text()
    capsys.readouterr()
    # Run again: the shapes already measured are skipped; another budget into the same folder is refused.
    assert study(corpus, out) == 0
    assert capsys.readouterr().out.count("skipped") == 2
    assert study(corpus, out, "--budget", "flops") == 1
    assert "another study" in capsys.readouterr().err
    other = "fp32" if rows[0]["dtype"] == "bfloat16" else "bf16"  # rows of one precision only
    assert study(corpus, out, "--train.precision", other) == 1
    assert f"a row trained in {rows[0]['dtype']}" in capsys.readouterr().err


def test_steps_for_each_budget() -> None:
    config = from_name("t5-efficient-tiny")
    from t5lab.analysis.counting import training_flops

    per_step = 16 * training_flops(config, 64, 16)
    assert steps_for_budget("tokens", 16 * 64 * 10, config, 16, 64, 16) == 10
    assert steps_for_budget("flops", 7.5 * per_step, config, 16, 64, 16) == 7
    assert steps_for_budget("minutes", 1.0, config, 16, 64, 16, step_seconds=0.5) == 120
    assert steps_for_budget("tokens", 1, config, 16, 64, 16) == 1  # at least one step
    with pytest.raises(T5LabError, match="step time"):
        steps_for_budget("minutes", 1.0, config, 16, 64, 16)
