"""The shell-style argument forms the CLI accepts on top of jsonargparse's."""

from __future__ import annotations

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
