from __future__ import annotations

import errno
import random
from pathlib import Path

import numpy as np
import pytest
import torch

import t5lab.train.checkpoint as ckpt
from t5lab import T5LabError, build_model
from t5lab.train.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, save_checkpoint


def _training_state() -> dict:
    return {"loop": {"step": 3}, "data": {"position": 7}, "rng": ckpt.rng_state()}


def test_round_trip_restores_weights_and_state(tiny_config, tmp_path):
    model = build_model(tiny_config, seed=0)
    path = save_checkpoint(tmp_path, 3, model, _training_state(), meta={"note": "x"})
    other = build_model(tiny_config, seed=1)
    state = load_checkpoint(path, other)
    assert state["loop"] == {"step": 3} and state["data"] == {"position": 7}
    for (name, a), b in zip(model.state_dict().items(), other.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert (path / "meta.json").read_text().count('"note": "x"') == 1


def test_rng_states_round_trip():
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = ckpt.rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_keeps_only_the_last_k(tiny_config, tmp_path):
    model = build_model(tiny_config, seed=0)
    for step in (2, 4, 6, 8):
        save_checkpoint(tmp_path, step, model, _training_state(), keep_last=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000006", "step-00000008"]


def test_a_failure_while_writing_leaves_the_previous_checkpoint(tiny_config, tmp_path, monkeypatch):
    model = build_model(tiny_config, seed=0)
    good = save_checkpoint(tmp_path, 2, model, _training_state(), keep_last=1)
    before = {f.name: f.read_bytes() for f in good.iterdir()}

    def torch_save_dies(obj, f):
        Path(f).write_bytes(b"half a file")
        raise OSError(errno.ENOSPC, "No space left on device", str(f))

    monkeypatch.setattr(ckpt.torch, "save", torch_save_dies)
    with pytest.raises(T5LabError, match=r"training.pt: no space left on device$"):
        save_checkpoint(tmp_path, 4, model, _training_state(), keep_last=1)
    assert latest_checkpoint(tmp_path) == good
    assert {f.name: f.read_bytes() for f in good.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000002"]


def test_a_half_written_folder_from_a_killed_run_is_ignored_then_removed(tiny_config, tmp_path):
    model = build_model(tiny_config, seed=0)
    good = save_checkpoint(tmp_path, 2, model, _training_state())
    torn = tmp_path / ".tmp-step-00000004-abc"
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"torn")
    assert latest_checkpoint(tmp_path) == good
    save_checkpoint(tmp_path, 6, model, _training_state())
    assert not torn.exists()


def test_loading_a_damaged_or_mismatched_checkpoint_is_a_one_line_error(tiny_config, tmp_path):
    model = build_model(tiny_config, seed=0)
    path = save_checkpoint(tmp_path, 2, model, _training_state())
    with pytest.raises(T5LabError, match="does not match|cannot load"):
        load_checkpoint(path, build_model(tiny_config.replace(d_ff=41), seed=0))
    (path / "training.pt").unlink()
    with pytest.raises(T5LabError, match="training.pt: missing"):
        load_checkpoint(path, model)
