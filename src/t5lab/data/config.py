"""`DataConfig`: where the pre-training text comes from and how it becomes batches.

Frozen and free of torch and numpy imports, like `ModelConfig` and `TrainConfig`, so that a recipe is
parsed and validated, and `t5lab pretrain --help` typed, before anything heavy loads. The stream that reads
it is `t5lab.data.pretraining.PretrainingStream` (which re-exports `DataConfig`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from t5lab.data.builtin_corpus import BUILTIN
from t5lab.data.corpora import FORMATS, Format
from t5lab.errors import field_checker

Objective = Literal["span_corruption", "ul2"]
OBJECTIVES: tuple[str, ...] = ("span_corruption", "ul2")


@dataclass(frozen=True)
class DataConfig:
    """Where the pre-training text comes from and how it becomes batches.

    Args:
        sources: paths, globs, 'builtin' (the standard library's documentation; no files needed) or
            'hf:NAME[:CONFIG][@SPLIT]' (a Hugging Face hub dataset, streamed).
        weights: one weight per source: each example comes from source s with probability weights[s] /
            sum(weights) (drawn per global example). Empty: all sources form one corpus.
        format: 'auto' (from the file suffix), 'text', 'jsonl', 'parquet' or 'hf' (a saved dataset folder).
        text_field: the JSONL field / Parquet or dataset column holding the text.
        paragraphs: text files: one document per blank-line separated paragraph instead of per line.
        inputs_length: encoder length (T5: 512; raw chunks are longer, e.g. 568).
        noise_density: span corruption: fraction of raw tokens masked.
        mean_noise_span_length: span corruption: average masked span length.
        objective: 'span_corruption' (T5) or 'ul2' (mixture of denoisers).
        batch_size: examples per micro-batch on each rank. The global batch is world_size x grad_accum x
            batch_size, and it (not the world size) defines the data order.
        grad_accum: micro-batches per rank per global batch.
        num_workers: DataLoader worker processes per rank (0: tokenize in the main process); at most
            grad_accum x batch_size, as each worker owns whole slots of the rank's share.
        shuffle_buffer: documents shuffled together (1: corpus order).
        seed: seeds the shuffle and the noise.
        eval_fraction: fraction of documents held out for evaluation (0: none).
        split_bytes: plain text/JSONL files are read in byte ranges of about this size, dealt to lanes.
        skip_bad_lines: skip (and count) lines that are not UTF-8 or not valid JSONL instead of stopping
            with the file and line.
    """

    sources: tuple[str, ...] = (BUILTIN,)
    weights: tuple[float, ...] = ()
    format: Format = "auto"
    text_field: str = "text"
    paragraphs: bool = False
    inputs_length: int = 512
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    objective: Objective = "span_corruption"
    batch_size: int = 8
    grad_accum: int = 1
    num_workers: int = 0
    shuffle_buffer: int = 1000
    seed: int = 0
    eval_fraction: float = 0.01
    split_bytes: int = 1 << 20
    skip_bad_lines: bool = False

    def __post_init__(self) -> None:
        for name in ("sources", "weights"):
            value = getattr(self, name)
            if isinstance(value, str | int | float):  # a single value given where a list is expected
                value = (value,)
            object.__setattr__(self, name, tuple(value))

        need = field_checker(self, "data config field")

        need(len(self.sources) > 0, "sources", "at least one path, glob, 'builtin' or 'hf:NAME'")
        need(all(isinstance(w, int | float) and not isinstance(w, bool) for w in self.weights), "weights",
             "numbers, one per source")
        need(len(self.weights) in (0, len(self.sources)), "weights",
             f"one weight per source ({len(self.sources)} source{'s' if len(self.sources) != 1 else ''})")
        need(all(math.isfinite(w) and w >= 0 for w in self.weights) and (not self.weights or sum(self.weights) > 0),
             "weights", "finite, non-negative numbers, not all zero")
        need(self.format in FORMATS, "format", f"one of {', '.join(FORMATS)}")
        need(self.objective in OBJECTIVES, "objective", f"one of {', '.join(OBJECTIVES)}")
        need(self.inputs_length >= 8, "inputs_length", "at least 8 tokens")
        need(0.0 < self.noise_density < 1.0, "noise_density", "a fraction strictly between 0 and 1")
        need(self.mean_noise_span_length >= 1.0, "mean_noise_span_length", "at least 1.0")
        need(self.batch_size >= 1, "batch_size", "a positive integer")
        need(self.grad_accum >= 1, "grad_accum", "a positive integer")
        need(self.num_workers >= 0, "num_workers", "0 or more worker processes")
        need(self.num_workers <= self.grad_accum * self.batch_size, "num_workers",
             f"at most grad_accum x batch_size = {self.grad_accum * self.batch_size} (a worker owns whole slots)")
        need(self.shuffle_buffer >= 1, "shuffle_buffer", "at least 1 document")
        need(0.0 <= self.eval_fraction <= 0.5, "eval_fraction", "a fraction in [0, 0.5]")
        need(self.split_bytes >= 1, "split_bytes", "a positive number of bytes")

    def replace(self, **changes: Any) -> DataConfig:
        return dataclasses.replace(self, **changes)

    @property
    def eval_every(self) -> int:
        """Every `eval_every`-th document of a piece is held out (0: none)."""
        return round(1 / self.eval_fraction) if self.eval_fraction > 0 else 0

    @property
    def groups(self) -> tuple[tuple[str, ...], ...]:
        """The source groups: each weighted source alone, or all sources as one corpus."""
        return tuple((s,) for s in self.sources) if self.weights else (self.sources,)
