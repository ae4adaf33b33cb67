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

import math
import sys
from pathlib import Path
from typing import Any, Literal

from typing_extensions import Unpack

from t5lab.errors import T5LabError
from t5lab.recipes.options import EvaluationOptions, with_defaults
from t5lab.train.config import TrainConfig

# T5's fine-tuning recipe uses Adafactor at a constant 1e-3; AdamW wants a smaller step.
DEFAULT_LR = {"adafactor": 1e-3, "adamw": 3e-4, "adamwscale": 3e-4}


def finetune(
    task: str | list[str],
    model: str,
    out: str = "runs/finetune",
    steps: int = 1000,
    batch_size: int = 32,
    grad_accum: int = 1,
    lr: float | None = None,
    optimizer: Literal["adafactor", "adamw", "adamwscale"] | None = None,
    schedule: Literal["constant", "linear", "cosine", "inverse-sqrt"] = "constant",
    warmup: int = 0,
    weight_decay: float = 0.0,
    dropout: float = 0.1,
    expert_dropout: float = 0.4,
    eval_every: int = 200,
    eval_limit: int | None = None,
    eval_batch_size: int | None = None,
    early_stopping_patience: int | None = None,
    mixing: Literal["examples-proportional", "equal"] = "examples-proportional",
    mixing_cap: int | None = None,
    mixing_temperature: float = 1.0,
    resume: bool = False,
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto",
    log_every: int = 10,
    progress: bool = True,
    lora_rank: int = 0,
    lora_alpha: float | None = None,
    lora_dropout: float = 0.0,
    lora_targets: str = "q,v",
    lora_merge: bool = False,
    tensorboard: bool = False,
    wandb: str | None = None,
    **options: Unpack[EvaluationOptions],
) -> dict[str, Any]:
    """Fine-tune a model on a task (or a mixture) and keep the best checkpoint by the task's metric.

    Args:
        task: a task name (glue/sst2, superglue/boolq, squad, ...), several separated by commas, or a list;
            several tasks are mixed T5-style (see `mixing`).
        model: a Hugging Face T5 checkpoint folder (with spiece.model) or a shape name such as
            t5-efficient-tiny (random weights; then give --tokenizer).
        out: the run folder (metrics.jsonl, learning_curve.png, checkpoints/, best/).
        steps: optimiser steps.
        batch_size: training examples per step.
        grad_accum: micro-batches per step (batch_size is split among them).
        lr: peak learning rate (default 1e-3 for Adafactor, 3e-4 for AdamW).
        optimizer: adafactor (T5's choice; the default), adamw or adamwscale. With LoRA the default is adamw:
            Adafactor scales each step by the tensor's RMS, and a LoRA B matrix starts at zero, so it would
            barely move (SST-2 from a quickstart model, 300 steps: loss 7.0 with Adafactor, 0.42 with AdamW).
        schedule: constant (T5 fine-tuning), linear or cosine decay, or inverse-sqrt, after `warmup`.
        warmup: linear warmup steps.
        weight_decay: decoupled weight decay (AdamW).
        dropout: dropout rate while fine-tuning (T5: 0.1).
        expert_dropout: dropout inside the experts of a Switch model (Switch Transformers: 0.4).
        eval_every: generate on the validation split and score it every this many steps (0: at the end only).
        eval_limit: evaluate on the first this many validation examples of each task (default: all).
        eval_batch_size: examples per generation batch (default: batch_size).
        early_stopping_patience: stop after this many evaluations without a better score (default: never).
        mixing: how several tasks are mixed: examples-proportional (T5) or equal.
        mixing_cap: T5's K: tasks with more examples than this get no more weight.
        mixing_temperature: T5's mixing temperature (1: proportional).
        resume: continue from the latest checkpoint in `out`.
        precision: auto (bf16 autocast where the device computes bf16 natively; fp16 with a gradient scaler on
            CUDA GPUs without bf16; else fp32), fp32, bf16 or fp16.
        log_every: training rows in metrics.jsonl every this many steps.
        progress: show progress on stderr.
        lora_rank: train LoRA adapters of this rank (peft; `pip install 't5lab[lora]'`) instead of every
            weight (0: full fine-tuning). best/ then holds the adapters in peft's format (adapter_config.json,
            adapter_model.safetensors) for the base model folder (a shape name's random base is saved to
            OUT/base).
        lora_alpha: LoRA scale numerator, the update being alpha/rank * B A (default 2 * rank).
        lora_dropout: dropout on the adapters' input.
        lora_targets: comma-separated projections to adapt: q,k,v,o (attention), wi,wi_0,wi_1,wo (feed-forward).
        lora_merge: also write best/merged/, a plain checkpoint folder with the adapters merged into the weights.
        tensorboard: also write TensorBoard event files to OUT/tensorboard (pip install 't5lab[tensorboard]').
        wandb: also log to this Weights & Biases project (pip install 't5lab[wandb]').
        options: the shared groups (`EvaluationOptions`): --tokenizer, --data-dir, --device, --seed,
            --num-beams, --max-new-tokens, --max-input-length, --max-target-length.
    """
    # Imported here, not at the top, so that the CLI's other commands do not pay for torch.
    from t5lab.data.seq2seq import FinetuneStream, encode_examples, eval_batches
    from t5lab.device import resolve_device
    from t5lab.kernels import apply
    from t5lab.predict import TaskResult, evaluate_task
    from t5lab.recipes.run_outputs import AVERAGE, export_best, flatten, plot_learning_curve
    from t5lab.recipes.sources import load_split, resolve_data_dir, resolve_model, resolve_tasks, with_dropout
    from t5lab.train.distributed import RankSlice, world
    from t5lab.train.loop import Monitor, train

    given = with_defaults(options)
    tokenizer, data_dir, device, seed = given["tokenizer"], given["data_dir"], given["device"], given["seed"]
    num_beams, max_new_tokens = given["num_beams"], given["max_new_tokens"]
    max_input_length, max_target_length = given["max_input_length"], given["max_target_length"]
    # The arguments' own checks first: they need no files.
    if early_stopping_patience is not None and early_stopping_patience < 1:
        raise T5LabError(f"early_stopping_patience={early_stopping_patience}: expected a positive number")
    if lora_merge and not lora_rank:
        raise T5LabError("lora_merge: expected lora_rank too (merging needs adapters to merge)")
    if optimizer is None:
        optimizer = "adamw" if lora_rank else "adafactor"
    tasks = resolve_tasks(task)
    root = resolve_data_dir(data_dir, tasks)
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
    save_best = None
    if lora_rank or lora_merge:
        from t5lab.interop.peft import prepare_finetune

        save_best = prepare_finetune(net, model, Path(out) / "base", tok, rank=lora_rank, alpha=lora_alpha,
                                     dropout=lora_dropout, targets=lora_targets, merge=lora_merge)
    net = apply(net, device=resolve_device(device, "--device"))

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
    ranks = world()  # under torchrun, each rank trains on its rows of every micro-batch (batch_size is global)
    batches = RankSlice(stream, ranks.rank, ranks.size) if ranks.size > 1 else stream
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
                                  max_target_length=max_target_length, num_beams=num_beams), save=save_best)

    monitor = Monitor(metric=AVERAGE if several else tasks[0].primary_metric, mode="max",
                      patience=early_stopping_patience, on_best=on_best)
    n_eval_batches = sum(math.ceil(len(v) / eval_bs) for v in valid_sets.values())
    result = train(
        net,
        config.replace(eval_batches=n_eval_batches),
        batches,
        out_dir,
        eval_batches=lambda: (b for v in valid_sets.values() for b in eval_batches(v, eval_bs, tok.pad_id)),
        evaluator=evaluator,
        monitor=monitor,
        resume=resume,
        meta={"task": [t.name for t in tasks], "model": str(model), "model_config": net.config.to_dict()},
    )
    if not ranks.is_main:
        return {"step": result.step, "out": str(out_dir)}
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
    print(f"best {monitor.metric} {result.best.get(monitor.metric, float('nan')):.2f} at step "
          f"{result.best_step} of {result.step}; model in {out_dir / 'best'}", file=sys.stderr)
    return summary
