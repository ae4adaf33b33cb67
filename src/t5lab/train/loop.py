"""The one training loop. Pre-training, fine-tuning and studies call `train`; none of them copies it.

A step: draw `grad_accum` micro-batches, weight each micro-batch's mean loss by its share of the step's
target tokens (so padding never skews the average), backpropagate, clip the global gradient norm, step
the optimiser and the schedule. Around it: bf16 autocast where the device computes bf16 natively, optional
torch.compile, periodic held-out evaluation, metrics rows, atomic checkpoints and exact resume.

Exact resume: everything a later step depends on is in the checkpoint (weights, optimiser, schedule, every
RNG, the data stream's position, the loop's counters), and whatever draws random numbers for bookkeeping
rather than training (DataLoader seeding, evaluation) runs under a forked RNG so that it cannot shift the
training RNG. On CPU a resumed run therefore logs the same losses as an uninterrupted one, bit for bit.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from t5lab.errors import T5LabError
from t5lab.train.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from t5lab.train.config import TrainConfig
from t5lab.train.host_memory import keep_freed_memory
from t5lab.train.metrics import MetricsLog, router_metrics
from t5lab.train.optim import build_optimizer
from t5lab.train.schedule import WarmupSchedule


class Batches(Protocol):
    """A resumable source of batches: dicts of tensors with at least "input_ids" and "labels"."""

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Monitor:
    """Watch one evaluation metric: call `on_best` whenever it improves, stop when it stalls.

    Args:
        metric: a key of the evaluation results (e.g. "accuracy" from an `evaluator`, or "eval_loss").
        mode: "max" if larger is better, "min" otherwise.
        patience: stop after this many evaluations in a row without improvement (None: never stop early).
        on_best: called as on_best(model, step, results) after an improving evaluation (e.g. to export
            the model); it runs again for the same step if a run is resumed from before it had saved.
    """

    metric: str
    mode: Literal["max", "min"] = "max"
    patience: int | None = None
    on_best: Callable[[nn.Module, int, dict[str, float]], None] | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise T5LabError(f"monitor mode {self.mode!r}: expected 'max' or 'min'")
        if self.patience is not None and self.patience < 1:
            raise T5LabError(f"early-stopping patience {self.patience}: expected a positive number of evaluations")

    def improves(self, value: float, best: float | None) -> bool:
        return best is None or (value > best if self.mode == "max" else value < best)


@dataclass
class TrainResult:
    step: int
    loss: float  # the last step's training loss
    eval: dict[str, float] = field(default_factory=dict)  # the last evaluation
    checkpoint: Path | None = None
    metrics: Path | None = None
    elapsed_s: float = 0.0
    best: dict[str, float] = field(default_factory=dict)  # the best evaluation by the monitor's metric
    best_step: int | None = None
    stopped_early: bool = False


def resolve_device(name: str, label: str = "train config field 'device'") -> torch.device:
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'; `label` names the setting in errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise T5LabError(f"{label}={name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise T5LabError(f"{label}={name!r}: no CUDA device is available")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 matmuls natively, which is where precision 'auto' trains in bf16 autocast:
    CUDA devices with bf16 support, and CPUs with AVX512-BF16 instructions (AMX CPUs have them too).

    On 2 AMD EPYC cores with AVX512-BF16, a training step in bf16 autocast vs fp32 took 793 vs 1384 ms for
    t5-efficient-tiny at batch 8 (inputs 512, targets 114), 1631 vs 2957 ms for t5-efficient-small at batch 4
    and 155 vs 240 ms for tiny at batch 1; `t5lab pretrain`'s quickstart (450 steps) ran at ~14.5k vs ~8k
    tokens/s and ended at a held-out loss of 4.563 vs 4.555. CPUs without the instructions emulate bf16
    (unmeasured here) and keep fp32. Other CPU architectures keep fp32 too (unmeasured).
    """
    if device.type == "cuda":  # compute capability 8 (Ampere) on; torch's own check also counts emulation
        return torch.cuda.is_available() and (bool(torch.version.hip)
                                              or torch.cuda.get_device_properties(device).major >= 8)
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # not in older torch: fp32 there
    return device.type == "cpu" and capabilities is not None and bool(capabilities().get("avx512_bf16", False))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 for 'bf16', and for 'auto' where the device computes bf16 natively (`native_bf16`); None: fp32."""
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def _quiet_rng():
    """Runs bookkeeping (DataLoader seeding, evaluation) without moving the training RNG."""
    return torch.random.fork_rng(devices=[torch.cuda.current_device()] if torch.cuda.is_initialized() else [])


def _is_out_of_memory(e: BaseException) -> bool:
    if isinstance(e, torch.OutOfMemoryError):
        return True
    text = str(e)
    return isinstance(e, RuntimeError) and ("can't allocate" in text or "out of memory" in text)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices): dropout and anything else drawn during training."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[dict[str, torch.Tensor]],
    max_batches: int,
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Token-level cross-entropy and accuracy (argmax == label) over up to `max_batches` batches."""
    was_training = model.training
    model.eval()
    loss_sum, correct, count = 0.0, 0, 0
    try:
        with _quiet_rng():
            for i, batch in enumerate(batches):
                if i >= max_batches:
                    break
                batch = _to(batch, device)
                with _autocast(device, dtype):
                    logits = model(**batch).logits
                labels = batch["labels"]
                keep = labels != -100
                loss_sum += F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(),
                                            ignore_index=-100, reduction="sum").item()
                correct += (logits.argmax(-1).eq(labels) & keep).sum().item()
                count += keep.sum().item()
    finally:
        model.train(was_training)
    if count == 0:
        return {}
    return {"eval_loss": loss_sum / count, "eval_accuracy": correct / count, "eval_tokens": count}


