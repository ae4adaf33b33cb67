"""`t5lab scale-study`: train several shapes under one budget and compare them on held-out loss and cost.

Every shape is pre-trained from scratch by the one training loop (`t5lab.train.loop.train`) on the same
span-corruption stream (same corpus, tokenizer, order and noise), with the same optimiser settings, for as
many steps as the budget buys it:
- `tokens`: the same number of encoder input tokens for every shape (`amount` / (batch x inputs_length)
  steps): which shape learns most from a fixed amount of data;
- `flops`: the same analytic training FLOPs (`counting.training_flops`, 3 x forward matrix products), so a
  cheaper shape trains for more steps: which shape makes the best use of a fixed amount of arithmetic;
- `minutes`: the same wall time on this device; steps come from a short timed calibration of each shape's
  training step (`throughput.measure_training`, excluded from the budget), so the result includes how well
  the device runs the shape (on a shared CPU, also how busy it was).
The held-out loss is the token cross-entropy over the whole eval split (every `1/eval_fraction`-th
document, never trained on) after the last step. Each shape adds one row to `OUT/results.jsonl` as soon as
it finishes (a study that is stopped and run again skips the shapes it already has), and the end of the
study writes the Pareto frontier (`t5lab pareto`) of loss against `x` into OUT.

One learning rate for every shape is the usual simplification of such studies (Tay et al. 2021 did the
same); deeper shapes may prefer a lower one, so a small gap between shapes is not a verdict.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from t5lab.analysis.counting import count_parameters, forward_flops, training_flops
from t5lab.config import ModelConfig
from t5lab.errors import T5LabError
from t5lab.recipes.frontier import write_frontier
from t5lab.recipes.options import use_threads
from t5lab.recipes.results import append_row, iter_rows
from t5lab.shapes import from_name
from t5lab.train.config import TrainConfig

Budget = Literal["tokens", "flops", "minutes"]

# Loop settings for small studies: evaluate once, at the end, on the whole held-out split.
STUDY_TRAIN = TrainConfig(steps=1, batch_size=16, lr=2e-3, optimizer="adamw", schedule="cosine", warmup=20,
                          final_lr=1e-5, eval_batches=10_000, log_every=10)


def steps_for_budget(budget: Budget, amount: float, config: ModelConfig, batch_size: int, inputs_length: int,
                     targets_length: int, step_seconds: float | None = None) -> int:
    """Optimiser steps that `amount` of `budget` buys for one shape (at least 1)."""
    if budget == "tokens":
        steps = amount / (batch_size * inputs_length)
    elif budget == "flops":
        steps = amount / (batch_size * training_flops(config, inputs_length, targets_length))
    elif budget == "minutes":
        if step_seconds is None or step_seconds <= 0:
            raise T5LabError("budget 'minutes' needs a measured step time")
        steps = amount * 60 / step_seconds
    else:
        raise T5LabError(f"--budget={budget!r}: expected tokens, flops or minutes")
    return max(1, math.floor(steps))


def _done_rows(results: Path, budget: str, amount: float, dtype: str) -> dict[str, dict[str, Any]]:
    """Rows already in `results` (a resumed study); an earlier study under another budget or in another
    precision (rows without a dtype predate it: fp32) is an error."""
    done: dict[str, dict[str, Any]] = {}
    if not results.is_file():
        return done
    for number, row in iter_rows(results, ("name",)):
        if (row.get("budget"), row.get("amount")) != (budget, amount):
            raise T5LabError(f"{results}:{number}: a row of another study (budget {row.get('budget')} "
                             f"{row.get('amount')}); use another --out for --budget {budget} --amount {amount}")
        row_dtype = row.get("dtype", "float32")
        if row_dtype != dtype:
            raise T5LabError(f"{results}:{number}: a row trained in {row_dtype}, this study trains in {dtype} "
                             "(precision 'auto' follows the machine); use another --out, or --train.precision "
                             f"{'bf16' if row_dtype == 'bfloat16' else 'fp32'}")
        done[row["name"]] = row
    return done


def _tokenizer(path: str | None, pieces: int):
    from t5lab.data.builtin_corpus import default_tokenizer
    from t5lab.data.tokenizer import Tokenizer

    if path is None:
        return default_tokenizer(vocab_size=pieces)
    if not Path(path).is_file():
        raise T5LabError(f"--tokenizer={path}: no such file (expected a SentencePiece .model)")
    return Tokenizer.from_file(path)


def scale_study(
    shapes: list[str] | None = None,
    budget: Budget = "tokens",
    amount: float = 1e6,
    data: list[str] | None = None,
    tokenizer: str | None = None,
    vocab_pieces: int = 2000,
    inputs_length: int = 128,
    eval_fraction: float = 0.05,
    dropout: float = 0.0,
    train: TrainConfig = STUDY_TRAIN,
    x: Literal["params", "flops", "throughput"] = "params",
    threads: int = 0,
    out: str = "runs/scale-study",
) -> None:
    """Pre-train each shape under the same budget; write OUT/results.jsonl and the loss frontier.

    Args:
        shapes: shape names, e.g. t5-efficient-tiny t5-efficient-mini-nl2 t5-efficient-tiny-moe8.
        budget: what every shape gets the same amount of: tokens (encoder input tokens), flops (analytic
            training FLOPs) or minutes (wall time on this device).
        amount: how much of the budget each shape gets.
        data: pre-training text: paths, globs or 'hf:NAME' (default: the built-in corpus).
        tokenizer: a SentencePiece .model (default: one with `vocab_pieces` pieces trained on the built-in
            corpus); the shapes' vocabulary is set to its size.
        vocab_pieces: pieces of the default tokenizer (plus 100 sentinels).
        inputs_length: encoder tokens per example (targets follow from span corruption).
        eval_fraction: share of documents held out for the loss every shape is compared on.
        dropout: dropout of every shape (0 for pre-training, as nanoT5).
        train: the training loop's settings (steps are set by the budget; see `t5lab pretrain`).
        x: the cost axis of the frontier: params, flops (per example) or throughput (training tokens/s).
        threads: CPU threads for torch (0: torch's default). On a CPU shared with other jobs, 1 thread can be
            several times faster than threads that wait for each other.
        out: the study folder: results.jsonl, pareto.{md,csv,png} and one run folder per shape.
    """
    import torch

    from t5lab.analysis.throughput import matmul_peak_flops, measure_training, random_batch
    from t5lab.data.pretraining import DataConfig, PretrainingStream
    from t5lab.device import autocast_dtype, resolve_device
    from t5lab.kernels import apply
    from t5lab.model import build_model
    from t5lab.train.loop import train as train_loop

    if not shapes:
        raise T5LabError("scale-study: give at least one shape (--shapes a b ...)")
    use_threads(threads)
    if amount <= 0:
        raise T5LabError(f"--amount={amount}: expected a positive amount of {budget}")
    if train.eval_batches < 1 or eval_fraction <= 0:
        raise T5LabError("scale-study compares held-out loss: --train.eval_batches and --eval_fraction must be > 0")
    folder = Path(out)
    results = folder / "results.jsonl"
    device = resolve_device(train.device)
    dtype = autocast_dtype(train.precision, device) or torch.float32
    dtype_name = str(dtype).removeprefix("torch.")
    done = _done_rows(results, budget, amount, dtype_name)
    named = [from_name(name) for name in shapes]  # every name checked before any work
    tok = _tokenizer(tokenizer, vocab_pieces)
    configs = [c.replace(vocab_size=tok.vocab_size, dropout=dropout, expert_dropout=dropout) for c in named]
    data_config = DataConfig(sources=tuple(data) if data else DataConfig().sources, inputs_length=inputs_length,
                             batch_size=train.micro_batch_size, eval_fraction=eval_fraction, seed=train.seed)
    targets_length = PretrainingStream(data_config, tok).targets_length
    peak = matmul_peak_flops(str(device), dtype)  # measured before training, with the study's threads
    for config in configs:
        if config.name in done:
            print(f"{config.name}: already in {results}, skipped")
            continue
        step_seconds = None
        if budget == "minutes":
            probe = apply(build_model(config, seed=train.seed, device=device), device=device)
            batch = random_batch(config, train.micro_batch_size, inputs_length, targets_length, device)
            timing = measure_training(probe, batch, device, dtype, repeats=2)
            step_seconds = timing.median_s * train.grad_accum
            del probe, batch
        steps = steps_for_budget(budget, amount, config, train.batch_size, inputs_length, targets_length,
                                 step_seconds)
        run_config = train.replace(steps=steps, warmup=min(train.warmup, steps // 10))
        print(f"{config.name}: {count_parameters(config).total:,} parameters, {steps} steps of "
              f"{train.batch_size} x {inputs_length} tokens", flush=True)
        model = apply(build_model(config, seed=train.seed), device=device)
        result = train_loop(
            model, run_config, PretrainingStream(data_config, tok), folder / config.name,
            eval_batches=lambda: PretrainingStream(data_config, tok, split="eval"),
            meta={"model": config.name, "study": {"budget": budget, "amount": amount}},
        )
        if "eval_loss" not in result.eval:
            raise T5LabError(f"{config.name}: the held-out split is empty; raise --eval_fraction")
        tokens = steps * train.batch_size * inputs_length
        flops = steps * train.batch_size * training_flops(config, inputs_length, targets_length)
        params = count_parameters(config)
        row = {
            "name": config.name,
            "params": params.total,
            "active_params": params.active_per_token,
            "flops": forward_flops(config, inputs_length, targets_length).total,
            "loss": result.eval["eval_loss"],
            "eval_accuracy": result.eval["eval_accuracy"],
            "train_loss": result.loss,
            "tokens_per_s": tokens / result.elapsed_s,
            "elapsed_s": round(result.elapsed_s, 2),
            "steps": steps,
            "tokens": tokens,
            "train_flops": flops,
            "mfu": flops / result.elapsed_s / peak,
            "matmul_peak_flops": peak,
            "layers": f"{config.num_encoder_layers}/{config.num_decoder_layers}",
            "d_model": config.d_model,
            "budget": budget,
            "amount": amount,
            "batch_size": train.batch_size,
            "inputs_length": inputs_length,
            "targets_length": targets_length,
            "vocab_size": config.vocab_size,
            "lr": train.lr,
            "device": str(device),
            "dtype": dtype_name,
            "threads": torch.get_num_threads(),
        }
        append_row(results, row)
        print(f"{config.name}: held-out loss {row['loss']:.4f} after {steps} steps "
              f"({row['tokens_per_s']:,.0f} tok/s, {row['elapsed_s']:.0f} s)", flush=True)
        del model
    write_frontier([str(results)], x=x, y="loss", out=folder)
