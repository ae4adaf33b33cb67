"""Training speed of a Switch model: t5lab vs transformers' SwitchTransformersForConditionalGeneration.

Same weights (t5lab's random init, saved and loaded by transformers), same batch, fused AdamW (the default of
both t5lab's trainer and transformers' Trainer with torch >= 2.8), router losses on in both;
training steps alternate between the two models so that CPU speed drift hits both alike. Prints the median
input tokens/s of each and the ratio, and the ratio of the best steps (less sensitive to a noisy machine).

    PYTHONPATH=src python benchmarks/switch_train_speed.py [--steps 5] [--batch 8] [--experts 8]

Shape: t5-efficient-tiny with N experts in every second block of both stacks, inputs 512 / targets 114. The
expert capacity is fixed at ceil(512 / E * 1.25) for both (transformers has no capacity factor).
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import torch

from t5lab.interop.hf import save_pretrained
from t5lab.kernels import apply
from t5lab.model import build_model
from t5lab.shapes import from_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model (after 2 warm-up steps)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--inputs", type=int, default=512)
    parser.add_argument("--targets", type=int, default=114)
    args = parser.parse_args()

    from transformers import SwitchTransformersForConditionalGeneration

    config = from_name(f"t5-efficient-tiny-moe{args.experts}").replace(
        expert_capacity=math.ceil(args.inputs / args.experts * 1.25)
    )
    ours = apply(build_model(config, seed=0), device="cpu")
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(ours, folder)
        theirs = SwitchTransformersForConditionalGeneration.from_pretrained(folder)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, config.vocab_size, (args.batch, args.inputs), generator=g)
    labels = torch.randint(2, config.vocab_size, (args.batch, args.targets), generator=g)

    def step_ours() -> float:
        return ours(ids, labels=labels).loss

    def step_theirs() -> float:
        return theirs(input_ids=ids, labels=labels, output_router_logits=True).loss

    runs = {}
    for name, model, forward in (("t5lab", ours, step_ours), ("transformers", theirs, step_theirs)):
        model.train()
        runs[name] = (forward, torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True), [])
    for i in range(args.steps + 2):
        for name, (forward, optimizer, times) in runs.items():
            start = time.perf_counter()
            loss = forward()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if i >= 2:
                times.append(time.perf_counter() - start)
            if i == 0:
                print(f"{name}: first-step loss {loss.item():.4f}")
    tokens = args.batch * args.inputs
    speed = {name: tokens / statistics.median(times) for name, (_, _, times) in runs.items()}
    print(f"{config.name}, capacity {config.expert_capacity}, batch {args.batch}, inputs {args.inputs} / targets "
          f"{args.targets}, {torch.get_num_threads()} threads, AdamW; median of {args.steps} steps")
    for name, value in speed.items():
        print(f"  {name:13s} {value:8.0f} input tokens/s")
    print(f"  ratio t5lab / transformers: {speed['t5lab'] / speed['transformers']:.2f}x (median steps), "
          f"{min(runs['transformers'][2]) / min(runs['t5lab'][2]):.2f}x (best steps)")


if __name__ == "__main__":
    main()
