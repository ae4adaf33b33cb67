"""`t5lab shapes`: parameters, FLOPs and memory of named shapes, without building a model."""

from __future__ import annotations

import csv
import io
import json
from typing import Any, Literal

from t5lab.analysis.counting import (
    count_parameters,
    forward_flops,
    kv_cache_bytes,
    training_flops,
    training_memory,
)
from t5lab.config import ModelConfig
from t5lab.errors import T5LabError
from t5lab.shapes import from_name, registered_names

TABLE_WIDTH = 100  # characters of the terminal table before its columns wrap into a further block
COLUMNS = ("name", "layers", "d_model", "d_ff", "heads", "d_kv", "params", "active_params", "embedding_params",
           "encoder_params", "decoder_params", "expert_params", "forward_flops", "train_flops",
           "weights_bytes", "train_state_bytes", "kv_bytes_per_token", "cross_kv_bytes_per_input_token")


def shape_row(config: ModelConfig, input_length: int, target_length: int, dtype: str, optimizer: str) -> dict:
    """One row of numbers for one shape (per example; memory without activations)."""
    params = count_parameters(config)
    memory = training_memory(config, dtype, optimizer)  # type: ignore[arg-type]
    cache = kv_cache_bytes(config, dtype)  # type: ignore[arg-type]
    return {
        "name": config.name,
        "layers": f"{config.num_encoder_layers}/{config.num_decoder_layers}",
        "d_model": config.d_model,
        "d_ff": config.d_ff,
        "heads": config.num_heads if config.num_kv_heads is None else f"{config.num_heads}/{config.kv_heads}",
        "d_kv": config.d_kv,
        "params": params.total,
        "active_params": params.active_per_token,
        "embedding_params": params.embeddings,
        "encoder_params": params.encoder,
        "decoder_params": params.decoder,
        "expert_params": params.experts,
        "forward_flops": forward_flops(config, input_length, target_length).total,
        "train_flops": training_flops(config, input_length, target_length),
        "weights_bytes": memory.weights,
        "train_state_bytes": memory.total,
        "kv_bytes_per_token": cache.self_per_token,
        "cross_kv_bytes_per_input_token": cache.cross_per_input_token,
    }


def _human(value: Any) -> str:
    """Compact units for the terminal table (exact numbers are in csv/json)."""
    if not isinstance(value, int) or value < 10_000:
        return str(value)
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6), ("k", 10**3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return str(value)


def format_rows(rows: list[dict], format: str) -> str:
    if format == "json":
        return json.dumps(rows, indent=2)
    if format == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return out.getvalue().rstrip("\n")
    cells = [list(COLUMNS)] + [[_human(row[c]) for c in COLUMNS] for row in rows]
    if format == "markdown":
        lines = ["| " + " | ".join(r) + " |" for r in cells]
        lines.insert(1, "|" + "|".join("---" for _ in COLUMNS) + "|")
        return "\n".join(lines)
    return _wrapped_table(cells)


def _wrapped_table(cells: list[list[str]], width: int = TABLE_WIDTH) -> str:
    """Aligned text columns, the name column first; columns that do not fit in `width` characters continue
    in a further block below (each block repeats the names)."""
    widths = [max(len(r[i]) for r in cells) for i in range(len(cells[0]))]
    blocks: list[list[int]] = [[]]
    used = widths[0]
    for i in range(1, len(widths)):
        if blocks[-1] and used + 2 + widths[i] > width:
            blocks.append([])
            used = widths[0]
        blocks[-1].append(i)
        used += 2 + widths[i]
    return "\n\n".join(
        "\n".join("  ".join([r[0].ljust(widths[0])] + [r[i].rjust(widths[i]) for i in block]) for r in cells)
        for block in blocks
    )


def shapes(
    names: list[str] | None = None,
    all: bool = False,
    format: Literal["table", "csv", "json", "markdown"] = "table",
    input_length: int = 512,
    target_length: int = 114,
    dtype: Literal["fp32", "bf16"] = "bf16",
    optimizer: Literal["adamw", "adafactor"] = "adamw",
) -> None:
    """Print parameters, FLOPs and memory of named shapes (computed from the config; no model is built).

    FLOPs are per example (multiply-add = 2, matrix products only); training = 3x forward. Memory is weights,
    gradients and optimizer state in `dtype`, without activations.

    Args:
        names: shape names, e.g. t5-efficient-small-el16-dl8 t5-v1_1-base (modifiers nl/el/dl/ff/dm/kv/nh/skv/sh).
        all: every registered base name.
        format: table (aligned text), csv, json or markdown.
        input_length: encoder tokens per example.
        target_length: decoder tokens per example.
        dtype: weight, gradient, optimizer-state and KV-cache dtype.
        optimizer: adamw (two states per weight) or adafactor (factored second moment).
    """
    chosen = list(names or []) + (registered_names() if all else [])
    if not chosen:
        raise T5LabError("shapes: give at least one shape name, or --all")
    if input_length < 1 or target_length < 1:
        raise T5LabError(f"--input_length={input_length}, --target_length={target_length}: expected >= 1")
    rows = [shape_row(from_name(n), input_length, target_length, dtype, optimizer) for n in chosen]
    print(format_rows(rows, format))
    if format == "table":
        print(f"\nFLOPs per example at {input_length} input and {target_length} target tokens "
              "(--input-length, --target-length);\n"
              f"memory: weights, gradients and {optimizer} state in {dtype}, without activations.")
