"""Pre-training recipe files: overrides from the command line resolve against the recipe's own values."""

from __future__ import annotations

import pytest

from t5lab.errors import T5LabError
from t5lab.recipes.recipe_files import find_recipe, parse_recipe


def test_a_lower_lr_keeps_the_recipes_decay_ratio_instead_of_blaming_final_lr():
    where, text = find_recipe("quickstart-cpu")
    recipe = parse_recipe(where, text)
    lowered = parse_recipe(where, text, {"train": {"lr": recipe.train.lr / 1000}})
    assert lowered.train.lr == pytest.approx(recipe.train.lr / 1000)
    assert lowered.train.final_lr == pytest.approx(recipe.train.final_lr / 1000)
    chosen = parse_recipe(where, text, {"train": {"lr": 1e-3, "final_lr": 0.0}})
    assert chosen.train.final_lr == 0.0


def test_packaged_pretrain_recipes_exclude_other_commands_configs():
    from t5lab.recipes.recipe_files import packaged_recipes

    assert {"quickstart-cpu", "nanot5-base", "t5-efficient-tiny", "t5-efficient-small"} == set(packaged_recipes())
    with pytest.raises(T5LabError, match="not a packaged recipe"):
        find_recipe("scale-study-cpu")


def _printed(capsys, *argv: str) -> dict:
    import yaml

    from t5lab.cli import main

    assert main(["pretrain", *argv, "--print_config"]) == 0
    return yaml.safe_load(capsys.readouterr().out)


def test_print_config_is_a_complete_recipe_that_config_reproduces(capsys, tmp_path):
    """One config format: `--print_config` prints the resolved recipe, every field; `--config` of that file
    (or `--recipe` of it) resolves to the same recipe; a packaged recipe is such a file."""
    import dataclasses

    import yaml

    from t5lab.data.config import DataConfig
    from t5lab.recipes.recipe_files import _packaged
    from t5lab.train.config import TrainConfig

    printed = _printed(capsys, "--recipe", "nanot5-base", "--lr", "1e-3", "--steps", "5", "--dropout", "0.1")
    assert set(printed["train"]) == {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(printed["data"]) == {f.name for f in dataclasses.fields(DataConfig)} - {"batch_size", "grad_accum"}
    assert (printed["train"]["steps"], printed["train"]["lr"], printed["model_overrides"]) == (5, 1e-3, {"dropout": 0.1})
    saved = tmp_path / "run.yaml"
    saved.write_text(yaml_text(printed))
    assert _printed(capsys, "--config", str(saved)) == printed
    assert _printed(capsys, f"--config={saved}", "--steps", "6")["train"]["steps"] == 6  # flags override it
    packaged = str(_packaged() / "quickstart-cpu.yaml")
    assert _printed(capsys, "--config", packaged) == _printed(capsys, "--recipe", "quickstart-cpu") == _printed(capsys)
    from t5lab.cli import main

    assert main(["pretrain", "--print-config", "--steps", "4"]) == 0  # the spelling --help shows
    assert yaml.safe_load(capsys.readouterr().out)["train"]["steps"] == 4
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    assert "--config CONFIG       A recipe file (as --recipe)." in capsys.readouterr().out


def yaml_text(recipe: dict) -> str:
    import yaml

    return yaml.safe_dump(recipe, sort_keys=False)


def test_flags_resolve_against_the_recipe_as_before(capsys, tmp_path):
    quick = _printed(capsys, "--recipe", "quickstart-cpu")
    lowered = _printed(capsys, "--recipe", "quickstart-cpu", "--lr", str(quick["train"]["lr"] / 10))
    assert lowered["train"]["final_lr"] == pytest.approx(quick["train"]["final_lr"] / 10)  # the decay ratio kept
    weighted = _printed(capsys, "--data", "a.txt", "b.txt", "--data-weights", "0.8", "0.2")
    assert (weighted["data"]["sources"], weighted["data"]["weights"]) == (["a.txt", "b.txt"], [0.8, 0.2])
    saved = tmp_path / "weighted.yaml"
    saved.write_text(yaml_text(weighted))
    assert _printed(capsys, "--config", str(saved))["data"]["weights"] == [0.8, 0.2]
    # New --data without --data-weights: the recipe's weights were for its own sources.
    assert _printed(capsys, "--config", str(saved), "--data", "c.txt")["data"]["weights"] == []
    other = _printed(capsys, "--recipe", "quickstart-cpu", "--model", "t5-efficient-mini")
    assert other["model"] == "t5-efficient-mini" and other["model_overrides"] == {"dropout": 0.0}


def test_print_config_and_a_config_error_are_torch_free_and_one_line(tmp_path):
    """Printing a recipe never loads torch (it is instant); a broken recipe is one line naming the field."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {warmpu: 3}\n")
    script = (
        "import sys\n"
        "from t5lab.cli import main\n"
        "assert main(['pretrain', '--print_config']) == 0\n"
        f"assert main(['pretrain', '--config', {str(bad)!r}, '--print_config']) == 1\n"
        "print(sorted(m for m in ('torch', 'numpy', 't5lab.model') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert done.stderr.count("\n") == 1 and "train.warmpu" in done.stderr


def test_a_run_folders_recipe_resumes_and_an_older_format_is_refused_in_one_line(capsys, tmp_path):
    from t5lab.cli import main

    run = tmp_path / "run"
    run.mkdir()
    (run / "recipe.yaml").write_text(yaml_text(_printed(capsys, "--steps", "3")))
    assert _printed(capsys, "--out", str(run), "--resume", "true")["train"]["steps"] == 3
    # Run folders of the first pretrain (before the derived batch fields were dropped) wrote data.batch_size.
    (run / "recipe.yaml").write_text("model: t5-efficient-tiny\ndata: {batch_size: 8}\ntrain: {batch_size: 8}\n")
    assert main(["pretrain", "--out", str(run), "--resume", "true", "--print_config"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{run / 'recipe.yaml'}: 'data.batch_size' is derived" in err
