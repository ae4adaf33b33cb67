from __future__ import annotations

import dataclasses

import pytest
import torch

from t5lab import T5LabError, build_model
from t5lab.train.checkpoint import latest_checkpoint
from t5lab.train.config import TrainConfig
from t5lab.train.loop import train
from t5lab.train.metrics import read_metrics, router_metrics
from t5lab.train.schedule import lr_at
from train.synthetic import SyntheticBatches

# fp32: 'auto' would be bf16 on CPUs with AVX512-BF16, and these tests compare fp32 arithmetic.
CONFIG = TrainConfig(steps=8, batch_size=4, grad_accum=2, lr=3e-3, warmup=2, log_every=1, eval_every=3,
                     eval_batches=1, save_every=2, keep_last=2, device="cpu", precision="fp32", progress=False)


def _run(tiny_config, out, config=CONFIG, **kw):
    # Dropout on, so that the resume tests also check the RNG state.
    model = build_model(tiny_config.replace(dropout=0.1), seed=0)
    batches = SyntheticBatches(tiny_config.vocab_size, config.micro_batch_size)
    result = train(model, config, batches, out,
                   eval_batches=lambda: SyntheticBatches(tiny_config.vocab_size, 2, seed=7), **kw)
    return result, read_metrics(out / "metrics.jsonl")


def _losses(rows):
    return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def test_training_logs_rows_evaluations_and_writes_outputs(tiny_config, tmp_path):
    result, rows = _run(tiny_config, tmp_path)
    train_rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in train_rows] == list(range(1, 9))
    assert {"step", "loss", "lr", "tokens_per_s", "grad_norm"} <= set(train_rows[0])
    assert [r["step"] for r in rows if r.get("split") == "eval"] == [3, 6, 8]
    assert [r["lr"] for r in train_rows] == pytest.approx(
        [lr_at(k, kind="cosine", lr=3e-3, warmup=2, total=8, final_lr=1e-5) for k in range(8)])
    assert result.step == 8 and result.checkpoint == latest_checkpoint(tmp_path / "checkpoints")
    assert (tmp_path / "loss.png").stat().st_size > 1000


def test_resume_after_a_stop_is_bit_for_bit(tiny_config, tmp_path):
    _, straight = _run(tiny_config, tmp_path / "straight")
    first, _ = _run(tiny_config, tmp_path / "split", stop_after=5)  # saves at 4, and at the stop (5)
    assert first.step == 5
    result, resumed = _run(tiny_config, tmp_path / "split", resume=True)
    assert result.step == 8
    assert _losses(resumed) == _losses(straight)  # exact equality of floats
    assert [r for r in resumed if "eval_loss" in r] == [r for r in straight if "eval_loss" in r]


def test_resume_in_bf16_autocast_on_cpu_is_bit_for_bit(tiny_config, tmp_path):
    # bf16 is what 'auto' trains in on CPUs with AVX512-BF16; elsewhere the CPU emulates it, just as exactly.
    config = dataclasses.replace(CONFIG, precision="bf16", eval_batches=0)
    _, straight = _run(tiny_config, tmp_path / "straight", config)
    _run(tiny_config, tmp_path / "split", config, stop_after=5)
    _, resumed = _run(tiny_config, tmp_path / "split", config, resume=True)
    assert _losses(resumed) == _losses(straight)
    bf16 = [loss for _, loss in _losses(straight)]
    fp32 = [loss for _, loss in _losses(_run(tiny_config, tmp_path / "fp32")[1])]
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.05)  # bf16 did run, and trains alike


def test_gradient_accumulation_matches_one_big_batch(tiny_config, tmp_path):
    config = dataclasses.replace(CONFIG, steps=3, eval_batches=0, save_every=0)
    model_a = build_model(tiny_config, seed=0)
    model_b = build_model(tiny_config, seed=0)
    train(model_a, config, SyntheticBatches(tiny_config.vocab_size, 2), tmp_path / "a")
    big = SyntheticBatches(tiny_config.vocab_size, 4)
    halves = SyntheticBatches(tiny_config.vocab_size, 2)
    # The same examples: batch k of size 4 is micro-batches 2k and 2k+1 of size 2, concatenated.
    big.batch = lambda k: {key: torch.cat([halves.batch(2 * k)[key], halves.batch(2 * k + 1)[key]])
                           for key in ("input_ids", "labels")}
    train(model_b, dataclasses.replace(config, grad_accum=1), big, tmp_path / "b")
    for a, b in zip(model_a.parameters(), model_b.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


class _Poisoned(torch.nn.Module):
    """Wraps a model; from forward call `at` on, the loss is NaN."""

    def __init__(self, model, at: int) -> None:
        super().__init__()
        self.model, self.at, self.calls = model, at, 0

    def forward(self, **batch):
        self.calls += 1
        output = self.model(**batch)
        if self.training and self.calls >= self.at:
            output.loss = output.loss * float("nan")
        return output


def test_a_nan_loss_stops_naming_the_step_and_keeps_the_last_checkpoint(tiny_config, tmp_path):
    model = _Poisoned(build_model(tiny_config, seed=0), at=9)  # micro-batch 9 is in step 5
    config = dataclasses.replace(CONFIG, eval_batches=0)
    with pytest.raises(T5LabError, match=r"step 5: the training loss is nan.*step-00000004"):
        train(model, config, SyntheticBatches(tiny_config.vocab_size, 2), tmp_path)
    assert latest_checkpoint(tmp_path / "checkpoints").name == "step-00000004"
    assert max(r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")) == 4


class _Hungry(torch.nn.Module):
    def __init__(self, model, error: Exception) -> None:
        super().__init__()
        self.model, self.error = model, error

    def forward(self, **batch):
        raise self.error


@pytest.mark.parametrize("error", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                   RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: "
                                                "can't allocate memory: you tried to allocate 9 bytes")])
