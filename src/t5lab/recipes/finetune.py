"""`t5lab finetune`: fine-tune a T5 on one task or a T5-style mixture of tasks, with the shared training loop.

The run folder OUT holds what the training loop writes (metrics.jsonl, loss.png, checkpoints/) plus:
    learning_curve.png   training loss and the validation metric against step
    best/                the best model by the task's primary metric, in Hugging Face format (config.json,
                         model.safetensors, spiece.model, ...) with a model card README.md, the scores
                         (eval_results.json) and that evaluation's predictions (predictions.jsonl)
Validation: every `eval_every` steps the model generates answers for the validation split (batched, KV
cache) and the task's official metric scores them; these rows join metrics.jsonl with the held-out loss.
With several tasks, each task's metrics are prefixed with its name and the best model is chosen by the
average of their primary metrics (as T5 averages GLUE).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from t5lab.errors import T5LabError
from t5lab.files import write_atomic, write_figure
from t5lab.train.config import TrainConfig

if TYPE_CHECKING:
    from t5lab.predict import TaskResult

# T5's fine-tuning recipe uses Adafactor at a constant 1e-3; AdamW wants a smaller step.
DEFAULT_LR = {"adafactor": 1e-3, "adamw": 3e-4, "adamwscale": 3e-4}
AVERAGE = "average"


def finetune(
    task: str | list[str],
    model: str,
    tokenizer: str | None = None,
    out: str = "runs/finetune",
    data_dir: str | None = None,
    steps: int = 1000,
    batch_size: int = 32,
    grad_accum: int = 1,
    lr: float | None = None,
    optimizer: Literal["adafactor", "adamw", "adamwscale"] = "adafactor",
    schedule: Literal["constant", "linear", "cosine", "inverse-sqrt"] = "constant",
    warmup: int = 0,
    weight_decay: float = 0.0,
    dropout: float = 0.1,
    expert_dropout: float = 0.4,
    max_input_length: int = 512,
    max_target_length: int = 128,
    eval_every: int = 200,
    eval_limit: int | None = None,
    eval_batch_size: int | None = None,
    early_stopping_patience: int | None = None,
    num_beams: int = 1,
    max_new_tokens: int | None = None,
    mixing: Literal["examples-proportional", "equal"] = "examples-proportional",
    mixing_cap: int | None = None,
    mixing_temperature: float = 1.0,
    seed: int = 0,
    resume: bool = False,
    device: str = "auto",
    precision: Literal["auto", "fp32", "bf16"] = "auto",
    log_every: int = 10,
    progress: bool = True,
    tensorboard: bool = False,
    wandb: str | None = None,
) -> dict[str, Any]:
    """Fine-tune a model on a task (or a mixture) and keep the best checkpoint by the task's metric.

    Args:
        task: a task name (glue/sst2, superglue/boolq, squad, ...), several separated by commas, or a list;
            several tasks are mixed T5-style (see `mixing`).
        model: a Hugging Face T5 checkpoint folder (with spiece.model) or a shape name such as
            t5-efficient-tiny (random weights; then give --tokenizer).
        tokenizer: a spiece.model file or its folder (default: the model folder's).
        out: the run folder (metrics.jsonl, learning_curve.png, checkpoints/, best/).
        data_dir: folder holding the task data (e.g. shared/data); default $T5LAB_DATA.
        steps: optimiser steps.
        batch_size: training examples per step.
        grad_accum: micro-batches per step (batch_size is split among them).
        lr: peak learning rate (default 1e-3 for Adafactor, 3e-4 for AdamW).
        optimizer: adafactor (T5's choice), adamw or adamwscale.
        schedule: constant (T5 fine-tuning), linear or cosine decay, or inverse-sqrt, after `warmup`.
        warmup: linear warmup steps.
        weight_decay: decoupled weight decay (AdamW).
        dropout: dropout rate while fine-tuning (T5: 0.1).
        expert_dropout: dropout inside the experts of a Switch model (Switch Transformers: 0.4).
        max_input_length: inputs longer than this are truncated (EOS kept).
        max_target_length: targets longer than this are truncated (EOS kept).
        eval_every: generate on the validation split and score it every this many steps (0: at the end only).
        eval_limit: evaluate on the first this many validation examples of each task (default: all).
        eval_batch_size: examples per generation batch (default: batch_size).
        early_stopping_patience: stop after this many evaluations without a better score (default: never).
        num_beams: beam width for validation generation (1: greedy).
        max_new_tokens: generation length cap (default: the longest validation reference).
        mixing: how several tasks are mixed: examples-proportional (T5) or equal.
        mixing_cap: T5's K: tasks with more examples than this get no more weight.
        mixing_temperature: T5's mixing temperature (1: proportional).
        seed: seeds the data order, dropout and a shape-name model's initialisation.
        resume: continue from the latest checkpoint in `out`.
        device: auto, cpu, cuda or cuda:N.
        precision: auto (bf16 autocast on GPUs and CPUs that compute bf16 natively, else fp32), fp32 or bf16.
        log_every: training rows in metrics.jsonl every this many steps.
        progress: show progress on stderr.
        tensorboard: also write TensorBoard event files to OUT/tensorboard (pip install 't5lab[tensorboard]').
        wandb: also log to this Weights & Biases project (pip install 't5lab[wandb]').
    """
    # Imported here, not at the top, so that the CLI's other commands do not pay for torch.
    from t5lab.data.seq2seq import FinetuneStream, encode_examples, eval_batches
    from t5lab.predict import evaluate_task
    from t5lab.recipes.sources import load_split, resolve_data_dir, resolve_model, resolve_tasks, with_dropout
    from t5lab.train.loop import Monitor, train

    tasks = resolve_tasks(task)
    root = resolve_data_dir(data_dir, tasks)
    if early_stopping_patience is not None and early_stopping_patience < 1:
        raise T5LabError(f"early_stopping_patience={early_stopping_patience}: expected a positive number")
    config = TrainConfig(
        steps=steps, batch_size=batch_size, grad_accum=grad_accum, lr=lr or DEFAULT_LR[optimizer],
        optimizer=optimizer, schedule=schedule, warmup=warmup, final_lr=0.0, weight_decay=weight_decay,
        precision=precision, eval_every=eval_every, save_every=eval_every, log_every=log_every, seed=seed,
        device=device, progress=progress, tensorboard=tensorboard, wandb=wandb,
    )
    # Data first: a bad file fails in a second, before the model loads.
    raw = {t.name: (load_split(t, "train", root), load_split(t, "validation", root, eval_limit)) for t in tasks}
    net, tok = resolve_model(model, tokenizer, seed=seed)
    net = with_dropout(net, dropout, expert_dropout)

    def encode(examples):
        return encode_examples(examples, tok, max_input_length, max_target_length)

    train_sets = {name: encode(train_split) for name, (train_split, _) in raw.items()}
    valid_sets = {name: encode(valid_split) for name, (_, valid_split) in raw.items()}
    for split, sets in (("train", train_sets), ("validation", valid_sets)):
        for name, enc in sets.items():
            if enc.truncated_inputs or enc.truncated_targets:
                print(f"{name} {split}: truncated {enc.truncated_inputs} inputs to {max_input_length} and "
                      f"{enc.truncated_targets} targets to {max_target_length} tokens", file=sys.stderr)
    stream = FinetuneStream(train_sets, config.micro_batch_size, rates=mixing, cap=mixing_cap,
                            temperature=mixing_temperature, seed=seed, pad_id=tok.pad_id)
    eval_bs = eval_batch_size or batch_size
    several = len(tasks) > 1
    out_dir = Path(out)
    latest: dict[str, list[TaskResult]] = {}

    def evaluator(m) -> dict[str, float]:
        results = [evaluate_task(m, tok, t, valid_sets[t.name], batch_size=eval_bs, max_new_tokens=max_new_tokens,
                                 max_target_length=max_target_length, num_beams=num_beams) for t in tasks]
        latest["results"] = results
        return flatten(results, several)

    def on_best(m, step: int, row: dict[str, float]) -> None:
        export_best(m, tok, out_dir / "best", latest["results"], step=step, base=model, row=row,
                    settings=dict(config.__dict__, dropout=dropout, max_input_length=max_input_length,
                                  max_target_length=max_target_length, num_beams=num_beams))

    monitor = Monitor(metric=AVERAGE if several else tasks[0].primary_metric, mode="max",
                      patience=early_stopping_patience, on_best=on_best)
    n_eval_batches = sum(math.ceil(len(v) / eval_bs) for v in valid_sets.values())
    result = train(
        net,
        config.replace(eval_batches=n_eval_batches),
        stream,
        out_dir,
        eval_batches=lambda: (b for v in valid_sets.values() for b in eval_batches(v, eval_bs, tok.pad_id)),
        evaluator=evaluator,
        monitor=monitor,
        resume=resume,
        meta={"task": [t.name for t in tasks], "model": str(model), "model_config": net.config.to_hf()},
    )
    curve = plot_learning_curve(out_dir / "metrics.jsonl", out_dir / "learning_curve.png", monitor.metric)
    summary = {
        "step": result.step,
        "best_step": result.best_step,
        "best": {k: v for k, v in result.best.items() if k != "eval_tokens"},
        "stopped_early": result.stopped_early,
        "epochs": stream.epochs(),
        "out": str(out_dir),
        "best_model": str(out_dir / "best"),
        "learning_curve": str(curve),
    }
    if progress:
        print(f"best {monitor.metric} {result.best.get(monitor.metric, float('nan')):.2f} at step "
              f"{result.best_step}; model in {out_dir / 'best'}", file=sys.stderr)
    return summary


def flatten(results: Sequence[TaskResult], prefixed: bool) -> dict[str, float]:
    """One eval row: the metrics (prefixed by task with several tasks, plus their primary average)."""
    if not prefixed:
        return dict(results[0].metrics)
    row = {f"{r.task}/{k}": v for r in results for k, v in r.metrics.items()}
    row[AVERAGE] = sum(r.primary for r in results) / len(results)
    return row


def write_predictions(path: Path, result: TaskResult) -> None:
    """One JSON object per example: id, input, prediction, target, references (written atomically)."""
    lines = []
    for e, p in zip(result.encoded.examples, result.predictions, strict=True):
        row = {"task": result.task, "id": e.id, "input": e.input, "prediction": p, "target": e.target}
        if e.references:
            row["references"] = list(e.references)
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    write_atomic(path, "".join(lines).encode())


def export_best(model, tokenizer, folder: Path, results: Sequence[TaskResult], *, step: int, base: str,
                row: dict[str, float], settings: dict[str, Any]) -> None:
    """The HF-format model, its card, scores and predictions in `folder`."""
    from t5lab.interop.hf import save_pretrained

    save_pretrained(model, folder, tokenizer=tokenizer)
    for i, r in enumerate(results):
        write_predictions(folder / ("predictions.jsonl" if len(results) == 1 else f"predictions-{i}.jsonl"), r)
    scores = {"step": step, **{k: v for k, v in row.items() if k != "eval_tokens"}}
    (folder / "eval_results.json").write_text(json.dumps(scores, indent=2) + "\n")
    (folder / "README.md").write_text(model_card(results, step=step, base=base, settings=settings))


def model_card(results: Sequence[TaskResult], *, step: int, base: str, settings: dict[str, Any]) -> str:
    names = ", ".join(r.task for r in results)
    lines = [
        "---",
        "library_name: t5lab",
        "pipeline_tag: text2text-generation",
        "tags: [t5, t5lab]",
        "---",
        "",
        f"# {Path(base).name} fine-tuned on {names}",
        "",
        f"Fine-tuned from `{base}` with `t5lab finetune`; this is the checkpoint of step {step}, the best by "
        + (f"the task's primary metric ({results[0].primary_metric})." if len(results) == 1
           else "the average of the tasks' primary metrics."),
        "",
        "## Validation results",
        "",
        "| task | examples | metric | score |",
        "|---|---:|---|---:|",
    ]
    for r in results:
        for k, v in r.metrics.items():
            lines.append(f"| {r.task} | {len(r.encoded)} | {k}{' (primary)' if k == r.primary_metric else ''} "
                         f"| {v:.2f} |")
    lines += ["", "Scores are percentages, computed by t5lab's port of each benchmark's official metric on "
              "greedy (or beam) generations.", "", "## Training settings", ""]
    keys = ("steps", "batch_size", "optimizer", "lr", "schedule", "warmup", "weight_decay", "dropout", "seed",
            "max_input_length", "max_target_length", "num_beams")
    lines += [f"- {k}: {settings[k]}" for k in keys if k in settings]
    return "\n".join(lines) + "\n"


def plot_learning_curve(metrics: Path, path: Path, metric: str) -> Path:
    """Training loss (left axis) and the validation metric (right axis) against step, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from t5lab.train.metrics import read_metrics

    rows = read_metrics(metrics)
    train_rows = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    eval_rows = [(r["step"], r[metric]) for r in rows if r.get("split") == "eval" and metric in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    if train_rows:
        ax.plot(*zip(*train_rows, strict=True), label="training loss", linewidth=1, color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.grid(alpha=0.3)
    right = ax.twinx()
    if eval_rows:
        right.plot(*zip(*eval_rows, strict=True), "o-", color="tab:orange", markersize=4,
                   label=f"validation {metric}")
    right.set_ylabel(f"validation {metric} (%)")
    handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
    if handles:
        ax.legend(handles=handles, loc="center right")
    fig.tight_layout()
    write_figure(fig, path)
    plt.close(fig)
    return path
