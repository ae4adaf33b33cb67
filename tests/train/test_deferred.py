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


def test_fp16_trains_through_a_gradient_scaler_and_resumes_exactly(tiny_config, tmp_path):
    """CPU autocast runs fp16 too, so the scaler path (scale, unscale before clipping, step, update, its state in
    checkpoints) is exercised here; on GPUs without bf16 it is what precision 'auto' picks (unmeasured there)."""
    config = dataclasses.replace(CONFIG, steps=6, log_every=1, save_every=3, precision="fp16")
    straight = train(build_model(tiny_config, seed=0), config, SyntheticBatches(tiny_config.vocab_size, 2),
                     tmp_path / "straight")
    train(build_model(tiny_config, seed=0), config, SyntheticBatches(tiny_config.vocab_size, 2), tmp_path / "split",
          stop_after=3)
    saved = torch.load(tmp_path / "split/checkpoints/step-00000003/training.pt", weights_only=True)
    assert saved["loop"]["autocast"] == "float16" and saved["scaler"]["scale"] > 1
    train(build_model(tiny_config, seed=0), config, SyntheticBatches(tiny_config.vocab_size, 2), tmp_path / "split",
          resume=True)
    losses = {name: [(r["step"], r["loss"]) for r in read_metrics(tmp_path / name / "metrics.jsonl") if "loss" in r]
              for name in ("straight", "split")}
    assert losses["split"] == losses["straight"] and len(losses["straight"]) == 6
    assert all(0 < loss < 20 for _, loss in losses["straight"]) and straight.loss == losses["straight"][-1][1]


def test_auto_precision_is_fp16_on_cuda_without_bf16(monkeypatch):
    from t5lab.device import autocast_dtype

    monkeypatch.setattr("t5lab.device.native_bf16", lambda device: False)
    assert autocast_dtype("auto", torch.device("cuda")) == torch.float16
    assert autocast_dtype("auto", torch.device("cpu")) is None
    assert autocast_dtype("fp16", torch.device("cpu")) == torch.float16


def test_batches_go_to_cuda_pinned_and_non_blocking(monkeypatch):
    """Checked with the copy itself mocked (no GPU here): pinned first, then an asynchronous copy; CPU untouched."""
    from t5lab.train.evaluation import to_device

    calls = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "is_pinned", lambda self: False)
    original_to = torch.Tensor.to

    def to(self, *args, **kwargs):
        if args and isinstance(args[0], torch.device) and args[0].type == "cuda":
            calls.append(("to", kwargs.get("non_blocking")))
            return self
        return original_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", to)
    batch = {"input_ids": torch.ones(2, 3, dtype=torch.long)}
    to_device(batch, torch.device("cuda"))
    assert calls == ["pin", ("to", True)]
    calls.clear()
    assert to_device(batch, torch.device("cpu"))["input_ids"] is batch["input_ids"] and calls == []
