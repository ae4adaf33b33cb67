"""`t5lab pretrain`: span-corruption pre-training, from random init or a checkpoint, resumable.

Composes the pieces: a recipe (YAML) → tokenizer, model, `PretrainingStream` (train and held-out splits) →
`t5lab.train.loop.train` → a Hugging Face checkpoint folder, a model card and a span-filling sample.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from t5lab.config import ModelConfig
from t5lab.data.builtin_corpus import BUILTIN
from t5lab.data.pretraining import PretrainingStream
from t5lab.errors import T5LabError
from t5lab.interop.hub import resolve_checkpoint
from t5lab.model import T5, build_model
from t5lab.recipes.recipe_files import PretrainRecipe, find_recipe, parse_recipe
from t5lab.recipes.span_sample import held_out_text, span_fill_sample
from t5lab.train.checkpoint import latest_checkpoint
from t5lab.train.loop import TrainResult, train
from t5lab.train.metrics import read_metrics

DEFAULT_RECIPE = "quickstart-cpu"
RESOLVED = "recipe.yaml"


def pretrain(
    recipe: str | None = None,
    model: str | None = None,
    data: list[str] | str | None = None,
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
    dropout: float | None = None,
    resume: bool = False,
    progress: bool = True,
    tensorboard: bool | None = None,
    wandb: str | None = None,
) -> Path:
    """Pre-train a T5 model with span corruption and save it as a Hugging Face checkpoint.

    With no arguments: trains the `quickstart-cpu` recipe (a small T5-efficient-tiny-like model) on the
    built-in corpus (Python's own documentation; no network, no data files) in a few minutes on a CPU.
    Packaged recipes: quickstart-cpu, t5-efficient-tiny, t5-efficient-small, nanot5-base (nanoT5's
    T5-v1.1-base recipe: batch 128, 65,536 steps, AdamWScale 2e-2, cosine to 1e-5, bf16).
    Values given here override the recipe's. Writes OUT/final (config.json, model.safetensors,
    spiece.model, README.md), OUT/metrics.jsonl, OUT/loss.png, OUT/checkpoints/ and OUT/recipe.yaml.

    Args:
        recipe: a recipe YAML file or a packaged recipe name (default: quickstart-cpu; with --resume, the
            run's own OUT/recipe.yaml). (Not named `config`: jsonargparse drops a function argument of
            that name.)
        model: a registered shape name (random init, vocabulary matched to the tokenizer) or a Hugging Face
            checkpoint folder (continued pre-training).
        data: text sources: files, globs, 'builtin' or 'hf:NAME' (see DataConfig).
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
        precision: 'auto' (bf16 autocast on GPUs and CPUs that compute bf16 natively, else fp32), 'fp32' or 'bf16'.
        compile: run the model through torch.compile.
        dropout: dropout rate (overrides the recipe and the checkpoint's config).
        resume: continue the run in OUT from its latest checkpoint.
        progress: show progress (a bar on a terminal, a line per tenth of the run otherwise).
        tensorboard: also write TensorBoard event files to OUT/tensorboard (pip install 't5lab[tensorboard]').
        wandb: also log to this Weights & Biases project (pip install 't5lab[wandb]'; WANDB_MODE=offline
            keeps the logs local).
    """
    out_dir = Path(out)
    plan = _resolve(recipe, out_dir, resume, dict(
        model=model, tokenizer=tokenizer,
        model_overrides={"dropout": dropout},
        data={"sources": [data] if isinstance(data, str) else data, "inputs_length": inputs_length, "seed": seed},
        train={"steps": steps, "batch_size": batch_size, "grad_accum": grad_accum, "lr": lr, "optimizer": optimizer,
               "eval_every": eval_every, "save_every": save_every, "log_every": log_every, "seed": seed,
               "device": device, "precision": precision, "compile": compile, "progress": progress,
               "tensorboard": tensorboard, "wandb": wandb},
    ))
    _check_out(out_dir, resume)
    tok = load_tokenizer(plan.tokenizer, plan.model)
    net = _build_model(plan, tok.vocab_size)
    train_stream = PretrainingStream(plan.data, tok)
    held_out = plan.data.eval_fraction > 0 and plan.train.eval_batches > 0
    out_dir.mkdir(parents=True, exist_ok=True)
    plan.save(out_dir / RESOLVED)
    result = train(
        net, plan.train, train_stream, out_dir,
        eval_batches=(lambda: PretrainingStream(plan.data, tok, split="eval")) if held_out else None,
        resume=resume,
        meta={"model": net.config.to_hf(), "recipe": plan.to_dict()},
    )
    final = out_dir / "final"
    net.save_pretrained(final, tokenizer=tok)
    _write_model_card(final / "README.md", net, plan, result, read_metrics(result.metrics))
    first, last = _logged_losses(result.metrics)
    print(f"trained {net.config.name} ({net.num_parameters():,} parameters) for {result.step} steps: "
          f"loss {first:.3f} → {last:.3f}"
          + (f", held-out loss {result.eval['eval_loss']:.3f}" if result.eval else ""))
    text = held_out_text(plan.data)
    if text:
        print(span_fill_sample(net, tok, text))
    print(f"model: {final}\nmetrics: {result.metrics}\nloss curve: {out_dir / 'loss.png'}")
    return final


def _resolve(recipe: str | None, out: Path, resume: bool, overrides: dict[str, Any]) -> PretrainRecipe:
    if recipe is None and resume and (out / RESOLVED).is_file():
        recipe = str(out / RESOLVED)
    where, text = find_recipe(recipe or DEFAULT_RECIPE)
    return parse_recipe(where, text, overrides)


def _check_out(out: Path, resume: bool) -> None:
    """Never overwrite a run: a fresh run needs a folder without one; --resume needs a checkpoint."""
    if out.exists() and not out.is_dir():
        raise T5LabError(f"{out}: exists and is not a folder (--out must name a run folder)")
    has_run = (out / "metrics.jsonl").exists() or latest_checkpoint(out / "checkpoints") is not None
    if resume and latest_checkpoint(out / "checkpoints") is None:
        raise T5LabError(f"{out}: no checkpoint to resume from (run without --resume to start a new run)")
    if has_run and not resume:
        raise T5LabError(f"{out}: already holds a run; continue it with --resume true or choose another --out")


def load_tokenizer(spec: str, model: str):
    """The recipe's tokenizer: 'builtin', a spiece.model file or folder; a checkpoint folder's own
    spiece.model wins over 'builtin'."""
    from t5lab.data.builtin_corpus import default_tokenizer
    from t5lab.data.tokenizer import Tokenizer

    if spec == BUILTIN:
        folder = resolve_checkpoint(model)  # a checkpoint folder or hub id; None for a shape name
        if folder is not None and (folder / "spiece.model").is_file():
            return Tokenizer.from_file(folder)
        return default_tokenizer()
    path = Path(spec)
    if not path.exists():
        raise T5LabError(f"{spec}: no such tokenizer file or folder (expected 'builtin' or a spiece.model)")
    return Tokenizer.from_file(path)


def _build_model(recipe: PretrainRecipe, tokenizer_vocab: int) -> T5:
    overrides = dict(recipe.model_overrides)
    path = resolve_checkpoint(recipe.model) or Path(recipe.model)
    if path.is_dir():
        from t5lab.interop.hf import load_pretrained

        net = load_pretrained(path)
        changed = sorted(k for k, v in overrides.items() if k != "dropout" and getattr(net.config, k) != v)
        if changed:
            raise T5LabError(f"{path}: model_overrides.{changed[0]} would change the checkpoint's shape "
                             "(only dropout can be overridden when continuing from a checkpoint)")
        if "dropout" in overrides and overrides["dropout"] != net.config.dropout:
            state = net.state_dict()
            net = build_model(net.config.replace(dropout=overrides["dropout"]), init=False)
            net.load_state_dict(state)
    else:
        try:
            config = ModelConfig.from_name(recipe.model)
        except T5LabError as e:
            raise T5LabError(f"model '{recipe.model}' is neither a checkpoint folder nor a known shape: {e}") from None
        # Random init: the embedding is sized to the tokenizer, rounded up to a multiple of 128 as T5's
        # 32,100 ids are stored in 32,128 rows (unless the recipe fixes vocab_size).
        overrides.setdefault("vocab_size", -(-tokenizer_vocab // 128) * 128)
        config = config.replace(**overrides)
        net = build_model(config, seed=recipe.train.seed)
    if tokenizer_vocab > net.config.vocab_size:
        raise T5LabError(f"tokenizer has {tokenizer_vocab} ids but model '{recipe.model}' has vocab_size="
                         f"{net.config.vocab_size}; use a matching tokenizer or a larger vocab_size")
    return net


def _logged_losses(metrics: Path | None) -> tuple[float, float]:
    """The first and last logged training losses (of the whole run, across resumes)."""
    rows = [r for r in read_metrics(metrics) if "loss" in r] if metrics else []
    return (rows[0]["loss"], rows[-1]["loss"]) if rows else (math.nan, math.nan)


def _write_model_card(path: Path, net: T5, recipe: PretrainRecipe, result: TrainResult,
                      rows: list[dict[str, Any]]) -> None:
    c, d, t = net.config, recipe.data, recipe.train
    losses = [r["loss"] for r in rows if "loss" in r]
    sources = ", ".join("built-in corpus (Python's pydoc topics)" if s == BUILTIN else s for s in d.sources)
    lines = [
        f"# {c.name} (pre-trained with t5lab)",
        "",
        f"A T5 model pre-trained from {'the checkpoint ' + recipe.model if Path(recipe.model).is_dir() else 'random initialisation'} "
        f"with span corruption (noise density {d.noise_density}, mean span {d.mean_noise_span_length}).",
        "",
        "| | |",
        "|---|---|",
        f"| shape | d_model {c.d_model}, d_ff {c.d_ff}, {c.num_heads} heads × d_kv {c.d_kv}, "
        f"{c.num_encoder_layers} encoder + {c.num_decoder_layers} decoder layers, {c.feed_forward} |",
        f"| parameters | {net.num_parameters():,} (vocabulary {c.vocab_size}) |",
        f"| data | {sources}; inputs {d.inputs_length} tokens |",
        f"| training | {result.step} steps × {t.batch_size} examples, {t.optimizer} lr {t.lr}, {t.schedule} schedule |",
        f"| loss | {losses[0]:.3f} at the first step → {losses[-1]:.3f} at the last |" if losses else "| loss | - |",
    ]
    if result.eval:
        lines.append(f"| held-out | loss {result.eval['eval_loss']:.3f}, token accuracy {result.eval['eval_accuracy']:.3f} |")
    lines += ["", "Load it with `t5lab.interop.hf.load_pretrained(folder)` or transformers' "
              "`T5ForConditionalGeneration.from_pretrained(folder)`.", ""]
    path.write_text("\n".join(lines))
