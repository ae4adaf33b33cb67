"""What a run shows and reports: the progress bar, the metrics log (rank 0 alone), the monitor that keeps the
best evaluation and stops early, and the `TrainResult` handed back to the recipe."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from t5lab.errors import T5LabError
from t5lab.train.config import TrainConfig
from t5lab.train.metrics import MetricsLog
from t5lab.train.state import TrainState


@dataclass(frozen=True)
class Monitor:
    """Watch one evaluation metric: call `on_best` whenever it improves, stop when it stalls.

    Args:
        metric: a key of the evaluation results (e.g. "accuracy" from an `evaluator`, or "eval_loss").
        mode: "max" if larger is better, "min" otherwise.
        patience: stop after this many evaluations in a row without improvement (None: never stop early).
        on_best: called as on_best(model, step, results) after an improving evaluation (e.g. to export
            the model); it runs again for the same step if a run is resumed from before it had saved.
            Under torchrun it runs on rank 0 alone.
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

    def observe(self, state: TrainState, result: dict[str, float]) -> str | None:
        """Update `state`'s best/patience with an evaluation at `state.step`; returns a note when it stops
        the run. (`on_best` is the caller's to run: only one rank writes.)"""
        if self.metric not in result:
            raise T5LabError(f"monitored metric {self.metric!r} is not among the evaluation results "
                             f"({', '.join(result)})")
        value = float(result[self.metric])
        if self.improves(value, state.best):
            state.best, state.best_step, state.best_results, state.stale_evals = value, state.step, dict(result), 0
            return None
        state.stale_evals += 1
        if self.patience is not None and state.stale_evals >= self.patience:
            state.stopped = True
            return (f"step {state.step}: no better {self.metric} than {state.best:.4g} (step {state.best_step}) "
                    f"for {self.patience} evaluations; stopping early")
        return None


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
    # The trained weights as a plain single-device module (under FSDP a gathered copy, on rank 0 alone;
    # None on the other ranks): what the recipe exports.
    model: nn.Module | None = None


def describe_run(config: TrainConfig, world_size: int, device: torch.device, dtype: torch.dtype | None,
                 machine_dtype: torch.dtype | None, resumed_from: Path | None, step: int) -> list[str]:
    """The lines a run starts with: where it resumed, how it is spread over ranks, which arithmetic it chose."""
    notes = []
    if resumed_from is not None:
        notes.append(f"resumed from {resumed_from} (step {step})")
    if world_size > 1:
        notes.append(f"{world_size} ranks, parallel {config.parallel}, "
                     f"{config.rank_micro_batch_size(world_size)} examples per rank and micro-batch")
    if config.precision == "auto" and dtype != machine_dtype:
        notes.append(f"precision auto: {_arithmetic(dtype)}, as the run began (this machine alone would choose "
                     f"{_arithmetic(machine_dtype)})")
    elif config.precision == "auto" and dtype == torch.float16:
        notes.append(f"precision auto: {_arithmetic(dtype)}, as this {device.type.upper()} has no native bf16 "
                     "(--precision fp32 for full precision)")
    elif config.precision == "auto" and dtype is not None:
        notes.append(f"precision auto: {_arithmetic(dtype)}, which this {device.type.upper()} computes natively "
                     "(--precision fp32 for full precision)")
    return notes


def _arithmetic(dtype: torch.dtype | None) -> str:
    if dtype is None:
        return "fp32"
    return "fp16 autocast with a gradient scaler" if dtype == torch.float16 else "bf16 autocast"


class Progress:
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


class Reporter:
    """Metrics rows, plots and progress of one run, written by the reporting rank (rank 0) only; on the other
    ranks every call does nothing, so the loop reads the same on all of them."""

    def __init__(self, out: Path, *, enabled: bool, tensorboard: bool, progress: bool, total: int,
                 step: int, resumed: bool, wandb: str | None = None, run_config: dict[str, Any] | None = None) -> None:
        self.path = out / "metrics.jsonl"
        self.log = None
        if enabled:
            self.log = MetricsLog(out, tensorboard=tensorboard, wandb=wandb, run_config=run_config,
                                  resume_step=step if resumed else None)
        self.progress = Progress(progress and enabled, total, step)

    def row(self, row: dict[str, Any]) -> None:
        if self.log is not None:
            self.log.write(row)
            if "loss" in row:
                self.progress.update(row["step"], row)

    def evaluation(self, step: int, result: dict[str, float]) -> None:
        self.row({"step": step, "split": "eval", **result})
        self.note(f"step {step}: " + ", ".join(f"{k} {v:.4g}" for k, v in result.items() if k != "eval_tokens"))
        self.plot()

    def note(self, text: str) -> None:
        self.progress.note(text)

    def plot(self) -> None:
        if self.log is not None:
            self.log.plot()

    def close(self) -> None:
        self.progress.close()
        if self.log is not None:
            self.log.close()
