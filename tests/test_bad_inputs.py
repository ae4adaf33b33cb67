"""A catalogue of user mistakes and faults (issue 19): each gets one line naming what is wrong, never a
traceback, a silent acceptance or a damaged run.

Through the CLI entry point in-process (`t5lab.cli.main`, so the suite pays for one torch import) and
through the API. Each CLI case asserts the exit code and that the error is one line (the last on stderr)
holding the expected words. Fault injection: a run killed by SIGKILL inside a checkpoint write at each of
its 10 positions resumes exactly; disk full on a small tmpfs (root only); a short hypothesis fuzz of the
loaders, where only `T5LabError` may escape.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pickle
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from shared_test_data import shared_data_dir

from t5lab import ModelConfig, T5LabError, build_model, from_name
from t5lab.cli import main
from t5lab.data.tokenizer import Tokenizer
from t5lab.files import write_atomic
from t5lab.generate import generate
from t5lab.interop.hf import load_pretrained, save_pretrained
from t5lab.interop.hf_config import from_hf
from t5lab.train.checkpoint import (
    is_finite_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from t5lab.train.metrics import read_metrics
from t5lab.train.run_lock import run_folder_lock

REPO = Path(__file__).resolve().parents[1]

RECIPE = """
model: t5-efficient-tiny
model_overrides: {{d_model: 16, d_ff: 24, num_heads: 2, d_kv: 8, num_encoder_layers: 1, num_decoder_layers: 1,
                  dropout: 0.0}}
tokenizer: {tokenizer}
data: {{sources: [{corpus}], inputs_length: 24, eval_fraction: 0.0, shuffle_buffer: 20}}
train: {{steps: 4, batch_size: 2, optimizer: adamw, lr: 0.01, warmup: 1, eval_every: 0, save_every: 2,
         log_every: 1, device: cpu, precision: fp32, progress: false}}