class _Progress:
    """A tqdm bar on a terminal; otherwise a plain line about every tenth of the run."""

    def __init__(self, enabled: bool, total: int, initial: int) -> None:
        self.bar = None
        self.enabled, self.total = enabled, total
        self.every = max(1, total // 10)
        if enabled and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, file=sys.stderr)

    def update(self, step: int, info: dict[str, Any]) -> None:
        text = f"loss {info['loss']:.4f}, lr {info['lr']:.2e}, {info['tokens_per_s']:,.0f} tok/s"
        if self.bar is not None:
            self.bar.update(step - self.bar.n)
            self.bar.set_postfix_str(text, refresh=False)
        elif self.enabled and (step % self.every == 0 or step == self.total):
            print(f"step {step}/{self.total}: {text}", file=sys.stderr, flush=True)

    def note(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        elif self.enabled:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def train(
    model: nn.Module,
    config: TrainConfig,
    batches: Batches,
    out: str | Path,
    *,
    eval_batches: Callable[[], Iterable[dict[str, torch.Tensor]]] | None = None,
    evaluator: Callable[[nn.Module], dict[str, float]] | None = None,
    monitor: Monitor | None = None,
    resume: bool = False,
    stop_after: int | None = None,
    meta: dict[str, Any] | None = None,
) -> TrainResult:
    """Train `model` for `config.steps` optimiser steps, writing metrics and checkpoints under `out`.

    Args:
        model: a T5 (or any module whose forward(**batch) returns an object with `.loss` and `.logits`),
            already initialised; it is moved to the configured device.
        config: the loop's settings.
        batches: the training stream, micro-batches of `config.micro_batch_size` examples; its position
            is saved in every checkpoint.
        out: the run folder: `metrics.jsonl`, `loss.png`, `checkpoints/step-*`.
        eval_batches: returns a fresh iterable over the held-out split (the first `config.eval_batches`
            batches are used each time).
        evaluator: a further evaluation run at the same times, given the model in eval mode and outside
            autocast (e.g. generate and score with the task's metric, as `t5lab evaluate` would); its results
            join the eval row in metrics.jsonl.
        monitor: tracks one evaluation metric for "keep the best" and early stopping (see `Monitor`).
        resume: continue from the latest checkpoint under `out` (start fresh when there is none).
        stop_after: stop (with a checkpoint) after this step without changing the schedule, as if the
            run had been interrupted there.
        meta: extra JSON-able information stored in each checkpoint's meta.json (e.g. the configs).
    """
    out = Path(out)
    device = resolve_device(config.device)
    dtype = this_machines_dtype = autocast_dtype(config.precision, device)
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 matmuls, as nanoT5 trains
    elif device.type == "cpu":
        keep_freed_memory()  # no page faults for the memory every step reuses (see host_memory)
    model.to(device)
    model.train()
    optimizer = build_optimizer(model, config, device)
    scheduler = WarmupSchedule(optimizer, kind=config.schedule, warmup=config.warmup, total=config.steps,
                               final_lr=config.final_lr)
    ckpt_root = out / "checkpoints"
    loop: dict[str, Any] = {"step": 0, "log_loss_sum": 0.0, "log_steps": 0, "elapsed_s": 0.0,
                            "best": None, "best_step": None, "best_results": {}, "stale_evals": 0, "stopped": False}
    resumed_from = latest_checkpoint(ckpt_root) if resume else None
    if resumed_from is None:
        seed_everything(config.seed)
    else:
        state = load_checkpoint(resumed_from, model)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # The schedule's shape follows the config (a resumed run may be given more steps).
        scheduler.kind, scheduler.warmup, scheduler.total = config.schedule, config.warmup, config.steps
        scheduler.final_lr = config.final_lr
        batches.load_state_dict(state["data"])
        loop.update(state["loop"])
        set_rng_state(state["rng"])
        if config.precision == "auto" and "autocast" in state["loop"]:
            # 'auto' is resolved once per run: resumed elsewhere (with or without native bf16), the run keeps
            # the arithmetic it started with, as exact resumption needs.
            dtype = torch.bfloat16 if loop["autocast"] == "bfloat16" else None
    loop["autocast"] = None if dtype is None else "bfloat16"
    step = int(loop["step"])
    last = min(config.steps, stop_after) if stop_after is not None else config.steps
    if loop["stopped"]:  # an early-stopped run stays stopped when resumed
        last = step
    log = MetricsLog(out, tensorboard=config.tensorboard, wandb=config.wandb, run_config=asdict(config),
                     resume_step=step if resumed_from else None)
    forward = torch.compile(model) if config.compile else model
    params = [p for p in model.parameters() if p.requires_grad]
    progress = _Progress(config.progress, config.steps, step)
    if resumed_from is not None:
        progress.note(f"resumed from {resumed_from} (step {step})")
    if config.precision == "auto" and dtype != this_machines_dtype:
        progress.note(f"precision auto: {'bf16 autocast' if dtype else 'fp32'}, as the run began (this machine "
                      f"alone would choose {'bf16 autocast' if this_machines_dtype else 'fp32'})")
    elif config.precision == "auto" and dtype is not None:
        progress.note(f"precision auto: bf16 autocast, which this {device.type.upper()} computes natively "
                      "(--precision fp32 for full precision)")

    def checkpoint() -> Path:
        training = {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "data": batches.state_dict(),
            "loop": dict(loop),
            "rng": rng_state(),
        }
        return save_checkpoint(ckpt_root, step, model, training, meta={**(meta or {}), "train": vars(config)},
                               keep_last=config.keep_last)

    def run_eval() -> dict[str, float]:
        result: dict[str, float] = {}
        if eval_batches is not None and config.eval_batches > 0:
            with _quiet_rng():
                source = eval_batches()
            result = evaluate(forward, source, config.eval_batches, device=device, dtype=dtype)
        if evaluator is not None:
            model.eval()
            try:
                # Outside autocast, as `t5lab evaluate` runs the exported model: the best checkpoint's stored
                # predictions and scores are then the ones it reproduces.
                with _quiet_rng():
                    result = {**result, **evaluator(model)}
            finally:
                model.train()
        if result:
            log.write({"step": step, "split": "eval", **result})
            shown = ", ".join(f"{k} {v:.4g}" for k, v in result.items() if k != "eval_tokens")
            progress.note(f"step {step}: {shown}")
            log.plot()
        if monitor is not None and result:
            watch(result)
        return result

    def watch(result: dict[str, float]) -> None:
        if monitor.metric not in result:
            raise T5LabError(f"monitored metric {monitor.metric!r} is not among the evaluation results "
                             f"({', '.join(result)})")
        value = float(result[monitor.metric])
        if monitor.improves(value, loop["best"]):
            loop.update(best=value, best_step=step, best_results=dict(result), stale_evals=0)
            if monitor.on_best is not None:
                monitor.on_best(model, step, result)
        else:
            loop["stale_evals"] += 1
            if monitor.patience is not None and loop["stale_evals"] >= monitor.patience:
                loop["stopped"] = True
                progress.note(f"step {step}: no better {monitor.metric} than {loop['best']:.4g} (step "
                              f"{loop['best_step']}) for {monitor.patience} evaluations; stopping early")

    result = TrainResult(step=step, loss=math.nan, metrics=log.path)
    data: Iterator[dict[str, torch.Tensor]] | None = None
    window_start, window_tokens = time.perf_counter(), 0
    # A checkpoint at step N is written after step N's evaluation, so a resumed run has both already.
    saved_at = evaluated_at = step if resumed_from is not None else -1
    try:
        while step < last:
            t0 = time.perf_counter()
            if data is None:
                with _quiet_rng():
                    data = iter(batches)
            micro = []
            for _ in range(config.grad_accum):
                with _quiet_rng():
                    batch = next(data, None)
                if batch is None:
                    raise T5LabError(f"step {step + 1}: the training data ran out")
                micro.append(batch)
            counts = [int((b["labels"] != -100).sum()) for b in micro]
            total = sum(counts)
            if total == 0:
                raise T5LabError(f"step {step + 1}: the batch has no target tokens (every label is -100)")
            step_loss = torch.zeros((), device=device)
            routers: list[Any] = []
            try:
                for batch, n in zip(micro, counts, strict=True):
                    batch = _to(batch, device)
                    with _autocast(device, dtype):
                        output = forward(**batch)
                    loss = output.loss.float() * (n / total)
                    loss.backward()
                    step_loss += loss.detach()
                    routers = getattr(output, "router", None) or []
                    window_tokens += batch["input_ids"].numel()
            except Exception as e:
                if _is_out_of_memory(e):
                    raise T5LabError(
                        f"step {step + 1}: a micro-batch of {config.micro_batch_size} examples does not fit in "
                        f"memory on {device}; use a smaller --batch_size or more gradient accumulation "
                        f"(--grad_accum)") from None
                raise
            loss_value = step_loss.item()
            if not math.isfinite(loss_value):
                kept = latest_checkpoint(ckpt_root)
                raise T5LabError(
                    f"step {step + 1}: the training loss is {loss_value}; stopped (last good checkpoint: "
                    f"{kept if kept else 'none'}); try a lower --lr, more warmup or fp32 precision")
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.clip if config.clip > 0 else math.inf)
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            loop["step"] = step
            loop["log_loss_sum"] += loss_value
            loop["log_steps"] += 1
            loop["elapsed_s"] += time.perf_counter() - t0
            result.loss = loss_value
            # Rows fall on multiples of log_every only (and the last step), so an interrupted and resumed
            # run logs the same rows as an uninterrupted one (the partial window is in the checkpoint).
            if step % config.log_every == 0 or step == config.steps:
                seconds = time.perf_counter() - window_start
                row = {
                    "step": step,
                    "loss": loop["log_loss_sum"] / loop["log_steps"],
                    "lr": lr,
                    "grad_norm": grad_norm.item(),
                    "tokens_per_s": window_tokens / seconds if seconds > 0 else 0.0,
                    "elapsed_s": round(loop["elapsed_s"], 3),
                    **router_metrics(routers),
                }
                log.write(row)
                progress.update(step, row)
                loop["log_loss_sum"], loop["log_steps"] = 0.0, 0
                window_start, window_tokens = time.perf_counter(), 0
            if config.eval_every and step % config.eval_every == 0 and step < config.steps:
                result.eval, evaluated_at = run_eval() or result.eval, step
                if loop["stopped"]:
                    break
            if config.save_every and step % config.save_every == 0 and step < last:
                result.checkpoint, saved_at = checkpoint(), step
        if step == config.steps and evaluated_at != step:
            result.eval = run_eval() or result.eval
        if saved_at != step:
            result.checkpoint = checkpoint()
        else:
            result.checkpoint = latest_checkpoint(ckpt_root)
        if step > 0:
            log.plot()
    finally:
        progress.close()
        log.close()
    result.step, result.elapsed_s = step, loop["elapsed_s"]
    result.best, result.best_step, result.stopped_early = loop["best_results"], loop["best_step"], loop["stopped"]
    return result
