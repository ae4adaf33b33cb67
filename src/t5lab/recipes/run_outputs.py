"""What a run writes for people besides its checkpoints: model cards, predictions, the learning curve."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from t5lab.data.builtin_corpus import BUILTIN
from t5lab.files import pyplot, write_atomic, write_figure

if TYPE_CHECKING:
    from t5lab.data.tokenizer import Tokenizer
    from t5lab.model import T5
    from t5lab.predict import TaskResult
    from t5lab.recipes.recipe_files import PretrainRecipe
    from t5lab.train.loop import TrainResult

AVERAGE = "average"  # the metric a multi-task run is judged by: the mean of the tasks' primary metrics


def write_predictions(path: Path, result: TaskResult) -> None:
    """One JSON object per example: id, input, prediction, target, references (written atomically)."""
    lines = []
    for e, p in zip(result.encoded.examples, result.predictions, strict=True):
        row: dict[str, Any] = {"task": result.task, "id": e.id, "input": e.input, "prediction": p, "target": e.target}
        if e.references:
            row["references"] = list(e.references)
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
    write_atomic(path, "".join(lines).encode())


def export_best(model: T5, tokenizer: Tokenizer, folder: Path, results: Sequence[TaskResult], *, step: int, base: str,
                row: dict[str, float], settings: dict[str, Any], save: Callable[..., Any] | None = None) -> None:
    """The model (HF format, or what `save` writes: LoRA adapters), its card, scores and predictions in `folder`."""
    from t5lab.interop.hf import save_pretrained

    (save or save_pretrained)(model, folder, tokenizer=tokenizer)
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
    from t5lab.train.metrics import read_metrics

    plt = pyplot()
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


def write_pretraining_card(path: Path, net: T5, recipe: PretrainRecipe, result: TrainResult,
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


def flatten(results: Sequence[TaskResult], prefixed: bool) -> dict[str, float]:
    """One eval row: the metrics (prefixed by task with several tasks, plus their primary average)."""
    if not prefixed:
        return dict(results[0].metrics)
    row = {f"{r.task}/{k}": v for r in results for k, v in r.metrics.items()}
    row[AVERAGE] = sum(r.primary for r in results) / len(results)
    return row
