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
