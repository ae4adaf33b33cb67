"""`torchrun ... -m t5lab pretrain`: the real command on 2 CPU ranks, and a world of two "nodes" on localhost."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest

from distributed.conftest import WORKER, torchrun, torchrun_env
from distributed.worker import run
from t5lab.cli import main
from t5lab.train.metrics import read_metrics

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from recipes.test_pretrain import TINY_RECIPE, _sentences

    from t5lab.data.tokenizer import Tokenizer

    root = tmp_path_factory.mktemp("tiny-recipe")
    lines = _sentences(0, 300)
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    Tokenizer.train(lines, 64, root / "tokenizer")
    path = root / "tiny.yaml"
    path.write_text(TINY_RECIPE.format(tokenizer=root / "tokenizer", corpus=root / "corpus.txt"))
    return path


def _losses(out):
    return {r["step"]: r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r}


def _pretrain(recipe, out, *flags):
    return ["-m", "t5lab", "pretrain", "--recipe", str(recipe), "--out", str(out), "--steps", "4",
            "--progress", "false", *flags]


def test_pretrain_under_torchrun_reports_and_exports_once(recipe, tmp_path):
    done = torchrun(_pretrain(recipe, tmp_path / "run", "--parallel", "fsdp", "--precision", "fp32"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("trained t5-efficient-tiny") == 1  # rank 0 alone reports
    assert sorted(_losses(tmp_path / "run")) == [1, 2, 3, 4]
    assert (tmp_path / "run" / "final" / "model.safetensors").is_file()
    from t5lab.interop.hf import load_pretrained

    assert load_pretrained(tmp_path / "run" / "final").config.d_model == 32  # FSDP's shards gathered into one


def test_a_global_batch_the_ranks_cannot_split_is_a_one_line_error(recipe, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it; the check comes before any process group
    monkeypatch.setenv("RANK", "1")
    assert main(_pretrain(recipe, tmp_path / "run", "--batch-size", "6")[2:]) == 1  # 2 ranks x grad_accum 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "t5lab: error: batch_size=6: expected a multiple of world size x grad_accum = 2 x 2" in error


@pytest.mark.slow
def test_pretrain_on_two_ranks_equals_one_rank(recipe, tmp_path):
    flags = ("--precision", "fp32", "--dropout", "0")
    assert main(_pretrain(recipe, tmp_path / "one", *flags)[2:]) == 0
    done = torchrun(_pretrain(recipe, tmp_path / "two", *flags))
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert one.keys() == two.keys() and max(abs(one[k] - two[k]) for k in one) <= TOLERANCE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # two torchrun agents rendezvous over c10d: ~40 s on 2 cores
def test_two_nodes_on_localhost_train_as_one_rank(tmp_path):
    run({"out": str(tmp_path / "one")})
    spec = tmp_path / "runs.json"
    spec.write_text(f'[{{"out": "{tmp_path / "two"}"}}]')
    endpoint = f"localhost:{_free_port()}"
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", f"--node-rank={rank}", "--nproc-per-node",
         "1", "--rdzv-backend", "c10d", f"--rdzv-endpoint={endpoint}", "--rdzv-id", "t5lab-test", str(WORKER),
         str(spec)], env=torchrun_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for rank in (0, 1)]
    for node in nodes:
        _, err = node.communicate(timeout=300)
        assert node.returncode == 0, err[-3000:]
    one, two = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert one.keys() == two.keys() and max(abs(one[k] - two[k]) for k in one) <= TOLERANCE


@pytest.mark.slow  # two fine-tuning runs, one under torchrun: ~30 s on 2 cores
def test_finetune_on_two_ranks_equals_one_rank(shared_data, spiece_model, tmp_path):
    """Each rank trains on its rows of every micro-batch (`RankSlice`); generation-based evaluation runs on
    every rank and rank 0 alone exports the best model."""
    args = ["finetune", "--task", "glue/rte", "--model", "t5-efficient-tiny-nl1-dm32-ff48-kv8-nh2", "--tokenizer",
            str(spiece_model), "--data-dir", str(shared_data), "--steps", "4", "--batch-size", "4", "--grad-accum",
            "2", "--eval-every", "2", "--eval-limit", "6", "--max-input-length", "32", "--log-every", "1",
            "--precision", "fp32", "--dropout", "0", "--progress", "false"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    done = torchrun(["-m", "t5lab", *args, "--out", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [read_metrics(tmp_path / name / "metrics.jsonl") for name in ("one", "two")]
    assert [r["step"] for r in rows[0]] == [r["step"] for r in rows[1]] == [1, 2, 2, 3, 4, 4]
    for a, b in zip(*rows, strict=True):
        assert abs(a.get("loss", a.get("eval_loss")) - b.get("loss", b.get("eval_loss"))) <= TOLERANCE
    assert (tmp_path / "two" / "best" / "model.safetensors").is_file()
