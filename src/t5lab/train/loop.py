"""The one training loop. Pre-training, fine-tuning and studies call `train`; none of them copies it.

A step: draw `grad_accum` micro-batches, weight each micro-batch's mean loss by its share of the step's
target tokens (counted over all ranks, so padding never skews the average and 2 ranks compute what 1 does),
backpropagate, clip the global gradient norm, step the optimiser and the schedule. Around it: the device and
precision policy (`t5lab.device`), parallelism (`parallel`), periodic held-out evaluation, metrics rows and
progress (`progress`), atomic checkpoints (`checkpoint`, or `distributed_checkpoint` under torchrun) and
exact resume.

Exact resume: everything a later step depends on is in the checkpoint (weights, optimiser, schedule, every
RNG, the data stream's position, the `TrainState`), and whatever draws random numbers for bookkeeping
rather than training (DataLoader seeding, evaluation) runs under a forked RNG so that it cannot shift the
training RNG. On CPU a resumed run therefore logs the same losses as an uninterrupted one, bit for bit.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from t5lab.device import apply_process_settings, autocast, autocast_dtype, resolve_device
from t5lab.errors import T5LabError
from t5lab.train import distributed, parallel, resuming
from t5lab.train.checkpoint import (
    latest_checkpoint,
)
from t5lab.train.config import TrainConfig
from t5lab.train.evaluation import evaluate, quiet_rng, to_device
from t5lab.train.metrics import router_metrics
from t5lab.train.optim import build_optimizer
from t5lab.train.progress import Monitor, Reporter, TrainResult, describe_run
from t5lab.train.schedule import WarmupSchedule
from t5lab.train.state import Batches, TrainState, seed_everything


def _is_out_of_memory(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, torch.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and ("can't allocate" in text or "out of memory" in text))


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
            already initialised (identically on every rank); it is moved to the configured device.
        config: the loop's settings.
        batches: the training stream: micro-batches of `config.rank_micro_batch_size(world size)` examples;
            its position is saved in every checkpoint.
        out: the run folder: `metrics.jsonl`, `loss.png`, `checkpoints/step-*`.
        eval_batches: returns a fresh iterable over the held-out split (the first `config.eval_batches`
            batches are used each time, by every rank alike).
        evaluator: a further evaluation run at the same times, given the model in eval mode and outside
            autocast (e.g. generate and score with the task's metric, as `t5lab evaluate` would); its results
            join the eval row in metrics.jsonl.
        monitor: tracks one evaluation metric for "keep the best" and early stopping (see `Monitor`).
        resume: continue from the latest checkpoint under `out` (start fresh when there is none).
        stop_after: stop (with a checkpoint) after this step without changing the schedule, as if the
            run had been interrupted there.
        meta: extra JSON-able information stored in each checkpoint's meta.json (e.g. the configs).
    """
    device = resolve_device(config.device)
    ranks = distributed.init(device)
    try:
        return _Run(model, config, batches, Path(out), device, ranks, eval_batches, evaluator, monitor, resume,
                    meta).run(stop_after)
    except T5LabError as e:
        if ranks.size > 1:  # every rank reports its own failure, saying which rank it is
            raise T5LabError(f"rank {ranks.rank} of {ranks.size}: {e}") from None
        raise


