"""The loop reads losses and gradient norms from the device per metrics row or checkpoint, never per step."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from t5lab import build_model
from t5lab.train.config import TrainConfig
from t5lab.train.loop import train
from t5lab.train.metrics import read_metrics
from train.synthetic import SyntheticBatches

CONFIG = TrainConfig(steps=4, batch_size=2, lr=1e-3, warmup=1, log_every=4, eval_batches=0, device="cpu",
                     precision="fp32", progress=False)


def _float_reads(tiny_config, tmp_path, monkeypatch, steps: int) -> int:
    """How many times the run turns a floating-point tensor into Python numbers (what would wait for a GPU)."""
    reads = []
    for method in ("item", "tolist", "__float__", "__bool__"):
        original = getattr(torch.Tensor, method)

        def counted(self, *args, _original=original, **kwargs):
            if self.is_floating_point():
                reads.append(tuple(self.shape))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, method, counted)
    model = build_model(tiny_config, seed=0)
    config = dataclasses.replace(CONFIG, steps=steps, log_every=steps)
    train(model, config, SyntheticBatches(tiny_config.vocab_size, 2), tmp_path)
    monkeypatch.undo()
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [steps]
    return len(reads)


def test_device_reads_do_not_grow_with_the_steps_between_rows(tiny_config, tmp_path, monkeypatch):
    few = _float_reads(tiny_config, tmp_path / "few", monkeypatch, steps=2)
    many = _float_reads(tiny_config, tmp_path / "many", monkeypatch, steps=8)
    assert few == many


def test_a_window_of_losses_reads_the_same_mean_as_step_by_step(tiny_config, tmp_path):
    """Rows every 4 steps log the mean of the per-step losses that rows every step log."""
    rows = {}
    for every in (1, 4):
        model = build_model(tiny_config, seed=0)
        config = dataclasses.replace(CONFIG, steps=8, log_every=every)
        train(model, config, SyntheticBatches(tiny_config.vocab_size, 2), tmp_path / str(every))
        rows[every] = [r for r in read_metrics(tmp_path / str(every) / "metrics.jsonl") if "loss" in r]
    per_step = [r["loss"] for r in rows[1]]
    assert [r["loss"] for r in rows[4]] == pytest.approx([sum(per_step[:4]) / 4, sum(per_step[4:]) / 4])
    assert rows[4][-1]["grad_norm"] == rows[1][-1]["grad_norm"]
