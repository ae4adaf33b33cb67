"""`t5lab bench`: measured training and inference speed, peak memory and MFU of named shapes."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from t5lab.errors import T5LabError
from t5lab.recipes.options import use_threads
from t5lab.recipes.results import append_row
from t5lab.shapes import from_name


def bench(
    names: list[str],
    device: str = "cpu",
    batch_size: int = 8,
    input_length: int = 512,
    target_length: int = 114,
    repeats: int = 5,
    warmup: int = 1,
    precision: Literal["auto", "fp32", "bf16"] = "auto",
    attention: Literal["eager", "sdpa"] = "eager",
    vocab_size: int | None = None,
    threads: int = 0,
    out: str | None = None,
) -> None:
    """Measure each shape (random weights and tokens) and append one JSON row per shape to `out`.

    Training: forward + backward + AdamW step; inference: encode + greedy decoding of target_length tokens
    with the KV cache. Each is timed `repeats` times after `warmup` untimed runs; rows hold the median and
    the spread. MFU is against the device's measured matmul peak. Rows work with `t5lab pareto --x
    throughput` (tokens_per_s) or `--x flops` once a loss or score is added.

    Args:
        names: shape names, e.g. t5-efficient-tiny t5-efficient-mini-nl2 t5-efficient-tiny-moe8.
        device: cpu, cuda, cuda:N or auto.
        batch_size: examples per step.
        input_length: encoder tokens per example.
        target_length: decoder tokens per example (and tokens generated per example).
        repeats: timed runs of each measurement (median and spread reported).
        warmup: untimed runs before timing.
        precision: auto (bf16 autocast where the device computes bf16 natively, as training does), fp32 or bf16.
        attention: eager (the reference) or sdpa.
        vocab_size: override the shapes' vocabulary (e.g. a small tokenizer's size).
        threads: CPU threads for torch (0: torch's default). On a CPU shared with other jobs, 1 thread can be
            several times faster than threads that wait for each other; the row records the count.
        out: JSONL file the rows are appended to (default: none, print only).
    """
    from t5lab.analysis.throughput import bench_shape  # torch is imported only when measuring

    if not names:
        raise T5LabError("bench: give at least one shape name")
    use_threads(threads)
    configs = [from_name(n) for n in names]  # every name checked before the first measurement
    if vocab_size is not None:
        configs = [c.replace(vocab_size=vocab_size) for c in configs]
    for config in configs:
        row = bench_shape(config, device=device, batch_size=batch_size, input_length=input_length,
                          target_length=target_length, repeats=repeats, warmup=warmup, precision=precision,
                          attention=attention)
        print(f"{row['name']}: train {row['tokens_per_s']:,.0f} tok/s (step {row['train_step_s']:.3f} s "
              f"± {100 * row['train_step_spread']:.0f}%), MFU {100 * row['mfu']:.1f}% of "
              f"{row['matmul_peak_flops'] / 1e9:,.0f} GFLOP/s measured; decode {row['inference_tokens_per_s']:,.0f} "
              f"tok/s ({row['ms_per_token']:.1f} ms/step); peak memory {row['peak_memory_bytes'] / 2**20:,.0f} MiB")
        if out:
            append_row(Path(out), row)
    if out:
        print(f"appended {len(configs)} rows to {out}")
