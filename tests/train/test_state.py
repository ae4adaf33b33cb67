"""TrainState is what the checkpoint holds of the loop; checkpoints from before it (a plain `loop` dict) resume."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
import torch

from t5lab import T5LabError, build_model
from t5lab.train.checkpoint import latest_checkpoint
from t5lab.train.config import TrainConfig
from t5lab.train.loop import train
from t5lab.train.metrics import read_metrics
from t5lab.train.state import TrainState
from train.synthetic import SyntheticBatches

CONFIG = TrainConfig(steps=4, batch_size=2, lr=3e-3, warmup=1, log_every=1, eval_batches=0, save_every=2,
                     device="cpu", precision="fp32", progress=False)


def _rewrite_loop_state(checkpoint, change):
    path = checkpoint / "training.pt"
    training = torch.load(path, weights_only=True)
    change(training["loop"])
    torch.save(training, path)
    # Re-record the file's checksum: these tests change the state on purpose, they do not corrupt it.
    meta_path = checkpoint / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["files"]["training.pt"] = hashlib.sha256(path.read_bytes()).hexdigest()
    meta_path.write_text(json.dumps(meta))


def _run(tiny_config, out, **kw):
    train(build_model(tiny_config, seed=0), CONFIG, SyntheticBatches(tiny_config.vocab_size, 2), out, **kw)
    return [(r["step"], r["loss"]) for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


def test_the_state_round_trips_and_closes_log_windows():
    state = TrainState(step=3, log_loss_sum=3.0, log_steps=2, best=0.5, best_step=2, best_results={"x": 0.5})
    again = TrainState.from_state_dict(state.state_dict())
    assert again == state
    assert again.end_log_window() == 1.5 and (again.log_loss_sum, again.log_steps) == (0.0, 0)


def test_a_checkpoint_with_the_old_loop_dict_resumes_exactly(tiny_config, tmp_path):
    straight = _run(tiny_config, tmp_path / "straight")
    _run(tiny_config, tmp_path / "split", stop_after=2)
    # Checkpoints written before TrainState stored the same counters without 'autocast'.
    _rewrite_loop_state(latest_checkpoint(tmp_path / "split" / "checkpoints"), lambda loop: loop.pop("autocast"))
    assert _run(tiny_config, tmp_path / "split", resume=True) == straight


def test_a_state_with_fields_this_version_does_not_know_is_refused_in_one_line(tiny_config, tmp_path):
    _run(tiny_config, tmp_path, stop_after=2)
    _rewrite_loop_state(latest_checkpoint(tmp_path / "checkpoints"), lambda loop: loop.update(ema_decay=0.9))
    with pytest.raises(T5LabError, match=r"step-00000002.*\['ema_decay'\].*newer version") as info:
        _run(tiny_config, tmp_path, resume=True)
    assert "\n" not in str(info.value)
    assert {f.name for f in dataclasses.fields(TrainState)} >= {"step", "best", "stopped", "autocast"}
