"""The CLI: the shell-style argument forms it accepts on top of jsonargparse's, a `--help` that never loads
torch, and one-line errors for a user's mistakes."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from t5lab.cli import COMMANDS, _shell_style, command, main


def test_bare_words_flags_and_hyphens() -> None:
    commands = {name: command(name) for name in COMMANDS}
    assert _shell_style(["shapes", "a", "b", "--all", "--input-length", "64"], commands) == [
        "shapes", "--all", "true", "--input_length", "64", "--names+", "a", "--names+", "b"]
    assert _shell_style(["shapes", "--all", "false", "--format=json"], commands) == [
        "shapes", "--all", "false", "--format=json"]
    assert _shell_style(["pareto", "r1.jsonl", "r2.jsonl", "--x", "flops"], commands) == [
        "pareto", '["r1.jsonl", "r2.jsonl"]', "--x", "flops"]
    assert _shell_style(["unknown", "a"], commands) == ["unknown", "a"]


def test_required_parameters_as_options() -> None:
    commands = {name: command(name) for name in COMMANDS}
    assert _shell_style(["finetune", "--task", "glue/rte", "--model=m", "--steps", "3"], commands) == [
        "finetune", "glue/rte", "m", "--steps", "3"]
    assert _shell_style(["evaluate", "--model", "m", "squad", "--limit", "5"], commands) == [
        "evaluate", "squad", "m", "--limit", "5"]
    assert _shell_style(["evaluate", "squad", "--num-beams", "2", "m"], commands) == [
        "evaluate", "squad", "--num_beams", "2", "m"]


def test_list_option_takes_several_words() -> None:
    commands = {name: command(name) for name in COMMANDS}
    assert _shell_style(["scale-study", "--shapes", "a", "b", "--amount", "5"], commands) == [
        "scale-study", "--shapes", '["a", "b"]', "--amount", "5"]
    assert _shell_style(["scale-study", "--shapes", '["a"]'], commands) == ["scale-study", "--shapes", '["a"]']
    assert _shell_style(["bench", "a", "b", "--batch-size", "2"], commands) == [
        "bench", '["a", "b"]', "--batch_size", "2"]


def test_generate_takes_bare_texts() -> None:
    commands = {name: command(name) for name in COMMANDS}
    assert _shell_style(["generate", "--model", "m", "The <extra_id_0> park", "A <extra_id_0>"], commands) == [
        "generate", "--model", "m", "--texts+", "The <extra_id_0> park", "--texts+", "A <extra_id_0>"]


def test_help_names_the_program_t5lab(capsys) -> None:
    """Not `__main__.py` when run as `python -m t5lab`."""
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: t5lab ")


def test_help_of_every_command_never_imports_torch() -> None:
    """`t5lab --help` and each `t5lab CMD --help` in one fresh interpreter: torch must not be loaded."""
    script = (
        "import sys\n"
        "from t5lab.cli import COMMANDS, main\n"
        "for args in [['--help'], *([name, '--help'] for name in COMMANDS)]:\n"
        "    try:\n"
        "        main(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, args\n"
        "print(sorted(m for m in ('torch', 'numpy', 't5lab.model') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_top_level_help_lists_every_command(capsys) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)
    assert main(["frobnicate"]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_help_spells_flags_with_hyphens(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert "--batch-size" in out and "--batch_size" not in out


@pytest.mark.parametrize(
    ("args", "flag"),
    [(["pretrain", "--lr", "fast"], "--lr 'fast'"), (["pretrain", "--lr", "inf"], "--lr 'inf'"),
     (["suggest", "--params", "lots"], "--params 'lots'"), (["bench", "t5-efficient-tiny", "--batch-size", "x"],
                                                           "--batch-size 'x'")],
)
def test_argument_type_errors_are_one_line_naming_the_flag(capsys, args, flag) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and flag in err and "expected a" in err


@pytest.mark.parametrize("device", ["banana", "cuda:0"])
def test_generate_bad_device_is_one_line(capsys, device) -> None:
    if device.startswith("cuda"):
        torch = pytest.importorskip("torch")
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    assert main(["generate", "--model", "t5-efficient-tiny", "--device", device, "hello"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--device={device!r}" in err


def test_evaluate_out_naming_a_file_is_one_line(capsys, tmp_path) -> None:
    file = tmp_path / "results.txt"
    file.write_text("")
    assert main(["evaluate", "--task", "glue/sst2", "--model", "t5-efficient-tiny", "--out", str(file)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{file}: exists and is not a folder" in err


def test_shapes_table_fits_100_columns_and_names_its_lengths(capsys) -> None:
    assert main(["shapes", "t5-efficient-small-el16-dl8", "switch-base-8", "--input-length", "256"]) == 0
    out = capsys.readouterr().out
    assert max(map(len, out.splitlines())) <= 100
    assert "FLOPs per example at 256 input and 114 target tokens" in out
    assert "train_flops" in out and "cross_kv_bytes_per_input_token" in out  # wrapped, not dropped


def test_bench_writes_no_file_unless_asked() -> None:
    assert inspect.signature(command("bench")).parameters["out"].default is None


def test_evaluate_and_finetune_share_the_task_runtime_and_generation_groups(capsys) -> None:
    """One definition of --tokenizer, --data-dir, --device, --seed and the generation flags, with one help text."""
    from t5lab.recipes.options import EvaluationOptions

    helps = []
    for name in ("evaluate", "finetune"):
        params = inspect.signature(command(name)).parameters
        assert not {"tokenizer", "data_dir", "device", "seed", "num_beams"} & set(params)
        assert "EvaluationOptions" in str(params["options"].annotation)
        with pytest.raises(SystemExit):
            main([name, "--help"])
        helps.append(capsys.readouterr().out)
    shared = helps[0][helps[0].index("  --tokenizer"):]
    assert shared in helps[1] and "--data-dir" in shared and "auto (the default)" in shared
    assert set(EvaluationOptions.__annotations__) >= {"tokenizer", "data_dir", "device", "seed", "max_new_tokens"}
