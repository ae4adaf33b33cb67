"""The pre-training data pipeline's input tokens/s per DataLoader worker, against what one GPU consumes.

Cuts the C4 sample (1,000 documents of JSONL) into 64 json.gz shards in a temporary folder, as C4's 1,024
shards are cut, and streams them through `PretrainingStream` with T5's SentencePiece vocabulary at inputs
512 / targets 114 (span corruption), with 1, 2, 4, 8 ... workers. For each it reports encoder-input tokens/s
over `--batches` micro-batches after the first (which carries worker start-up and the first shuffle
block), and that rate per worker. Issue 17's GPU target is 600k input tokens/s; 8 workers per GPU then
need >= 75k input tokens/s each. Workers are processes: the per-worker figure is only meaningful while
there are at least as many free cores as workers (`--workers` above the core count measures contention),
and SentencePiece encodes a batch on several threads, so the one-core figure is the one under
`taskset -c 0` with `--workers 0` (the main process does a worker's job: read, tokenize, corrupt).

    PYTHONPATH=src python benchmarks/data_pipeline.py --workers 0 1 2
    PYTHONPATH=src taskset -c 0 python benchmarks/data_pipeline.py --workers 0
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import os
import tempfile
import time
from pathlib import Path

from t5lab.data.pretraining import DataConfig, PretrainingStream
from t5lab.data.tokenizer import Tokenizer

GPU_INPUT_TOKENS_PER_S = 600_000  # issue 17's target for one GPU
WORKERS_PER_GPU = 8


def cut_into_shards(jsonl: Path, folder: Path, shards: int) -> str:
    """Deal the JSONL file's lines round-robin into `shards` json.gz files; returns their glob."""
    lines = jsonl.read_bytes().splitlines(keepends=True)
    for shard in range(shards):
        with gzip.open(folder / f"c4-train.{shard:05d}-of-{shards:05d}.json.gz", "wb", compresslevel=6) as f:
            f.writelines(lines[shard::shards])
    return str(folder / "*.json.gz")


def measure(config: DataConfig, tokenizer: Tokenizer, batches: int) -> tuple[float, float]:
    """(seconds to the first micro-batch, input tokens/s over the next `batches` micro-batches)."""
    stream = iter(PretrainingStream(config, tokenizer))
    start = time.perf_counter()
    next(stream)
    first = time.perf_counter() - start
    start = time.perf_counter()
    tokens = sum(batch["input_ids"].numel() for batch in itertools.islice(stream, batches))
    return first, tokens / (time.perf_counter() - start)


def main() -> None:
    data = Path(os.environ.get("T5LAB_DATA", "/work/shared/data"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jsonl", type=Path, default=data / "c4_en_sample" / "c4-train.00000-of-01024.first1000.jsonl")
    parser.add_argument("--spiece", type=Path, default=data / "t5_spiece" / "spiece.model")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2],
                        help="worker counts to measure (0: the main process does the work)")
    parser.add_argument("--batch-size", type=int, default=16, help="examples per micro-batch")
    parser.add_argument("--batches", type=int, default=150, help="micro-batches timed after the first")
    parser.add_argument("--shuffle-buffer", type=int, default=8,
                        help="documents per shuffle block: small, so that tokenizing stays inside the timed part")
    parser.add_argument("--shards", type=int, default=64)
    args = parser.parse_args()

    tokenizer = Tokenizer.from_file(args.spiece)
    per_worker_goal = GPU_INPUT_TOKENS_PER_S / WORKERS_PER_GPU
    print(f"{os.cpu_count()} CPU cores; goal: {GPU_INPUT_TOKENS_PER_S:,} input tokens/s per GPU = "
          f"{per_worker_goal:,.0f} per worker at {WORKERS_PER_GPU} workers")
    with tempfile.TemporaryDirectory() as folder:
        sources = cut_into_shards(args.jsonl, Path(folder), args.shards)
        config = DataConfig(sources=(sources,), inputs_length=512, batch_size=args.batch_size,
                            shuffle_buffer=args.shuffle_buffer, eval_fraction=0.0)
        print(f"{args.shards} json.gz shards, inputs 512 / targets {PretrainingStream(config, tokenizer).targets_length}, "
              f"micro-batch {args.batch_size}, {args.batches} micro-batches timed")
        print(f"{'workers':>7} {'first batch s':>13} {'input tok/s':>12} {'per worker':>11} {'vs goal':>8}")
        for workers in args.workers:
            first, rate = measure(config.replace(num_workers=workers), tokenizer, args.batches)
            per_worker = rate / max(workers, 1)
            print(f"{workers:>7} {first:>13.2f} {rate:>12,.0f} {per_worker:>11,.0f} {per_worker / per_worker_goal:>7.2f}x")


if __name__ == "__main__":
    main()
