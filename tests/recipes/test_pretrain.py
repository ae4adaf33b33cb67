"""`t5lab pretrain` through the real command line: outputs, golden losses, resume after kill -9, bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from t5lab.cli import main
from t5lab.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]

TINY_RECIPE = """
model: t5-efficient-tiny
model_overrides: {{d_model: 32, d_ff: 64, num_heads: 2, d_kv: 16, num_encoder_layers: 2, num_decoder_layers: 2,
                  dropout: 0.1}}
tokenizer: {tokenizer}
data: {{sources: [{corpus}], inputs_length: 32, eval_fraction: 0.1, shuffle_buffer: 50}}
train: {{steps: 12, batch_size: 4, grad_accum: 2, optimizer: adamwscale, lr: 0.02, eps: 1.0e-6, warmup: 3,
         eval_every: 4, eval_batches: 2, save_every: 3, log_every: 1, device: cpu}}
"""

# Losses at steps 1, 6 and 12 of the tiny recipe, recorded on CPU (one thread) with torch 2.13 and sentencepiece
# 0.2: a change in numerics (model, dropout masks, optimiser, schedule, data pipeline, tokenizer) shows up here.
GOLDEN = {1: 6.474955, 6: 5.16564, 12: 4.782585}  # data order by global-batch lanes (issue 18)


def _sentences(seed: int, count: int) -> list[str]:
    rng = random.Random(seed)
    subjects = ["the cat", "a dog", "my friend", "the teacher", "our neighbour", "the old man", "a small bird", "the engineer"]
    verbs = ["sees", "likes", "follows", "helps", "calls", "visits", "paints", "builds"]
    objects = ["a house", "the river", "a red car", "the garden", "an apple", "the tall tree", "a blue boat", "the library"]
    tails = ["every morning", "in the rain", "after lunch", "with great care", "before dinner", "on sunday"]
    return [" ".join(f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)}."
                     for _ in range(rng.randint(2, 5))) for _ in range(count)]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory) -> Path:
    """A tiny recipe over a generated corpus with a SentencePiece tokenizer trained on it."""
    from t5lab.data.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("tiny-recipe")
    lines = _sentences(0, 300)
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    Tokenizer.train(lines, 64, root / "tokenizer")  # + 100 sentinels
    path = root / "tiny.yaml"
    path.write_text(TINY_RECIPE.format(tokenizer=root / "tokenizer", corpus=root / "corpus.txt"))
    return path


def _losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


def test_pretrain_writes_a_checkpoint_card_curve_and_golden_losses(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["pretrain", "--recipe", str(recipe), "--out", str(out), "--progress", "false",
                 "--precision", "fp32"]) == 0  # the golden losses are fp32 ('auto' is bf16 on some CPUs)
    printed = capsys.readouterr().out
    for name in ("config.json", "model.safetensors", "spiece.model", "README.md"):
        assert (out / "final" / name).is_file(), name
    assert (out / "loss.png").stat().st_size > 1000
    assert "<extra_id_0>" in printed and str(out / "final") in printed
    card = (out / "final" / "README.md").read_text()
    assert "12 steps" in card and "held-out" in card
    config = json.loads((out / "final" / "config.json").read_text())
    assert config["vocab_size"] == 256 and config["d_model"] == 32  # 164 tokenizer ids, rounded up
    losses = dict(_losses(out))
    assert sorted(losses) == list(range(1, 13))
    for step, expected in GOLDEN.items():
        assert losses[step] == pytest.approx(expected, rel=1e-3), step
    evals = [r for r in read_metrics(out / "metrics.jsonl") if r.get("split") == "eval"]
    assert [r["step"] for r in evals] == [4, 8, 12] and evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    # The run folder's recipe.yaml is the one config format: what --print_config printed for these flags,
    # and what --resume reads.
    for argv in (["--recipe", str(recipe), "--precision", "fp32", "--progress", "false"], ["--resume", "true"]):
        assert main(["pretrain", *argv, "--out", str(out), "--print_config"]) == 0
        assert capsys.readouterr().out == (out / "recipe.yaml").read_text()

    # Continued pre-training from the exported folder starts where the first run ended, not at random init.
    more = tmp_path / "more"
    assert main(["pretrain", "--recipe", str(recipe), "--model", str(out / "final"), "--out", str(more),
                 "--steps", "2", "--dropout", "0.0", "--progress", "false"]) == 0
    assert _losses(more)[0][1] < losses[1] - 0.8
    assert json.loads((more / "final" / "config.json").read_text())["dropout_rate"] == 0.0


@pytest.mark.slow  # three runs, one in a subprocess: ~10 s on 2 cores
def test_resume_after_kill_9_continues_exactly(recipe, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    assert main(["pretrain", "--recipe", str(recipe), "--out", str(straight), "--progress", "false"]) == 0
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, torch; torch.set_num_threads(1); from t5lab.cli import main; "
         "sys.exit(main(sys.argv[1:]))", "pretrain", "--recipe", str(recipe), "--out", str(killed)],
        env=env, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in child.stderr:  # progress lines arrive after each step; kill mid-run, after step 7
            if line.startswith("step 7/12"):
                child.send_signal(signal.SIGKILL)
                break
        child.wait(timeout=120)
    finally:
        child.kill()
    assert child.returncode == -signal.SIGKILL
    assert not (killed / "final").exists()
    assert main(["pretrain", "--out", str(killed), "--resume", "true", "--progress", "false"]) == 0
    assert _losses(killed) == _losses(straight)  # bit for bit
    a = read_metrics(killed / "metrics.jsonl")
    b = read_metrics(straight / "metrics.jsonl")
    assert [r["eval_loss"] for r in a if "eval_loss" in r] == [r["eval_loss"] for r in b if "eval_loss" in r]


def _fails(capsys, *argv: str) -> str:
    assert main(["pretrain", *argv, "--progress", "false"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("t5lab: error: ") and "\n" not in err
    return err


def test_a_fresh_run_never_overwrites_an_existing_one(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoints" / "step-00000003").mkdir(parents=True)
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert "already holds a run" in _fails(capsys, "--recipe", str(recipe), "--out", str(out))
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'


def test_a_run_killed_before_its_first_checkpoint_is_never_wedged(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    assert main(["pretrain", "--recipe", str(recipe), "--out", str(out), "--resume", "--steps", "2",
                 "--progress", "false"]) == 0
    assert "holds no checkpoint" in capsys.readouterr().err
    assert [step for step, _ in _losses(out)] == [1, 2]
    assert main(["pretrain", "--recipe", str(recipe), "--out", str(tmp_path / "new"), "--resume", "--steps", "1",
                 "--progress", "false"]) == 0
    assert "no checkpoint to resume from; starting a new run" in capsys.readouterr().err


def test_bad_inputs_are_one_line_errors(recipe, tmp_path, capsys):
    base = ["--recipe", str(recipe)]
    assert "no such file" in _fails(capsys, *base, "--data", str(tmp_path / "missing.txt"), "--out", str(tmp_path / "a"))
    (tmp_path / "empty.txt").write_text("")
    assert "no documents" in _fails(capsys, *base, "--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "b"))
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 50)
    assert "not UTF-8" in _fails(capsys, *base, "--data", str(tmp_path / "latin1.txt"), "--out", str(tmp_path / "c"))
    assert "'weights'=(0.8, 0.2): expected one weight per source (1 source)" in _fails(
        capsys, *base, "--data", str(tmp_path / "latin1.txt"), "--data-weights", "0.8", "0.2", "--out", str(tmp_path / "w"))
    small = tmp_path / "small-vocab.yaml"
    small.write_text(recipe.read_text().replace("dropout: 0.1}", "dropout: 0.1, vocab_size: 150}"))
    assert "tokenizer has 164 ids" in _fails(capsys, "--recipe", str(small), "--out", str(tmp_path / "d"))
    assert "inputs_length" in _fails(capsys, *base, "--inputs_length", "4", "--out", str(tmp_path / "e"))
    assert "batch_size" in _fails(capsys, *base, "--batch_size", "3", "--out", str(tmp_path / "f"))
    typo = tmp_path / "typo.yaml"
    typo.write_text(recipe.read_text().replace("warmup: 3", "warmpu: 3"))
    assert "train.warmpu" in _fails(capsys, "--recipe", str(typo), "--out", str(tmp_path / "g"))
    assert "not a packaged recipe" in _fails(capsys, "--recipe", "no-such-recipe", "--out", str(tmp_path / "h"))
    assert not any((tmp_path / n / "final").exists() for n in "abcdefgh")


def test_packaged_recipes_parse():
    from t5lab.recipes.recipe_files import find_recipe, packaged_recipes, parse_recipe

    assert {"quickstart-cpu", "nanot5-base", "t5-efficient-tiny", "t5-efficient-small"} <= set(packaged_recipes())
    nano = parse_recipe(*find_recipe("nanot5-base"))
    t = nano.train
    assert (t.batch_size, t.steps, t.optimizer, t.lr, t.schedule, t.warmup, t.final_lr, t.precision) == (
        128, 65536, "adamwscale", 0.02, "cosine", 10000, 1e-5, "bf16")
    assert nano.model == "t5-v1_1-base" and nano.model_overrides == {"dropout": 0.0}
    assert nano.data.inputs_length == 512
    quick = parse_recipe(*find_recipe("quickstart-cpu"), {"train": {"steps": 7}, "model": "t5-efficient-mini"})
    assert quick.train.steps == 7 and quick.model_overrides == {"dropout": 0.0}


def test_own_data_with_the_builtin_tokenizer_says_so(recipe, tmp_path, capsys):
    corpus = recipe.parent / "corpus.txt"
    assert main(["pretrain", "--recipe", str(recipe), "--tokenizer", "builtin", "--data", str(corpus),
                 "--out", str(tmp_path / "run"), "--steps", "1", "--progress", "false", "--precision", "fp32"]) == 0
    assert "the tokenizer is the built-in one" in capsys.readouterr().err
    assert main(["pretrain", "--recipe", str(recipe), "--data", str(corpus), "--out", str(tmp_path / "own"),
                 "--steps", "1", "--progress", "false", "--precision", "fp32"]) == 0
    assert "built-in one" not in capsys.readouterr().err  # the recipe's own tokenizer: nothing to say
