"""`t5lab evaluate`: generate answers for a task split with a model and score them with the task's metric.

Writes, under `out`: predictions.jsonl (one row per example: id, input, prediction, target, references)
and summary.md (the metrics table, also printed to the terminal).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from typing_extensions import Unpack

from t5lab.errors import T5LabError
from t5lab.files import write_atomic
from t5lab.recipes.options import EvaluationOptions, with_defaults
from t5lab.recipes.run_outputs import write_predictions


def evaluate(
    task: str | list[str],
    model: str,
    split: str = "validation",
    batch_size: int = 32,
    out: str | None = None,
    limit: int | None = None,
    data: list[str] | None = None,
    noise_density: float = 0.15,
    mean_span: float = 3.0,
    **options: Unpack[EvaluationOptions],
) -> dict[str, dict[str, float]]:
    """Evaluate a model on a task split: batched generation, the task's metric, predictions and a summary.

    Args:
        task: a task name (glue/sst2, squad, ...), several separated by commas, or a list; or
            span-corruption: held-out span-corruption loss, token accuracy and bits per byte on --data.
        model: a Hugging Face T5 checkpoint folder (with spiece.model) or a shape name (random weights;
            then give --tokenizer).
        split: the split to score (validation, test where labelled, ...).
        batch_size: examples per generation batch.
        out: folder for predictions.jsonl and summary.md (default runs/evaluate/<task>).
        limit: score only the first this many examples of each task.
        data: span-corruption: the text to score (files, globs or hf:NAME), every document once; inputs
            of --max-input-length tokens.
        noise_density: span-corruption: the share of tokens masked.
        mean_span: span-corruption: the mean length of a masked span.
        options: the shared groups (`EvaluationOptions`): --tokenizer, --data-dir, --device, --seed,
            --num-beams, --max-new-tokens, --max-input-length, --max-target-length.
    """
    given = with_defaults(options)
    tokenizer, data_dir, device, seed = given["tokenizer"], given["data_dir"], given["device"], given["seed"]
    num_beams, max_new_tokens = given["num_beams"], given["max_new_tokens"]
    max_input_length, max_target_length = given["max_input_length"], given["max_target_length"]
    if task == "span-corruption":  # a loss on raw text, not a task with splits and a metric
        from t5lab.recipes.heldout import evaluate_span_corruption

        held_out = evaluate_span_corruption(
            model, data, tokenizer=tokenizer, inputs_length=max_input_length, noise_density=noise_density,
            mean_noise_span_length=mean_span, seed=seed, batch_size=batch_size, device=device, out=out, limit=limit)
        return {task: {"loss": held_out.loss, "token_accuracy": held_out.token_accuracy,
                       "bits_per_byte": held_out.bits_per_byte}}
    # Imported here, not at the top, so that the CLI's other commands do not pay for torch.
    import torch

    from t5lab.data.seq2seq import encode_examples
    from t5lab.device import resolve_device
    from t5lab.kernels import apply
    from t5lab.predict import default_max_new_tokens, evaluate_task
    from t5lab.recipes.sources import load_split, resolve_data_dir, resolve_model, resolve_tasks

    tasks = resolve_tasks(task)
    out_dir = Path(out) if out else Path("runs/evaluate") / "+".join(t.name.replace("/", "-") for t in tasks)
    if out_dir.exists() and not out_dir.is_dir():
        raise T5LabError(f"{out_dir}: exists and is not a folder (--out names the folder for predictions.jsonl "
                         "and summary.md)")
    root = resolve_data_dir(data_dir, tasks)
    splits = {t.name: load_split(t, split, root, limit) for t in tasks}  # bad data fails before the model loads
    net, tok = resolve_model(model, tokenizer, seed=seed)
    run_device = resolve_device(device, "--device")
    apply(net.to(run_device).eval(), device=run_device, training=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    results, rows = {}, []
    for t in tasks:
        encoded = encode_examples(splits[t.name], tok, max_input_length, max_target_length)
        new_tokens = max_new_tokens or default_max_new_tokens(encoded, tok, max_target_length)
        # Said up front so that the output can be reproduced elsewhere (transformers' generate, another tool).
        print(f"{t.name} {split}: {len(encoded)} examples, "
              f"{'greedy' if num_beams == 1 else f'beam search ({num_beams} beams)'}, max_new_tokens {new_tokens}"
              f"{'' if max_new_tokens else ' (from the longest reference)'}, inputs truncated at {max_input_length} "
              "tokens", file=sys.stderr)
        start = time.perf_counter()
        with torch.inference_mode():
            result = evaluate_task(net, tok, t, encoded, batch_size=batch_size, max_new_tokens=new_tokens,
                                   max_target_length=max_target_length, num_beams=num_beams)
        seconds = time.perf_counter() - start
        name = t.name.replace("/", "-")
        write_predictions(out_dir / (f"predictions-{name}.jsonl" if len(tasks) > 1 else "predictions.jsonl"), result)
        results[t.name] = result.metrics
        rows += [(t.name, split, len(encoded), k + (" *" if k == result.primary_metric else ""), v, seconds)
                 for k, v in result.metrics.items()]
    table = summary_table(rows)
    print(table, file=sys.stdout)
    text = (f"# Evaluation of `{model}`\n\n{table}\n\n* primary metric. Scores in percent; "
            f"{'greedy decoding' if num_beams == 1 else f'beam search ({num_beams} beams)'}; "
            f"truncation at {max_input_length} input tokens.\n")
    write_atomic(out_dir / "summary.md", text.encode())
    return results


def summary_table(rows: list[tuple[str, str, int, str, float, float]]) -> str:
    """A markdown table (readable as plain text too) of task, split, examples, metric, score, seconds."""
    if not rows:
        raise T5LabError("nothing was evaluated")
    header = ("task", "split", "examples", "metric", "score", "seconds")
    cells = [header] + [(t, s, str(n), m, f"{v:.2f}", f"{sec:.1f}") for t, s, n, m, v, sec in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    right = {2, 4, 5}

    def line(row) -> str:
        return "| " + " | ".join(c.rjust(w) if i in right else c.ljust(w)
                                 for i, (c, w) in enumerate(zip(row, widths, strict=True))) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if i in right else ("-" * (w + 2)) for i, w in enumerate(widths)) + "|"
    return "\n".join([line(cells[0]), rule, *map(line, cells[1:])])
