"""`t5lab finetune` and `t5lab evaluate` through the real entry point, on real GLUE data."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import t5lab

SRC = Path(t5lab.__file__).resolve().parents[1]  # the t5lab this test imported, for the subprocess too

# Small enough for a few CPU steps, but with T5's 32,128-id vocabulary so that the real tokenizer fits.
SHAPE = "t5-efficient-tiny-nl1-dm32-ff48-kv8-nh2"


def t5lab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    env.pop("T5LAB_DATA", None)
    return subprocess.run([sys.executable, "-m", "t5lab", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


def test_finetune_then_evaluate_the_exported_model(shared_data, spiece_model, tmp_path):
    out = tmp_path / "run"
    run = t5lab("finetune", "--task", "glue/rte", "--model", SHAPE, "--tokenizer", str(spiece_model),
                "--data-dir", str(shared_data), "--out", str(out), "--steps", "4", "--batch-size", "2",
                "--eval-every", "2", "--eval-limit", "6", "--max-input-length", "32", "--log-every", "1",
                cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r.get("split") == "eval"]
    assert [r["step"] for r in evals] == [2, 4]
    assert all(0 <= r["accuracy"] <= 100 and r["eval_loss"] > 0 for r in evals)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2, 3, 4]
    best = out / "best"
    for name in ("config.json", "model.safetensors", "spiece.model", "README.md", "predictions.jsonl"):
        assert (best / name).is_file(), name
    card = (best / "README.md").read_text()
    scores = json.loads((best / "eval_results.json").read_text())
    assert "glue/rte" in card and f"{scores['accuracy']:.2f}" in card
    assert max(r["accuracy"] for r in evals) == scores["accuracy"]
    assert len((best / "predictions.jsonl").read_text().splitlines()) == 6
    assert (out / "learning_curve.png").stat().st_size > 1000

    ev = t5lab("evaluate", "glue/rte", str(best), "--data-dir", str(shared_data), "--limit", "6",
               "--out", str(tmp_path / "ev"), "--max-input-length", "32", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr
    predictions = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert len(predictions) == 6 and {"id", "input", "prediction", "target"} <= set(predictions[0])
    # The exported model reproduces its own validation predictions.
    exported = [json.loads(line)["prediction"] for line in (best / "predictions.jsonl").read_text().splitlines()]
    assert [p["prediction"] for p in predictions] == exported
    assert "| glue/rte" in ev.stdout and "accuracy *" in ev.stdout
    assert "greedy, max_new_tokens " in ev.stderr  # the settings it chose, to reproduce the output elsewhere
    assert "accuracy *" in (tmp_path / "ev" / "summary.md").read_text()


def _rte(folder: Path, train_rows: list[str], dev: bool = True) -> Path:
    rte = folder / "glue" / "rte"
    rte.mkdir(parents=True)
    header = "index\tsentence1\tsentence2\tlabel\n"
    (rte / "train.tsv").write_text(header + "".join(r + "\n" for r in train_rows))
    if dev:
        (rte / "dev.tsv").write_text(header + "0\tA cat.\tAn animal.\tentailment\n")
    return folder


GOOD = "0\tA cat sat.\tA cat.\tentailment"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown task", "unknown task 'glue/rtee'; did you mean glue/rte"),
        ("missing split", "no 'validation' split in"),
        ("bad label", "train.tsv:3: label 'maybe' is not one of entailment, not_entailment"),
        ("malformed row", "train.tsv:2: expected 4 tab-separated columns"),
        ("bad json", "train.jsonl:2: not valid JSON"),
        ("no tokenizer", "is a shape name (random weights) and has no tokenizer"),
        ("no data folder", "no data folder: give --data-dir or set $T5LAB_DATA"),
    ],
)
def test_bad_input_is_one_line_and_exit_1(case, expected, tmp_path, spiece_model):
    task, data, tokenizer = "glue/rte", tmp_path / "data", ["--tokenizer", str(spiece_model)]
    if case == "unknown task":
        task = "glue/rtee"
        _rte(data, [GOOD])
    elif case == "missing split":
        _rte(data, [GOOD], dev=False)
    elif case == "bad label":
        _rte(data, [GOOD, "1\tA dog.\tA cat.\tmaybe"])
    elif case == "malformed row":
        _rte(data, ["0\tonly two"])
    elif case == "bad json":
        task = "generic"
        data.mkdir()
        (data / "train.jsonl").write_text('{"input": "a", "target": "b"}\n{"input": "a",\n')
        (data / "validation.jsonl").write_text('{"input": "a", "target": "b"}\n')
    elif case == "no tokenizer":
        _rte(data, [GOOD])
        tokenizer = []
    args = ["--data-dir", str(data)] if case != "no data folder" else []
    run = t5lab("finetune", task, SHAPE, *tokenizer, *args, "--steps", "1", "--out", str(tmp_path / "o"),
                cwd=tmp_path)
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("t5lab: error:") and expected in lines[0], run.stderr