"""


# ---------------------------------------------------------------------------------------------------------
# Fixtures: a tiny tokenizer, recipe, checkpoint folder and finished run, made once for the module.
@pytest.fixture(scope="module")
def lab(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lab")
    rng = random.Random(0)
    words = ["the", "cat", "a", "dog", "my", "friend", "teacher", "neighbour", "old", "man", "small", "bird", "engineer", "sees", "likes", "follows", "helps", "calls", "visits", "paints", "builds", "house", "river", "red", "car", "garden", "apple", "tall", "tree", "blue", "boat", "library", "every", "morning", "in", "rain", "after", "lunch", "with", "great", "care", "before", "dinner", "on", "sunday"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(6, 14))) + "." for _ in range(300)]
    (root / "corpus.txt").write_text("\n".join(lines) + "\n")
    tok = Tokenizer.train(lines, 32, root / "tokenizer")  # 32 pieces + 100 sentinels = 132 ids
    (root / "recipe.yaml").write_text(RECIPE.format(tokenizer=root / "tokenizer", corpus=root / "corpus.txt"))
    config = from_name("t5-efficient-tiny").replace(
        vocab_size=256, d_model=16, d_ff=24, num_heads=2, d_kv=8, num_encoder_layers=1, num_decoder_layers=1)
    save_pretrained(build_model(config, seed=0), root / "model", tokenizer=tok)
    with _quiet():
        assert main(["pretrain", "--recipe", str(root / "recipe.yaml"), "--out", str(root / "run")]) == 0
    (root / "a-file").write_text("not a folder\n")
    return {"root": root, "recipe": root / "recipe.yaml", "model": root / "model", "run": root / "run",
            "tokenizer": root / "tokenizer", "corpus": root / "corpus.txt", "file": root / "a-file"}


class _quiet:
    """Silence stdout/stderr of a CLI call made only to set a fixture up."""

    def __enter__(self):
        self.saved = sys.stdout, sys.stderr
        sys.stdout = sys.stderr = open(os.devnull, "w")  # noqa: SIM115

    def __exit__(self, *exc):
        sys.stdout.close()
        sys.stdout, sys.stderr = self.saved


def cli(capsys, *argv: str) -> tuple[int, str]:
    """Run `t5lab ARGV` in-process: (exit code, stderr)."""
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    return code, capsys.readouterr().err


def one_line(capsys, expected: str, *argv: str, code: int = 1) -> str:
    """Assert `t5lab ARGV` fails with `code` and ONE error line (the last on stderr) containing `expected`."""
    got, err = cli(capsys, *argv)
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert got == code, err
    assert lines and lines[-1].startswith("t5lab: error:"), err
    errors = [line for line in lines if "error" in line.lower()]
    assert len(errors) == 1, err
    assert expected in lines[-1], lines[-1]
    return lines[-1]


def api_error(expected: str, fn, *args, **kwargs) -> str:
    """Assert the API call raises a one-line `T5LabError` containing `expected`."""
    with pytest.raises(T5LabError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and expected in message, message
    return message


def _run_copy(lab, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(lab["run"], run)
    return run


# ---------------------------------------------------------------------------------------------------------
# 1. Missing or wrong files, through the CLI
MISSING = "/nonexistent/t5lab-missing"


@pytest.mark.parametrize("argv, expected", [
    (["pretrain", "--data", MISSING + ".txt", "--steps", "1"], "no such file"),
    (["pretrain", "--tokenizer", MISSING + ".model", "--steps", "1"], "no such tokenizer"),
    (["pretrain", "--recipe", MISSING + ".yaml"], MISSING),
    (["pretrain", "--recipe", "no-such-recipe"], "no-such-recipe"),
    (["pretrain", "--model", MISSING + "/folder"], MISSING),
    (["generate", "--model", MISSING, "hello"], "no such checkpoint folder"),
    (["evaluate", "--task", "glue/sst2", "--model", MISSING], MISSING),
    (["finetune", "--task", "glue/sst2", "--model", MISSING], MISSING),
    (["pareto", MISSING + ".jsonl"], "no such file"),
    (["suggest", "--params", "1e6", "--results", MISSING + ".jsonl"], MISSING),
])
def test_missing_files_are_one_line(capsys, tmp_path, argv, expected):
    out = ["--out", tmp_path / "out"] if argv[0] in ("pretrain", "finetune") else []
    one_line(capsys, expected, *argv, *_task_data(argv), *out)


def _task_data(argv: list) -> list:
    """A task command finds its data folder before it loads the model: give it the real one (skip without it),
    so that the fault under test is the one reported."""
    if argv[0] not in ("evaluate", "finetune") or "--task" not in argv:
        return []
    if not shared_data_dir().is_dir():
        pytest.skip(f"real data folder {shared_data_dir()} is absent")
    return ["--data-dir", shared_data_dir()]


# ---------------------------------------------------------------------------------------------------------
# 2. Malformed files
def _folder_with(lab, tmp_path, name: str, content: bytes) -> Path:
    folder = tmp_path / "ckpt"
    shutil.copytree(lab["model"], folder)
    (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize("name, content, expected", [
    ("config.json", b"{not json", "not valid JSON"),
    ("config.json", b"[1, 2]", "expected a JSON object"),
    ("config.json", b'{"model_type": "bert"}', "not a T5-family model"),
    ("model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}", "not a readable safetensors"),
    ("model.safetensors", b"\xff" * 4096, "not a readable safetensors"),
    ("spiece.model", b"garbage", "not a valid SentencePiece model"),
])
def test_malformed_checkpoint_files_are_one_line(capsys, lab, tmp_path, name, content, expected):
    folder = _folder_with(lab, tmp_path, name, content)
    one_line(capsys, expected, "generate", "--model", folder, "--device", "cpu", "hello")


def test_a_config_json_with_a_wrongly_typed_field_is_one_line(capsys, lab, tmp_path):
    fields = json.loads((lab["model"] / "config.json").read_text())
    folder = _folder_with(lab, tmp_path, "config.json", json.dumps({**fields, "d_model": True}).encode())
    one_line(capsys, "'d_model'=True: expected an integer", "generate", "--model", folder, "hello")


def test_truncated_safetensors_is_one_line(capsys, lab, tmp_path):
    data = (lab["model"] / "model.safetensors").read_bytes()
    folder = _folder_with(lab, tmp_path, "model.safetensors", data[: len(data) // 2])
    one_line(capsys, "truncated or corrupt", "generate", "--model", folder, "hello")


def test_weights_missing_is_one_line(capsys, lab, tmp_path):
    folder = _folder_with(lab, tmp_path, "x", b"")
    (folder / "model.safetensors").unlink()
    one_line(capsys, "no weights file", "generate", "--model", folder, "hello")


def test_a_missing_shard_is_one_line(capsys, lab, tmp_path):
    folder = _folder_with(lab, tmp_path, "model.safetensors.index.json",
                          json.dumps({"weight_map": {"shared.weight": "model-00001-of-00002.safetensors"}}).encode())
    (folder / "model.safetensors").unlink()
    one_line(capsys, "does not exist", "generate", "--model", folder, "hello")


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/t5lab-pwned",))


def test_a_malicious_pickle_is_refused_in_one_line_without_torchs_advice(capsys, lab, tmp_path):
    folder = _folder_with(lab, tmp_path, "x", b"")
    (folder / "model.safetensors").unlink()
    with (folder / "pytorch_model.bin").open("wb") as f:
        pickle.dump({"shared.weight": _Evil()}, f, protocol=2)  # torch.load warns about newer protocols
    line = one_line(capsys, "refused by torch.load(weights_only=True)", "generate", "--model", folder, "hello")
    assert "weights_only=False" not in line and "weights_only` to `False" not in line
    assert not Path("/tmp/t5lab-pwned").exists()


@pytest.mark.parametrize("text, expected", [
    ("train: {steps: [1, 2", "recipe"),
    ("train: {stepz: 3}", "stepz"),
    ("bogus_section: {}", "bogus_section"),
    ("train: {steps: -1}", "steps"),
])
def test_malformed_recipes_are_one_line(capsys, tmp_path, text, expected):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(text + "\n")
    one_line(capsys, expected, "pretrain", "--recipe", recipe, "--out", tmp_path / "out")


@pytest.mark.parametrize("content, expected", [
    (b"", "no documents"),
    ("caf\xe9 au lait\n".encode("latin-1") * 50, "not UTF-8"),
])
def test_bad_corpora_are_one_line(capsys, lab, tmp_path, content, expected):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(content)
    one_line(capsys, expected, "pretrain", "--recipe", lab["recipe"], "--data", corpus, "--out", tmp_path / "o")


def test_invalid_utf8_in_a_corpus_fails_naming_file_and_line_when_read(capsys, lab, tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(b"a fine first line\ncaf\xe9 au lait\n" + lab["corpus"].read_bytes() * 8)
    line = one_line(capsys, "UTF-8", "pretrain", "--recipe", lab["recipe"], "--data", corpus,
                    "--out", tmp_path / "o", "--steps", "1")
    assert f"{corpus}:2" in line


def test_corrupt_parquet_is_one_line(capsys, lab, tmp_path):
    corpus = tmp_path / "corpus.parquet"
    corpus.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")
    one_line(capsys, str(corpus), "pretrain", "--recipe", lab["recipe"], "--data", corpus, "--out", tmp_path / "o")


def test_task_tsv_with_invalid_utf8_names_file_and_line(capsys, lab, tmp_path):
    data = tmp_path / "data" / "glue" / "sst2"
    data.mkdir(parents=True)
    (data / "dev.tsv").write_bytes(b"sentence\tlabel\na fine film\t1\n\xff\xfe broken\t0\n")
    shutil.copy(data / "dev.tsv", data / "train.tsv")
    one_line(capsys, "dev.tsv:3: not valid UTF-8", "evaluate", "--task", "glue/sst2", "--model", lab["model"],
             "--data-dir", tmp_path / "data", "--limit", "2", "--device", "cpu")


# ---------------------------------------------------------------------------------------------------------
# 3. Bad names and values
@pytest.mark.parametrize("argv, expected", [
    (["shapes", "t5-efficent-tiny"], "did you mean"),
    (["shapes", "t5-efficient-tiny-nl4-nl6"], "t5-efficient-tiny-nl4-nl6"),
    (["shapes", "t5-efficient-tiny-moe0"], "-moeN"),
    (["shapes", "switch-base-7"], "switch-base-7"),
    (["bench", "t5-tiny"], "t5-tiny"),
    (["generate", "--model", "t5-efficient-tiny-dm100000000", "hello"], "bytes"),
    (["finetune", "--task", "glue/nope", "--model", "t5-efficient-tiny"], "unknown task"),
    (["evaluate", "--task", "glue/sst2", "--model", "t5-efficient-tiny", "--split", "nope"], "nope"),
])
def test_bad_names_are_one_line(capsys, argv, expected):
    one_line(capsys, expected, *argv, *_task_data(argv))


@pytest.mark.parametrize("flags, expected", [
    (["--batch_size", "3", "--grad_accum", "2"], "batch_size"),
    (["--inputs_length", "4"], "inputs_length"),
    (["--optimizer", "sgd"], "sgd"),
    (["--precision", "fp8"], "fp8"),
    (["--device", "banana"], "banana"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "cuda:999"], "cuda"),
    (["--steps", "0"], "steps"),
    (["--dropout", "1.5"], "dropout"),
])
def test_bad_pretrain_values_are_one_line(capsys, lab, tmp_path, flags, expected):
    one_line(capsys, expected, "pretrain", "--recipe", lab["recipe"], *flags, "--out", tmp_path / "o")


@pytest.mark.parametrize("flags, expected", [
    (["--num-beams", "0"], "num_beams"),
    (["--top-p", "2"], "top_p"),
    (["--temperature", "0"], "temperature"),
    (["--max-new-tokens", "0"], "max_new_tokens"),
    (["--top-k", "-1"], "top_k"),
    (["--device", "banana"], "banana"),
    (["--device", "cuda"] if not torch.cuda.is_available() else ["--device", "cuda:999"], "cuda"),
])
def test_bad_generate_values_are_one_line(capsys, lab, flags, expected):
    one_line(capsys, expected, "generate", "--model", lab["model"], *flags, "hello")


@pytest.mark.parametrize("argv, expected", [
    (["pretrain", "--lr", "fast"], "--lr"),
    (["pretrain", "--lr", "inf"], "--lr"),
    (["suggest", "--params", "lots"], "--params"),
    (["pretrain", "--recipe", "scale-study-cpu"], "scale-study"),
])
def test_argument_type_errors_name_the_flag_in_one_line(capsys, tmp_path, argv, expected):
    _, err = cli(capsys, *argv, "--out", tmp_path / "o") if argv[0] == "pretrain" else cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) <= 2 and expected in lines[-1], err


def test_a_small_lr_does_not_blame_a_field_the_user_never_set(capsys, tmp_path):
    code, err = cli(capsys, "pretrain", "--lr", "1e-6", "--steps", "1", "--out", tmp_path / "o")
    assert "final_lr" not in err


def test_help_does_not_import_torch():
    code = ("import sys\nfrom t5lab.cli import main\ntry:\n    main(['pretrain', '--help'])\nexcept SystemExit:\n"
            "    pass\nassert 'torch' not in sys.modules, 'torch imported'\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, timeout=120)


# ---------------------------------------------------------------------------------------------------------
# 4. Run folders: never damaged, never wedged, never shared
def test_out_naming_a_file_is_one_line(capsys, lab):
    one_line(capsys, "not a folder", "pretrain", "--recipe", lab["recipe"], "--out", lab["file"])


def test_evaluate_out_naming_a_file_is_one_line(capsys, lab, shared_data):
    one_line(capsys, str(lab["file"]), "evaluate", "--task", "glue/sst2", "--model", lab["model"],
             "--data-dir", shared_data, "--out", lab["file"], "--limit", "1", "--device", "cpu")


def test_a_fresh_run_never_overwrites_a_run(capsys, lab, tmp_path):
    run = _run_copy(lab, tmp_path)
    before = (run / "metrics.jsonl").read_bytes()
    one_line(capsys, "already holds a run", "pretrain", "--recipe", lab["recipe"], "--out", run)
    assert (run / "metrics.jsonl").read_bytes() == before


def test_a_failed_resume_with_overrides_leaves_the_recipe_alone(capsys, lab, tmp_path):
    run = _run_copy(lab, tmp_path)
    before = (run / "recipe.yaml").read_bytes()
    one_line(capsys, "another model", "pretrain", "--out", run, "--resume", "--model", "t5-efficient-mini")
    assert (run / "recipe.yaml").read_bytes() == before
    assert cli(capsys, "pretrain", "--out", run, "--resume", "--steps", "5")[0] == 0  # a plain resume still works


def test_a_second_run_on_a_locked_folder_is_one_line_naming_the_holder(capsys, lab, tmp_path):
    run = _run_copy(lab, tmp_path)
    with run_folder_lock(run):
        line = one_line(capsys, "another run", "pretrain", "--out", run, "--resume")
    assert f"pid {os.getpid()}" in line
    assert cli(capsys, "pretrain", "--out", run, "--resume", "--steps", "5")[0] == 0  # released


def test_a_corrupt_latest_checkpoint_is_reported_and_the_intact_one_used(capsys, lab, tmp_path):
    run = _run_copy(lab, tmp_path)
    older, latest = list_checkpoints(run / "checkpoints")
    with (latest / "model.safetensors").open("r+b") as f:
        f.seek(200)
        f.write(b"\xff" * 4096)
    code, err = cli(capsys, "pretrain", "--out", run, "--resume", "--steps", "6")
    assert code == 0, err
    assert f"skipping checkpoint {latest.name}" in err and "corrupt" in err
    assert f"using the newest intact checkpoint instead: {older}" in err
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl") if "loss" in r] == [1, 2, 3, 4, 5, 6]


def test_an_unreadable_latest_checkpoint_falls_back(capsys, lab, tmp_path):
    run = _run_copy(lab, tmp_path)
    older, latest = list_checkpoints(run / "checkpoints")
    (latest / "meta.json").write_text("{truncated")
    code, err = cli(capsys, "pretrain", "--out", run, "--resume", "--steps", "5")
    assert code == 0 and "meta.json: unreadable" in err and str(older) in err, err


def test_no_intact_checkpoint_is_one_line(capsys, lab, tmp_path):
    run = _run_copy(lab, tmp_path)
    for path in list_checkpoints(run / "checkpoints"):
        (path / "training.pt").write_bytes(b"torn")
    one_line(capsys, "none of its 2 checkpoints is intact", "pretrain", "--out", run, "--resume")


def test_a_run_killed_before_its_first_checkpoint_resumes_or_restarts(capsys, lab, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(lab["run"] / "recipe.yaml", run / "recipe.yaml")
    (run / "metrics.jsonl").write_text('{"step": 1, "loss": 9.0}\n')
    code, err = cli(capsys, "pretrain", "--out", run, "--resume", "--steps", "1")
    assert code == 0 and "starting it afresh" in err, err
    shutil.rmtree(run / "checkpoints")
    code, err = cli(capsys, "pretrain", "--recipe", lab["recipe"], "--out", run, "--steps", "1")
    assert code == 0 and "starting it afresh" in err, err


def test_leftovers_of_killed_writes_are_cleaned(lab, tmp_path):
    dead = _dead_pid()
    model = load_pretrained(lab["model"])
    final = tmp_path / "final"
    stale = [tmp_path / f".final.tmp-{dead}-abcd1234", tmp_path / "checkpoints" / f".tmp-step-00000002-{dead}-x1"]
    for folder in stale:
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"half")
    live = tmp_path / f".final.tmp-{os.getpid()}-live0000"  # a write in progress elsewhere in this process
    live.mkdir()
    save_pretrained(model, final)
    save_checkpoint(tmp_path / "checkpoints", 4, model, {"loop": {}})
    assert not any(p.exists() for p in stale) and live.exists()


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# ---------------------------------------------------------------------------------------------------------
# 5. Checkpoints: verified, finite, readable by all
def test_checkpoint_checksums_catch_a_changed_byte(lab, tmp_path):
    model = load_pretrained(lab["model"])
    path = save_checkpoint(tmp_path, 2, model, {"loop": {"step": 2}})
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 1  # a flipped bit inside a weight: still a valid safetensors file
    (path / "model.safetensors").write_bytes(bytes(data))
    api_error("model.safetensors: corrupt", load_checkpoint, path, model)
    assert latest_checkpoint(tmp_path, report=lambda line: None) is None


def test_last_good_checkpoint_is_finite(lab, tmp_path):
    model = load_pretrained(lab["model"])
    good = save_checkpoint(tmp_path, 2, model, {"loop": {}})
    with torch.no_grad():
        model.shared.weight[0, 0] = float("nan")
    bad = save_checkpoint(tmp_path, 4, model, {"loop": {}})
    assert is_finite_checkpoint(good) and not is_finite_checkpoint(bad)
    reports: list[str] = []
    assert latest_checkpoint(tmp_path, report=reports.append) == good
    assert reports == [f"skipping checkpoint {bad.name}: {bad}: its weights hold inf or NaN",
                       f"using the newest intact checkpoint instead: {good}"]


def test_written_files_get_normal_modes(lab, tmp_path):
    old = os.umask(0o022)
    try:
        model = load_pretrained(lab["model"])
        save_pretrained(model, tmp_path / "final", tokenizer=Tokenizer.from_file(lab["tokenizer"]))
        write_atomic(tmp_path / "x.json", b"{}")
        path = save_checkpoint(tmp_path / "ck", 1, model, {"loop": {}})
    finally:
        os.umask(old)
    for file in [*(tmp_path / "final").iterdir(), tmp_path / "x.json", *path.iterdir()]:
        assert file.stat().st_mode & 0o777 == 0o644, file
    for folder in (tmp_path / "final", path):
        assert folder.stat().st_mode & 0o777 == 0o755, folder


# ---------------------------------------------------------------------------------------------------------
# 6. OS failures: one line naming the path and the cause
@pytest.mark.parametrize("error, cause", [
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
    (NotADirectoryError(errno.ENOTDIR, "Not a directory"), "a file is where a folder is expected"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1088 vs 1024"), "no space left"),
    (RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"), "no space left"),
])
def test_os_failures_while_saving_a_checkpoint_are_one_line(lab, tmp_path, monkeypatch, error, cause):
    import t5lab.train.checkpoint as checkpoint

    def fails(obj, f):
        raise error

    monkeypatch.setattr(checkpoint.torch, "save", fails)
    model = load_pretrained(lab["model"])
    message = api_error(cause, save_checkpoint, tmp_path / "ck", 2, model, {"loop": {}})
    assert str(tmp_path / "ck") in message
    assert [p.name for p in (tmp_path / "ck").iterdir()] == []  # nothing half-written left


def test_safetensors_full_disk_while_saving_a_model_is_one_line(lab, tmp_path, monkeypatch):
    from t5lab.interop import hf

    def fails(*args, **kwargs):
        raise Exception('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                        'left on device" })')

    monkeypatch.setattr(hf, "save_file", fails)
    api_error("no space left on device", save_pretrained, load_pretrained(lab["model"]), tmp_path / "final")
    assert list(tmp_path.iterdir()) == []


def test_a_file_where_the_out_folder_should_be_is_one_line(capsys, lab, tmp_path):
    out = lab["file"] / "run"  # a path through a file
    line = one_line(capsys, "a file is where a folder is expected", "pretrain", "--recipe", lab["recipe"],
                    "--out", out)
    assert str(lab["file"]) in line


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_on_out_is_one_line(capsys, lab, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    one_line(capsys, "permission denied", "pretrain", "--recipe", lab["recipe"], "--out", locked / "run")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs (root and a working `mount` only), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a tmpfs")
    point = tmp_path / "small"
    point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(point)],
                      capture_output=True).returncode != 0:
        pytest.skip("mount -t tmpfs is not permitted here")
    yield point
    subprocess.run(["umount", str(point)], check=False)


def test_disk_full_on_a_real_small_file_system(lab, small_tmpfs):
    big = build_model(from_name("t5-efficient-tiny").replace(
        vocab_size=2048, d_model=64, d_ff=64, num_heads=2, d_kv=8, num_encoder_layers=1, num_decoder_layers=1))
    api_error("no space left on device", save_pretrained, big, small_tmpfs / "final")
    api_error("no space left on device", save_checkpoint, small_tmpfs / "ck", 1, big, {"loop": {}})
    assert [p.name for p in small_tmpfs.iterdir()] == ["ck"] and not any((small_tmpfs / "ck").iterdir())


def test_read_only_file_system_is_one_line(capsys, lab, small_tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    one_line(capsys, "read-only file system", "pretrain", "--recipe", lab["recipe"], "--out", small_tmpfs / "r")


# ---------------------------------------------------------------------------------------------------------
# 7. The API validates its arguments
@pytest.mark.parametrize("fields, expected", [
    (dict(d_model=True), "'d_model'=True: expected an integer"),
    (dict(d_model=512.0), "'d_model'=512.0: expected an integer"),
    (dict(vocab_size=1), "'eos_token_id'=1"),
    (dict(decoder_start_token_id=40000), "decoder_start_token_id"),
    (dict(relative_attention_max_distance=0), "relative_attention_max_distance"),
    (dict(relative_attention_max_distance=16), "relative_attention_max_distance"),
    (dict(dropout=float("nan")), "dropout"),
    (dict(tie_embeddings="yes"), "tie_embeddings"),
    (dict(num_heads="8"), "num_heads"),
    (dict(num_kv_heads=3), "num_kv_heads"),
])
def test_model_config_fields_are_validated(fields, expected):
    api_error(expected, ModelConfig, **fields)


def test_from_name_with_an_unknown_field_is_one_line():
    api_error("no field 'bogus'", from_name, "t5-efficient-tiny", bogus=1)
    api_error("did you mean 'd_model'", from_name, "t5-efficient-tiny", d_modle=8)


def test_build_model_from_a_name_string_is_one_line():
    api_error("build_model(from_name('t5-efficient-tiny'))", build_model, "t5-efficient-tiny")


def test_a_huge_shape_is_refused_before_allocating():
    message = api_error("bytes", build_model, from_name("t5-efficient-tiny-dm100000000"))
    assert "available on cpu" in message


@pytest.fixture(scope="module")
def small_model(lab):
    return load_pretrained(lab["model"])


@pytest.mark.parametrize("ids, options, expected", [
    (torch.tensor([[5, 256]]), {}, "token id 256, outside the model's vocabulary [0, 256)"),
    (torch.tensor([[-3, 5]]), {}, "token id -3"),
    (torch.zeros(1, 0, dtype=torch.long), {}, "at least one token"),
    (torch.zeros(0, 4, dtype=torch.long), {}, "at least one token"),
    (torch.tensor([[0.5, 1.0]]), {}, "integer tensor"),
    (torch.tensor([5, 6]), {}, "expected [batch, length]"),
    (torch.full((1, 40), 5), dict(max_input_length=32), "40 tokens long, more than max_input_length=32"),
    (torch.tensor([[5, 6]]), dict(eos_token_id=999), "eos_token_id=999"),
    (torch.tensor([[5, 6]]), dict(bogus=1), "bogus"),
])
def test_generate_validates_its_arguments(small_model, ids, options, expected):
    api_error(expected, generate, small_model, ids, max_new_tokens=2, **options)


def test_generate_refuses_a_long_input_by_default_naming_the_limit(small_model):
    api_error("max_input_length=4096", generate, small_model, torch.full((1, 5000), 5), max_new_tokens=1)


def test_tokenizer_size_is_checked_against_the_model_both_ways(lab):
    tok = Tokenizer.from_file(lab["tokenizer"])  # 132 ids
    tok.check_fits(256, "m")  # 124 rows of padding: fine
    api_error("tokenizer has 132 ids", tok.check_fits, 128, "m")
    api_error("belongs to another model", tok.check_fits, 32128, "m")


def test_a_foreign_smaller_tokenizer_is_refused_by_pretrain(capsys, lab, tmp_path):
    big = tmp_path / "big"
    save_pretrained(build_model(load_pretrained(lab["model"]).config.replace(vocab_size=1024), seed=0), big)
    one_line(capsys, "belongs to another model", "pretrain", "--recipe", lab["recipe"], "--model", big,
             "--tokenizer", lab["tokenizer"], "--out", tmp_path / "o")


def test_load_pretrained_on_a_bad_device_is_one_line(lab):
    api_error("'banana'", load_pretrained, lab["model"], device="banana")


# ---------------------------------------------------------------------------------------------------------
# 8. Fault injection: SIGKILL inside a checkpoint write, at each of its 10 positions, then an exact resume
def _kill_then_resume(lab, tmp_path, position: int) -> None:
    run = tmp_path / f"run-{position}"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "T5LAB_TEST_KILL_IN_CHECKPOINT": str(position)}
    proc = subprocess.run(
        [sys.executable, "-m", "t5lab.cli", "pretrain", "--recipe", str(lab["recipe"]), "--out", str(run)],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]  # killed inside the first checkpoint write
    with _quiet():
        assert main(["pretrain", "--out", str(run), "--resume"]) == 0
    reference = read_metrics(lab["run"] / "metrics.jsonl")
    assert [(r["step"], r["loss"]) for r in read_metrics(run / "metrics.jsonl") if "loss" in r] == [
        (r["step"], r["loss"]) for r in reference if "loss" in r]
    ours, theirs = load_pretrained(run / "final"), load_pretrained(lab["run"] / "final")
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("position", [
    pytest.param(p, marks=() if p == 5 else pytest.mark.slow) for p in range(10)])
def test_a_kill_inside_a_checkpoint_write_resumes_exactly(lab, tmp_path, position):
    _kill_then_resume(lab, tmp_path, position)


# ---------------------------------------------------------------------------------------------------------
# 9. A short fuzz of the loaders: only T5LabError may escape
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
HF_KEYS = ["model_type", "d_model", "d_ff", "d_kv", "num_heads", "num_layers", "num_decoder_layers", "vocab_size",
           "feed_forward_proj", "tie_word_embeddings", "relative_attention_num_buckets", "num_experts",
           "expert_capacity", "dropout_rate", "layer_norm_epsilon", "is_gated_act", "dense_act_fn"]


@FUZZ
@given(st.dictionaries(st.sampled_from(HF_KEYS), json_values, max_size=8))
def test_fuzz_config_json(fields):
    with contextlib.suppress(T5LabError):
        from_hf(fields)


@FUZZ
@given(header=json_values, extra=st.binary(max_size=64), claimed=st.integers(0, 300))
def test_fuzz_safetensors_headers(tmp_path, header, extra, claimed):
    from t5lab.interop.hf import _read_tensor_file

    text = json.dumps(header).encode()
    path = tmp_path / "fuzz.safetensors"
    path.write_bytes(struct.pack("<Q", claimed or len(text)) + text + extra)
    with contextlib.suppress(T5LabError):
        _read_tensor_file(path)


@FUZZ
@given(st.lists(st.binary(max_size=40), min_size=1, max_size=6))
def test_fuzz_task_rows(tmp_path, rows):
    from t5lab.data.tasks.base import read_csv, read_jsonl, read_tsv

    path = tmp_path / "rows"
    path.write_bytes(b"input\ttarget\n" + b"\n".join(rows))
    for reader in (read_tsv, read_jsonl, read_csv):
        with contextlib.suppress(T5LabError):
            list(reader(path))


def test_only_rank_0_takes_the_run_folder_lock(tmp_path, monkeypatch):
    with run_folder_lock(tmp_path):
        monkeypatch.setenv("RANK", "1")
        with run_folder_lock(tmp_path):  # another rank of the same torchrun job
            pass
        monkeypatch.setenv("RANK", "0")
        with pytest.raises(T5LabError, match="another run"), run_folder_lock(tmp_path):
            pass
