"""Checkpoint loading speed: t5lab's `load_pretrained` vs transformers' `from_pretrained`, same folder.

Random weights of a registered shape are saved once (by t5lab, in transformers' format); then each side
loads the folder `--repeats` times in this process and the best time is printed, with the ratio.

    PYTHONPATH=src python benchmarks/load_pretrained.py --shape t5-efficient-small
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch

from t5lab import build_model, load_pretrained
from t5lab.interop.hf import save_pretrained
from t5lab.shapes import from_name


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="t5-efficient-small")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from transformers import T5ForConditionalGeneration

    model = build_model(from_name(args.shape), seed=0)
    with tempfile.TemporaryDirectory() as folder:
        save_pretrained(model, folder)
        del model
        ours = best_of(args.repeats, lambda: load_pretrained(folder))
        theirs = best_of(
            args.repeats, lambda: T5ForConditionalGeneration.from_pretrained(folder, dtype=torch.float32)
        )
    print(
        f"{args.shape}: t5lab {ours * 1000:.0f} ms, transformers {theirs * 1000:.0f} ms, "
        f"ratio {theirs / ours:.2f}x (best of {args.repeats})"
    )


if __name__ == "__main__":
    main()
