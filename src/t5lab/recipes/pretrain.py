"""`t5lab pretrain`: span-corruption pre-training, from random init or a checkpoint, resumable.

Composes the pieces: a recipe (YAML) → tokenizer, model, `PretrainingStream` (train and held-out splits) →
`t5lab.train.loop.train` → a Hugging Face checkpoint folder, a model card and a span-filling sample.
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path

from t5lab.errors import T5LabError

RESOLVED = "recipe.yaml"


def pretrain(
    recipe: str | None = None,
    model: str | None = None,
    data: list[str] | str | None = None,
    data_weights: list[float] | None = None,
    tokenizer: str | None = None,
    out: str = "runs/pretrain",
    steps: int | None = None,
    batch_size: int | None = None,
    grad_accum: int | None = None,
    lr: float | None = None,
    optimizer: str | None = None,
    inputs_length: int | None = None,
    eval_every: int | None = None,
    save_every: int | None = None,
    log_every: int | None = None,
    seed: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    compile: bool | None = None,
    parallel: str | None = None,
    activation_checkpointing: bool | None = None,
    dropout: float | None = None,
    resume: bool = False,
    progress: bool | None = None,
    tensorboard: bool | None = None,
    wandb: str | None = None,
    print_recipe: bool = False,
) -> Path | None:
    """Pre-train a T5 model with span corruption and save it as a Hugging Face checkpoint.

    With no arguments: trains the `quickstart-cpu` recipe (a small T5-efficient-tiny-like model) on the
    built-in corpus (Python's own documentation; no network, no data files) in a few minutes on a CPU.
    Packaged recipes: quickstart-cpu, t5-efficient-tiny, t5-efficient-small, nanot5-base (nanoT5's
    T5-v1.1-base recipe: batch 128, 65,536 steps, AdamWScale 2e-2, cosine to 1e-5, bf16).
    Values given here override the recipe's. A recipe is pretrain's config file: `--config FILE` reads
    one, `--print_config` prints the resolved one (every field), and a run writes it as OUT/recipe.yaml.
    Writes OUT/final (config.json, model.safetensors, spiece.model, README.md), OUT/metrics.jsonl,
    OUT/loss.png, OUT/checkpoints/ and OUT/recipe.yaml.

    Args:
        recipe: a recipe YAML file or a packaged recipe name (default: quickstart-cpu; with --resume, the
            run's own OUT/recipe.yaml); `--config FILE` means `--recipe FILE`. (Not named `config`:
            jsonargparse drops a function argument of that name.)
        model: a registered shape name (random init, vocabulary matched to the tokenizer) or a Hugging Face
            checkpoint folder (continued pre-training).
        data: text sources: files, globs, 'builtin' or 'hf:NAME' (see DataConfig).
        data_weights: one weight per --data source: each example comes from a source with probability
            proportional to its weight, interleaved example by example (e.g. --data 'c4/*.json.gz'
            wiki.jsonl --data-weights 0.8 0.2). Default: the sources form one corpus.
        tokenizer: 'builtin' (a small SentencePiece model trained on the built-in corpus and cached) or a
            spiece.model file / folder. Default: the recipe's, or the checkpoint's spiece.model.
        out: the run folder.
        steps: optimiser steps.
        batch_size: examples per optimiser step.
        grad_accum: micro-batches per step (batch_size must be a multiple of it).
        lr: peak learning rate.
        optimizer: 'adamw', 'adamwscale' or 'adafactor'.
        inputs_length: encoder input length in tokens.
        eval_every: held-out evaluation every this many steps (0: at the end only).
        save_every: checkpoint every this many steps (0: at the end only).
        log_every: a metrics row every this many steps.
        seed: seeds initialisation, dropout and data order.
        device: 'auto', 'cpu', 'cuda' or 'cuda:N'.
        precision: 'auto' (bf16 autocast where the device computes bf16 natively; fp16 with a gradient scaler on
            CUDA GPUs without bf16; else fp32), 'fp32', 'bf16' or 'fp16'.
        compile: run the model through torch.compile.
        parallel: under torchrun, 'ddp' or 'fsdp' (FSDP2, sharded per T5 block); see docs/distributed.md.
        activation_checkpointing: recompute each T5 block's activations in the backward pass (less memory).
        dropout: dropout rate (overrides the recipe and the checkpoint's config).
        resume: continue the run in OUT from its newest intact checkpoint (checksums verified; a corrupt or
            non-finite one is reported and skipped). A folder whose run stopped before its first checkpoint
            starts afresh, with or without --resume. OUT is locked while a run uses it.
        progress: show progress (a bar on a terminal, a line per tenth of the run otherwise; default: the
            recipe's, which is true unless it says otherwise).
        tensorboard: also write TensorBoard event files to OUT/tensorboard (pip install 't5lab[tensorboard]').
        wandb: also log to this Weights & Biases project (pip install 't5lab[wandb]'; WANDB_MODE=offline
            keeps the logs local).
        print_recipe: print the resolved recipe (what `--print_config` does) and exit without training.
    """
    from t5lab.recipes.recipe_files import resolve_recipe

    out_dir = Path(out)
    plan = resolve_recipe(recipe, out_dir / RESOLVED, resume, dict(
        model=model, tokenizer=tokenizer,
        model_overrides={"dropout": dropout},
        # New --data without --data-weights: the recipe's weights were for its own sources.
        data={"sources": [data] if isinstance(data, str) else data,
              "weights": data_weights if data_weights is not None else ([] if data else None),
              "inputs_length": inputs_length, "seed": seed},
        train={"steps": steps, "batch_size": batch_size, "grad_accum": grad_accum, "lr": lr, "optimizer": optimizer,
               "eval_every": eval_every, "save_every": save_every, "log_every": log_every, "seed": seed,
               "device": device, "precision": precision, "compile": compile, "progress": progress,
               "parallel": parallel, "activation_checkpointing": activation_checkpointing,
               "tensorboard": tensorboard, "wandb": wandb},
    ))
    if print_recipe:  # before torch loads: printing a recipe is instant
        print(plan.to_yaml(), end="")
        return None

    from t5lab.data.builtin_corpus import BUILTIN
    from t5lab.data.pretraining import PretrainingStream
    from t5lab.device import resolve_device
    from t5lab.interop.hf import save_pretrained
    from t5lab.interop.hub import resolve_checkpoint
    from t5lab.kernels import apply
    from t5lab.model import T5
    from t5lab.recipes.run_outputs import write_pretraining_card
    from t5lab.recipes.sources import pretraining_model, pretraining_tokenizer
    from t5lab.recipes.span_sample import held_out_text, span_fill_sample
    from t5lab.train.checkpoint import check_checkpoint_fits
    from t5lab.train.distributed import world
    from t5lab.train.loop import train
    from t5lab.train.metrics import read_metrics
    from t5lab.train.run_lock import run_folder_lock

    _check_is_folder(out_dir)
    ranks = world()
    # Rank 0 holds the run folder's lock (under torchrun the other ranks share its run).
    with run_folder_lock(out_dir) if ranks.is_main else contextlib.nullcontext():
        resume_from = _check_out(out_dir, resume)
        tok = pretraining_tokenizer(plan.tokenizer, plan.model)
        net = pretraining_model(plan, tok.vocab_size)
        tok.check_fits(net.config.vocab_size, plan.model)
        if resume_from is not None:
            # Before recipe.yaml is rewritten: a resume whose overrides do not fit the run's checkpoint must
            # fail without touching the run, so that a plain --resume still works afterwards.
            check_checkpoint_fits(resume_from, net)
        net = apply(net, device=resolve_device(plan.train.device, "--device"))
        # Under torchrun each rank streams its part of every global batch (batch_size is the global batch).
        rank_data = plan.data.replace(batch_size=plan.train.rank_micro_batch_size(ranks.size))
        train_stream = PretrainingStream(rank_data, tok, rank=ranks.rank, world_size=ranks.size)
        held_out = plan.data.eval_fraction > 0 and plan.train.eval_batches > 0
        if ranks.is_main:
            plan.save(out_dir / RESOLVED)
        if (plan.tokenizer == BUILTIN and tuple(plan.data.sources) != (BUILTIN,) and ranks.is_main
                and resolve_checkpoint(plan.model) is None):  # a checkpoint's own spiece.model wins over builtin
            # Said once the data is known to read (a bad --data fails first, in one line).
            print(f"t5lab: --data is your text but the tokenizer is the built-in one ({tok.vocab_size:,} ids, "
                  "trained on Python's documentation); for other text give --tokenizer (e.g. T5's spiece.model) "
                  "or train one: t5lab tokenizer train --data ... --vocab-size N --out DIR", file=sys.stderr)
        result = train(
            net, plan.train, train_stream, out_dir,
            eval_batches=(lambda: PretrainingStream(plan.data, tok, split="eval")) if held_out else None,
            resume=resume_from is not None,
            meta={"model_config": net.config.to_dict(), "recipe": plan.to_dict()},
        )
        final = out_dir / "final"
        if not isinstance(result.model, T5):  # None off rank 0: rank 0 alone exports and reports
            return final
        net = result.model
        save_pretrained(net, final, tokenizer=tok, max_shard_size=5 * 2**30)  # large models: shards + index
        write_pretraining_card(final / "README.md", net, plan, result,
                               read_metrics(result.metrics) if result.metrics else [])
    first, last = _logged_losses(result.metrics)
    print(f"trained {net.config.name} ({net.num_parameters():,} parameters) for {result.step} steps: "
          f"loss {first:.3f} → {last:.3f}"
          + (f", held-out loss {result.eval['eval_loss']:.3f}" if result.eval else ""))
    text = held_out_text(plan.data)
    if text:
        print(span_fill_sample(net, tok, text))
    print(f"model: {final}\nmetrics: {result.metrics}\nloss curve: {out_dir / 'loss.png'}")
    return final


def _check_is_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise T5LabError(f"{out}: exists and is not a folder (--out must name a run folder)")


def _check_out(out: Path, resume: bool) -> Path | None:
    """Never overwrite a run, never wedge one. Returns the checkpoint to resume from (None: start fresh).

    A fresh run needs a folder without checkpoints; --resume needs an intact one. A folder whose run was
    killed before its first checkpoint holds nothing to keep: either way it starts afresh, saying so.
    """
    from t5lab.train.checkpoint import latest_checkpoint, list_checkpoints

    checkpoints = out / "checkpoints"
    found = list_checkpoints(checkpoints)
    if found and not resume:
        raise T5LabError(f"{out}: already holds a run; continue it with --resume true or choose another --out")
    if not found:
        if (out / "metrics.jsonl").exists() or (out / RESOLVED).exists():
            print(f"t5lab: {out} holds no checkpoint (its run stopped before the first save); starting it afresh",
                  file=sys.stderr)
        elif resume:
            print(f"t5lab: {out}: no checkpoint to resume from; starting a new run", file=sys.stderr)
        return None
    skipped: list[str] = []  # the training loop reports the skips when it picks the same checkpoint
    latest = latest_checkpoint(checkpoints, report=skipped.append)
    if latest is None:
        raise T5LabError(f"{checkpoints}: none of its {len(found)} checkpoints is intact and finite "
                         f"({skipped[0].removeprefix('skipping checkpoint ')}); move the folder aside and start a "
                         "new run")
    return latest


def _logged_losses(metrics: Path | None) -> tuple[float, float]:
    """The first and last logged training losses (of the whole run, across resumes)."""
    from t5lab.train.metrics import read_metrics

    rows = [r for r in read_metrics(metrics) if "loss" in r] if metrics else []
    return (rows[0]["loss"], rows[-1]["loss"]) if rows else (math.nan, math.nan)