def test_out_of_memory_becomes_a_one_line_hint(tiny_config, tmp_path, error):
    model = _Hungry(build_model(tiny_config, seed=0), error)
    with pytest.raises(T5LabError, match="does not fit in memory.*--batch_size.*--grad_accum") as info:
        train(model, CONFIG, SyntheticBatches(tiny_config.vocab_size, 2), tmp_path)
    assert "\n" not in str(info.value)


def test_router_metrics_average_scalars_and_vectors_over_layers():
    @dataclasses.dataclass
    class Stats:
        aux_loss: torch.Tensor
        expert_fraction: torch.Tensor
        logits: torch.Tensor

    layers = [Stats(torch.tensor(1.0), torch.tensor([0.5, 0.5]), torch.zeros(2, 3, 2)),
              Stats(torch.tensor(3.0), torch.tensor([1.0, 0.0]), torch.zeros(2, 3, 2))]
    assert router_metrics(layers) == {"router/aux_loss": 2.0, "router/expert_fraction": [0.75, 0.25]}
    assert router_metrics([]) == {}


def test_a_switch_model_logs_its_router_statistics(tiny_config, tmp_path):
    moe = tiny_config.replace(num_experts=4, encoder_sparse_step=2, decoder_sparse_step=2)
    config = dataclasses.replace(CONFIG, steps=2, eval_batches=0, save_every=0)
    train(build_model(moe, seed=0), config, SyntheticBatches(moe.vocab_size, 2), tmp_path)
    row = read_metrics(tmp_path / "metrics.jsonl")[-1]
    assert len(row["router/expert_fraction"]) == 4
    assert {"router/aux_loss", "router/z_loss", "router/dropped_fraction"} <= set(row)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_precision_is_bf16_where_the_cpu_computes_it(monkeypatch, has_bf16):
    from t5lab.analysis.throughput import compute_dtype
    from t5lab.device import autocast_dtype

    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {"avx512_bf16": has_bf16, "avx2": True})
    cpu = torch.device("cpu")
    expected = torch.bfloat16 if has_bf16 else None
    assert autocast_dtype("auto", cpu) == expected
    assert compute_dtype("auto", cpu) == (expected or torch.float32)  # the shape lab measures what training runs
    assert autocast_dtype("fp32", cpu) is None  # 'fp32' stays fp32
    assert autocast_dtype("bf16", cpu) == torch.bfloat16


@pytest.mark.parametrize("major", [7, 8])
def test_auto_precision_on_cuda_needs_native_bf16(monkeypatch, major):
    """Volta/Turing emulate bf16 (slowly): 'auto' keeps fp32 there, as it does on CPUs without AVX512-BF16."""
    from types import SimpleNamespace

    from t5lab.device import native_bf16

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: SimpleNamespace(major=major))
    monkeypatch.setattr(torch.version, "hip", None)
    assert native_bf16(torch.device("cuda:0")) == (major >= 8)


def test_the_evaluator_runs_outside_autocast(tiny_config, tmp_path):
    """As `t5lab evaluate` runs the exported model, so that the best checkpoint's stored scores reproduce."""
    seen = []
    config = dataclasses.replace(CONFIG, precision="bf16", steps=3, eval_batches=0, save_every=0)
    _run(tiny_config, tmp_path, config,
         evaluator=lambda model: seen.append(torch.is_autocast_enabled("cpu")) or {"score": 1.0})
    assert seen and not any(seen)


def test_auto_precision_is_kept_by_a_resumed_run(tiny_config, tmp_path, monkeypatch):
    """Resumed on a machine that resolves 'auto' otherwise, the run keeps its bf16 and continues exactly."""
    import t5lab.device as device_module

    config = dataclasses.replace(CONFIG, precision="auto", eval_batches=0)
    monkeypatch.setattr(device_module, "native_bf16", lambda device: True)
    _, straight = _run(tiny_config, tmp_path / "straight", config)
    _run(tiny_config, tmp_path / "split", config, stop_after=5)
    monkeypatch.setattr(device_module, "native_bf16", lambda device: False)
    _, resumed = _run(tiny_config, tmp_path / "split", config, resume=True)
    assert _losses(resumed) == _losses(straight)