class _Run:
    """One call of `train`: the pieces it built and the steps it takes."""

    def __init__(self, model: nn.Module, config: TrainConfig, batches: Batches, out: Path, device: torch.device,
                 ranks: distributed.World, eval_batches: Callable[[], Iterable[dict[str, torch.Tensor]]] | None,
                 evaluator: Callable[[nn.Module], dict[str, float]] | None, monitor: Monitor | None,
                 resume: bool, meta: dict[str, Any] | None) -> None:
        self.config, self.batches, self.device, self.ranks = config, batches, device, ranks
        self.eval_batches, self.evaluator, self.monitor = eval_batches, evaluator, monitor
        config.rank_micro_batch_size(ranks.size)  # batch_size is the global batch: it must divide
        if config.parallel == "fsdp" and evaluator is not None:
            raise T5LabError("train config field 'parallel'='fsdp': an evaluator (generation) needs the whole "
                             "model on one rank; use parallel 'ddp'")
        self.settings = apply_process_settings(device, config.host_memory)
        self.meta = {**(meta or {}), "train": vars(config), "process": self.settings, "world_size": ranks.size}
        self.ckpt_root = out / "checkpoints"
        model.to(device)
        model.train()
        self.resumed = resuming.find(self.ckpt_root, config, model) if resume else None
        self.resumed_from = self.resumed.path if self.resumed else None
        self.state = self.resumed.state if self.resumed else TrainState()
        self.machine_dtype = autocast_dtype(config.precision, device)
        self.dtype = self.machine_dtype
        if config.precision == "auto" and self.resumed and "autocast" in self.resumed.training["loop"]:
            # 'auto' is resolved once per run: resumed elsewhere (with or without native bf16), the run keeps
            # the arithmetic it started with, as exact resumption needs.
            self.dtype = torch.bfloat16 if self.state.autocast == "bfloat16" else None
        self.state.autocast = None if self.dtype is None else "bfloat16"
        self.model, self.lr_used = model, 0.0
        self.blueprint = parallel.blueprint_of(model, config)
        self.wrapped = parallel.parallelize(model, config, device, self.dtype)
        self.forward: nn.Module = torch.compile(self.wrapped) if config.compile else self.wrapped  # type: ignore[assignment]  # an OptimizedModule
        self.optimizer = build_optimizer(model, config, device)
        self.scheduler = WarmupSchedule(self.optimizer, kind=config.schedule, warmup=config.warmup,
                                        total=config.steps, final_lr=config.final_lr)
        if self.resumed is None:
            seed_everything(config.seed + ranks.rank)
        else:
            resuming.restore(self.resumed, model, self.optimizer, self.scheduler, batches, config, ranks.rank)
        self.params = [p for p in model.parameters() if p.requires_grad]
        distributed.barrier()  # every rank has checked the run folder before rank 0 writes to it
        self.report = Reporter(out, enabled=ranks.is_main, tensorboard=config.tensorboard, progress=config.progress,
                               total=config.steps, step=self.state.step, resumed=self.resumed_from is not None,
                               wandb=config.wandb, run_config=dataclasses.asdict(config))
        for note in describe_run(config, self.ranks.size, self.device, self.dtype, self.machine_dtype,
                                 self.resumed_from, self.state.step):
            self.report.note(note)

    def run(self, stop_after: int | None) -> TrainResult:
        config, state = self.config, self.state
        last = min(config.steps, stop_after) if stop_after is not None else config.steps
        if state.stopped:  # an early-stopped run stays stopped when resumed
            last = state.step
        result = TrainResult(step=state.step, loss=math.nan, metrics=self.report.path)
        data: Iterator[dict[str, torch.Tensor]] | None = None
        window_start, window_tokens = time.perf_counter(), 0
        # A checkpoint at step N is written after step N's evaluation, so a resumed run has both already.
        saved_at = evaluated_at = state.step if self.resumed_from is not None else -1
        try:
            while state.step < last:
                t0 = time.perf_counter()
                if data is None:
                    with quiet_rng():
                        data = iter(self.batches)
                result.loss, grad_norm, routers, tokens = self._step(data)
                window_tokens += tokens
                state.elapsed_s += time.perf_counter() - t0
                # Rows fall on multiples of log_every only (and the last step), so an interrupted and resumed
                # run logs the same rows as an uninterrupted one (the partial window is in the checkpoint).
                if state.step % config.log_every == 0 or state.step == config.steps:
                    seconds = time.perf_counter() - window_start
                    all_tokens = float(distributed.sum_over_ranks(torch.tensor(float(window_tokens))))
                    self.report.row({"step": state.step, "loss": state.end_log_window(), "lr": self.lr_used,
                                     "grad_norm": grad_norm,
                                     "tokens_per_s": all_tokens / seconds if seconds > 0 else 0.0,
                                     "elapsed_s": round(state.elapsed_s, 3), **router_metrics(routers)})
                    window_start, window_tokens = time.perf_counter(), 0
                if config.eval_every and state.step % config.eval_every == 0 and state.step < config.steps:
                    result.eval, evaluated_at = self._evaluate() or result.eval, state.step
                    if state.stopped:
                        break
                if config.save_every and state.step % config.save_every == 0 and state.step < last:
                    result.checkpoint, saved_at = self._checkpoint(), state.step
            if state.step == config.steps and evaluated_at != state.step:
                result.eval = self._evaluate() or result.eval
            result.checkpoint = self._checkpoint() if saved_at != state.step else latest_checkpoint(self.ckpt_root)
            if state.step > 0:
                self.report.plot()
        finally:
            self.report.close()
        result.step, result.elapsed_s = state.step, state.elapsed_s
        result.best, result.best_step, result.stopped_early = state.best_results, state.best_step, state.stopped
        plain = parallel.plain_copy(self.model, self.blueprint)
        result.model = plain if self.ranks.is_main else None
        return result

    def _step(self, data: Iterator[dict[str, torch.Tensor]]) -> tuple[float, float, list[Any], int]:
        """One optimiser step; returns the global loss, the gradient norm, the last router statistics and the
        input tokens this rank processed."""
        config, state, device = self.config, self.state, self.device
        micro = []
        for _ in range(config.grad_accum):
            with quiet_rng():
                batch = next(data, None)
            if batch is None:
                raise T5LabError(f"step {state.step + 1}: the training data ran out")
            micro.append(batch)
        counts = [int((b["labels"] != -100).sum()) for b in micro]
        total = int(distributed.sum_over_ranks(torch.tensor(sum(counts), device=device)))
        if total == 0:
            raise T5LabError(f"step {state.step + 1}: the batch has no target tokens (every label is -100)")
        step_loss = torch.zeros((), device=device)
        routers: list[Any] = []
        tokens = 0
        try:
            for i, (batch, n) in enumerate(zip(micro, counts, strict=True)):
                batch = to_device(batch, device)
                with parallel.gradient_sync(self.wrapped, enabled=i == len(micro) - 1):
                    with autocast(device, self.dtype):
                        output = self.forward(**batch)
                    # Ranks average gradients: scaled by the world size, the sum over ranks is the mean over
                    # the global batch's target tokens.
                    loss = output.loss.float() * (n * self.ranks.size / total)
                    loss.backward()
                step_loss += loss.detach()
                routers = getattr(output, "router", None) or []
                tokens += batch["input_ids"].numel()
        except Exception as e:
            if _is_out_of_memory(e):
                raise T5LabError(
                    f"step {state.step + 1}: a micro-batch of {config.rank_micro_batch_size(self.ranks.size)} "
                    f"examples does not fit in memory on {device}; use a smaller --batch_size or more gradient "
                    "accumulation (--grad_accum)") from None
            raise
        loss_value = float(distributed.sum_over_ranks(step_loss)) / self.ranks.size
        if not math.isfinite(loss_value):
            kept = latest_checkpoint(self.ckpt_root)
            raise T5LabError(
                f"step {state.step + 1}: the training loss is {loss_value}; stopped (last good checkpoint: "
                f"{kept if kept else 'none'}); try a lower --lr, more warmup or fp32 precision")
        grad_norm = parallel.clip_gradients(self.params, config.clip)
        self.lr_used = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        state.step += 1
        state.log_loss_sum += loss_value
        state.log_steps += 1
        return loss_value, grad_norm, routers, tokens

    def _evaluate(self) -> dict[str, float]:
        """Held-out loss (every rank alike, so FSDP's collectives line up) and the evaluator; rank 0 logs."""
        config, state = self.config, self.state
        result: dict[str, float] = {}
        if self.eval_batches is not None and config.eval_batches > 0:
            with quiet_rng():
                source = self.eval_batches()
            result = evaluate(self.forward, source, config.eval_batches, device=self.device, dtype=self.dtype)
        if self.evaluator is not None:
            self.model.eval()
            try:
                # Outside autocast, as `t5lab evaluate` runs the exported model: the best checkpoint's stored
                # predictions and scores are then the ones it reproduces.
                with quiet_rng():
                    result = {**result, **self.evaluator(self.model)}
            finally:
                self.model.train()
        if result:
            self.report.evaluation(state.step, result)
        if self.monitor is not None and result:
            best_before = state.best_step
            stopping = self.monitor.observe(state, result)
            if stopping:
                self.report.note(stopping)
            if state.best_step != best_before and self.monitor.on_best is not None and self.ranks.is_main:
                self.monitor.on_best(self.model, state.step, result)
        return result

    def _checkpoint(self) -> Path:
        config, state = self.config, self.state
        data = self.batches.state_dict()
        if self.ranks.size > 1 and hasattr(self.batches, "merge_states"):
            # One world-size-independent position from every rank's lanes: resumable on any world size.
            data = self.batches.merge_states(distributed.gather_objects(data))
        training = {"scheduler": self.scheduler.state_dict(), "data": data, "loop": state.state_dict()}
        return resuming.save(self.ckpt_root, state.step, self.model, self.optimizer, training, self.meta,
                                config.keep_last)
