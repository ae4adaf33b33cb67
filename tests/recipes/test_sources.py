"""How the recipes resolve tasks, data folders, models, tokenizers and fine-tuning dropout."""

from __future__ import annotations

import pytest
import torch
from torch.nn import Dropout

from t5lab import T5LabError, build_model, save_pretrained
from t5lab.recipes.sources import resolve_data_dir, resolve_model, resolve_tasks, task_names, with_dropout
from t5lab.shapes import with_experts


def test_task_lists_from_commas_or_lists() -> None:
    assert task_names("glue/rte, glue/sst2,glue/rte") == ["glue/rte", "glue/sst2"]
    assert task_names(["glue/rte", "squad,glue/cola"]) == ["glue/rte", "squad", "glue/cola"]
    with pytest.raises(T5LabError, match="no task given"):
        task_names(" , ")


def test_data_dir_from_the_argument_or_the_environment(tmp_path, monkeypatch) -> None:
    tasks = resolve_tasks("glue/rte")
    monkeypatch.setenv("T5LAB_DATA", str(tmp_path))
    assert resolve_data_dir(None, tasks) == tmp_path
    with pytest.raises(T5LabError, match=r"nowhere: no such data folder \(from --data-dir\)"):
        resolve_data_dir(tmp_path / "nowhere", tasks)
    monkeypatch.delenv("T5LAB_DATA")
    with pytest.raises(T5LabError, match="generic has no Hugging Face copy"):
        resolve_data_dir(None, resolve_tasks("generic"))


def test_dropout_is_set_for_fine_tuning_and_expert_dropout_only_for_switch(tiny_config) -> None:
    dense = build_model(tiny_config, seed=0)
    tuned = with_dropout(dense, 0.1, 0.4)
    assert tuned.config.dropout == 0.1 and tuned.config.expert_dropout == tiny_config.expert_dropout
    assert all(torch.equal(a, b) for a, b in zip(dense.state_dict().values(), tuned.state_dict().values(),
                                                   strict=True))
    assert with_dropout(tuned, 0.1, 0.4) is tuned
    switch = with_dropout(build_model(with_experts(tiny_config, 4), seed=0), 0.1, 0.4)
    assert (switch.config.dropout, switch.config.expert_dropout) == (0.1, 0.4)
    assert any(isinstance(m, Dropout) and m.p == 0.4 for m in switch.modules())


def test_model_and_tokenizer_must_agree(tiny_config, spiece_model, tmp_path) -> None:
    with pytest.raises(T5LabError, match="give one with --tokenizer"):
        resolve_model("t5-efficient-tiny", None)
    folder = tmp_path / "ckpt"
    save_pretrained(build_model(tiny_config, seed=0), folder)
    with pytest.raises(T5LabError, match="has no spiece.model"):
        resolve_model(folder, None)
    with pytest.raises(T5LabError, match="tokenizer has 32100 ids .* has vocab_size=101"):
        resolve_model(folder, spiece_model.parent)
