"""Training throughput: t5lab vs transformers' T5ForConditionalGeneration, side by side in one process.

Same shape, same batch (span-corruption lengths: inputs 512, targets 114), fused AdamW for both.
Prints input tokens/s for both and the ratio. Run:  python benchmarks/train_speed.py --shape t5-efficient-tiny

Steps alternate between the two models (t5lab, transformers, t5lab, ...) so that drifting CPU speed hits
both equally; the median step time of each is reported, and the ratio of the best steps.

`--precision bf16` runs both forward passes in bf16 autocast (fp32 weights), what `t5lab pretrain` does on GPUs
and on CPUs with AVX512-BF16 (see `t5lab.train.loop.native_bf16`).

`--keep-freed-memory` applies what `t5lab pretrain` sets on CPU (`t5lab.train.host_memory`) to the whole
process, i.e. to both libraries: transformers' own Trainer does not, so this favours transformers.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from t5lab import ModelConfig, build_model
from t5lab.interop.hf_config import to_hf
from t5lab.kernels import apply
from t5lab.shapes import from_name


def hf_model(config: ModelConfig):
    """transformers' model for the same config (its default attention implementation, SDPA in 5.x)."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    return T5ForConditionalGeneration(T5Config(**to_hf(config)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="t5-efficient-tiny")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--input-length", type=int, default=512)
    parser.add_argument("--target-length", type=int, default=114)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.0, help="nanoT5 pre-trains with 0")
    parser.add_argument("--attention", default="fused", help="eager | sdpa | fused")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="bf16: autocast, both")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="glibc keeps freed memory (t5lab's trainer setting), for both libraries")
    args = parser.parse_args()
    if args.keep_freed_memory:
        from t5lab.train.host_memory import keep_freed_memory

        print(f"keep freed memory (both libraries): {keep_freed_memory()}")

    config = from_name(args.shape).replace(dropout=args.dropout)
    ours = apply(build_model(config, seed=0), device="cpu", attention=args.attention).train()
    theirs = hf_model(config).train()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, config.vocab_size, (args.batch_size, args.input_length), generator=g)
    labels = torch.randint(2, config.vocab_size, (args.batch_size, args.target_length), generator=g)

    def step_fn(model, optimizer, hf: bool):
        def step() -> float:
            start = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                out = model(input_ids=ids, labels=labels) if hf else model(ids, labels=labels)
            out.loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return time.perf_counter() - start

        return step

    steps = {
        "t5lab": step_fn(ours, torch.optim.AdamW(ours.parameters(), lr=1e-4, fused=True), hf=False),
        # Fused AdamW for both: t5lab's trainer and transformers' Trainer (torch >= 2.8) both default to it.
        "transformers": step_fn(theirs, torch.optim.AdamW(theirs.parameters(), lr=1e-4, fused=True), hf=True),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.warmup + args.steps):
        for name, step in steps.items():
            t = step()
            if i >= args.warmup:
                times[name].append(t)
    tokens = args.batch_size * args.input_length
    print(f"{args.shape}  batch {args.batch_size}  inputs {args.input_length} / targets {args.target_length}  "
          f"{args.precision}  threads {torch.get_num_threads()}  torch {torch.__version__}")
    speed = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        speed[name] = tokens / med
        print(f"  {name:13s} {med * 1000:8.1f} ms/step (spread {min(ts) * 1000:.0f}-{max(ts) * 1000:.0f})  "
              f"{speed[name]:8.0f} input tokens/s")
    print(f"  ratio t5lab / transformers: {speed['t5lab'] / speed['transformers']:.2f}x (median steps), "
          f"{min(times['transformers']) / min(times['t5lab']):.2f}x (best steps)")


if __name__ == "__main__":
    main()
