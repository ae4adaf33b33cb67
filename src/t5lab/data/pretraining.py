"""The pre-training stream: corpus -> tokens -> fixed-length chunks -> denoised batches, sharded and resumable.

Documents are numbered in corpus order. With `eval_fraction` f, every round(1/f)-th document is held out
(the eval split); the rest are dealt round-robin to `world_size * num_workers` shards, shard
`rank * num_workers + worker`, so an epoch shows every training document exactly once across all ranks.
Each shard groups its documents into blocks of `shuffle_buffer`, permuted by a seed derived from (seed,
shard, epoch, block): a shuffle buffer whose whole state is a few integers. The shard's documents are
tokenized (in the DataLoader worker), joined with EOS as T5 does, and cut into raw chunks of exactly the
denoiser's `tokens_length` (a chunk may span documents and epochs), then denoised a batch at a time.

Resume: a worker's position is (epoch, block, document, token offset, batch counter); every batch carries
its worker's position after it, `PretrainingStream` keeps the last one consumed from each worker, and a
stream loaded from `state_dict()` continues with exactly the next batches (all randomness is seeded from
those integers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from t5lab.data.builtin_corpus import BUILTIN
from t5lab.data.corpora import FORMATS, Format, iter_documents
from t5lab.data.objectives import OBJECTIVES, Mixture, Objective, TokenizerLike, build_objective
from t5lab.errors import T5LabError, field_checker

Split = Literal["train", "eval"]
_STATE_VERSION = 1


class Tokenizes(TokenizerLike, Protocol):
    def encode_batch(self, texts: list[str], add_eos: bool = True) -> list[list[int]]: ...


@dataclass(frozen=True)
class DataConfig:
    """Where the pre-training text comes from and how it becomes batches.

    Args:
        sources: paths, globs, 'builtin' (the standard library's documentation; no files needed) or
            'hf:NAME[:CONFIG][@SPLIT]' (a Hugging Face hub dataset, streamed).
        format: 'auto' (from the file suffix), 'text', 'jsonl', 'parquet' or 'hf' (a saved dataset folder).
        text_field: the JSONL field / Parquet or dataset column holding the text.
        paragraphs: text files: one document per blank-line separated paragraph instead of per line.
        inputs_length: encoder length (T5: 512; raw chunks are longer, e.g. 568).
        noise_density: span corruption: fraction of raw tokens masked.
        mean_noise_span_length: span corruption: average masked span length.
        objective: 'span_corruption' (T5) or 'ul2' (mixture of denoisers).
        batch_size: examples per batch (per rank).
        num_workers: DataLoader worker processes per rank (0: tokenize in the main process).
        shuffle_buffer: documents shuffled together (1: corpus order).
        seed: seeds the shuffle and the noise.
        eval_fraction: fraction of documents held out for evaluation (0: none).
    """

    sources: tuple[str, ...] = (BUILTIN,)
    format: Format = "auto"
    text_field: str = "text"
    paragraphs: bool = False
    inputs_length: int = 512
    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0
    objective: Objective = "span_corruption"
    batch_size: int = 8
    num_workers: int = 0
    shuffle_buffer: int = 1000
    seed: int = 0
    eval_fraction: float = 0.01

    def __post_init__(self) -> None:
        if isinstance(self.sources, str):  # a single path given where a list is expected
            object.__setattr__(self, "sources", (self.sources,))
        object.__setattr__(self, "sources", tuple(self.sources))

        need = field_checker(self, "data config field")

        need(len(self.sources) > 0, "sources", "at least one path, glob, 'builtin' or 'hf:NAME'")
        need(self.format in FORMATS, "format", f"one of {', '.join(FORMATS)}")
        need(self.objective in OBJECTIVES, "objective", f"one of {', '.join(OBJECTIVES)}")
        need(self.inputs_length >= 8, "inputs_length", "at least 8 tokens")
        need(0.0 < self.noise_density < 1.0, "noise_density", "a fraction strictly between 0 and 1")
        need(self.mean_noise_span_length >= 1.0, "mean_noise_span_length", "at least 1.0")
        need(self.batch_size >= 1, "batch_size", "a positive integer")
        need(self.num_workers >= 0, "num_workers", "0 or more worker processes")
        need(self.shuffle_buffer >= 1, "shuffle_buffer", "at least 1 document")
        need(0.0 <= self.eval_fraction <= 0.5, "eval_fraction", "a fraction in [0, 0.5]")

    def replace(self, **changes: Any) -> DataConfig:
        return dataclasses.replace(self, **changes)

    @property
    def eval_every(self) -> int:
        """Every `eval_every`-th document is held out (0: none)."""
        return round(1 / self.eval_fraction) if self.eval_fraction > 0 else 0


def shard_of(config: DataConfig, number: int, split: Split, num_shards: int) -> tuple[int, int] | None:
    """(shard, position within the shard) of document `number` in `split`, or None if it is in the other
    split. Pure arithmetic, so a worker skips other shards' documents without decoding them."""
    k = config.eval_every
    held_out = k > 0 and number % k == k - 1
    if held_out != (split == "eval"):
        return None
    index = number // k if held_out else number - (number // k if k else 0)
    return index % num_shards, index // num_shards


def _start_state() -> dict[str, int]:
    return {"epoch": 0, "block": 0, "doc": 0, "offset": 0, "batch": 0}


class ShardStream:
    """One shard's batches, each with the shard's position after it; starts from `state`."""

    def __init__(
        self,
        config: DataConfig,
        tokenizer: Tokenizes,
        objective: Mixture,
        shard: int,
        num_shards: int,
        split: Split = "train",
        state: dict[str, int] | None = None,
    ) -> None:
        self.config, self.tokenizer, self.objective = config, tokenizer, objective
        self.shard, self.num_shards, self.split = shard, num_shards, split
        self.state = dict(state or _start_state())

    def _blocks(self, epoch: int, first_block: int) -> Iterator[tuple[int, list[str]]]:
        size = self.config.shuffle_buffer if self.split == "train" else 1
        first_index = first_block * size

        def keep(number: int) -> bool:
            where = shard_of(self.config, number, self.split, self.num_shards)
            return where is not None and where[0] == self.shard and where[1] >= first_index

        block, texts = first_block, []
        docs = iter_documents(self.config.sources, self.config.format, self.config.text_field,
                              self.config.paragraphs, keep)
        for text in docs:
            texts.append(text)
            if len(texts) == size:
                yield block, self._shuffled(texts, epoch, block)
                block, texts = block + 1, []
        if texts:
            yield block, self._shuffled(texts, epoch, block)

    def _shuffled(self, texts: list[str], epoch: int, block: int) -> list[str]:
        if self.split != "train" or len(texts) == 1:
            return texts
        order = np.random.default_rng([self.config.seed, self.shard, epoch, block]).permutation(len(texts))
        return [texts[i] for i in order]

    def documents(self) -> Iterator[tuple[tuple[int, int, int], list[int]]]:
        """(epoch, block, doc) and EOS-terminated tokens of each document from the saved position on;
        endless for the train split, one pass for eval."""
        epoch, block, doc = self.state["epoch"], self.state["block"], self.state["doc"]
        while True:
            found = False
            for block_no, texts in self._blocks(epoch, block):
                found = True
                texts = texts[doc:] if block_no == block else texts
                first = doc if block_no == block else 0
                for i, tokens in enumerate(self.tokenizer.encode_batch(texts, add_eos=True)):
                    yield (epoch, block_no, first + i), tokens
            if self.split == "eval":
                return
            if not found and block == 0:
                raise T5LabError(
                    f"sources {list(self.config.sources)}: no training documents for shard {self.shard} of "
                    f"{self.num_shards} (world_size x num_workers); the corpus is too small"
                )
            epoch, block, doc = epoch + 1, 0, 0

    def __iter__(self) -> Iterator[tuple[dict[str, np.ndarray], dict[str, int]]]:
        cursor = _TokenCursor(self.documents(), self.state)
        while True:
            rng = np.random.default_rng([self.config.seed, self.shard, self.state["batch"], int(self.split == "eval")])
            denoiser = self.objective.draw(rng)
            chunks: list[np.ndarray] = []
            while len(chunks) < self.config.batch_size:
                chunk = cursor.take(denoiser.tokens_length)
                if chunk is None:  # eval split exhausted: a partial chunk is dropped
                    break
                chunks.append(chunk)
            if not chunks:
                return
            inputs, targets = denoiser(np.stack(chunks), rng)
            epoch, block, doc = cursor.where
            self.state = {"epoch": epoch, "block": block, "doc": doc, "offset": cursor.offset,
                          "batch": self.state["batch"] + 1}
            yield {"input_ids": inputs, "labels": targets}, dict(self.state)
            if len(chunks) < self.config.batch_size:
                return


class _TokenCursor:
    """Reads a shard's EOS-joined token stream; (`where`, `offset`) locate the next token to read."""

    def __init__(self, docs: Iterator[tuple[tuple[int, int, int], list[int]]], state: dict[str, int]) -> None:
        self._docs = docs
        self.where = (state["epoch"], state["block"], state["doc"])
        self.offset = state["offset"]
        self._tokens: np.ndarray | None = None  # the document at `where`, read on first use

    def take(self, n: int) -> np.ndarray | None:
        """The next `n` tokens, crossing document (and epoch) boundaries; None once the stream ends."""
        pieces = []
        while n:
            if self._tokens is None or self.offset >= len(self._tokens):
                nxt = next(self._docs, None)
                if nxt is None:
                    return None
                if self._tokens is not None:  # the resumed document keeps its saved offset
                    self.offset = 0
                self.where, raw = nxt
                self._tokens = np.asarray(raw, dtype=np.int64)
                continue
            piece = self._tokens[self.offset : self.offset + n]
            pieces.append(piece)
            self.offset += len(piece)
            n -= len(piece)
        return np.concatenate(pieces)


class _ShardedDataset(IterableDataset):
    """Runs in each DataLoader worker: picks the worker's shard and tags batches with (worker, state).

    `rotate` renumbers workers so that a resumed loader, whose first batch always comes from DataLoader
    worker 0, continues with the logical worker that was next in the interrupted run.
    """

    def __init__(self, stream: PretrainingStream, states: list[dict[str, int]], rotate: int) -> None:
        self.stream, self.states, self.rotate = stream, states, rotate

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        workers = self.stream.workers
        logical = ((info.id if info else 0) + self.rotate) % workers
        s = self.stream
        shard = ShardStream(s.config, s.tokenizer, s.objective, s.rank * workers + logical,
                            s.world_size * workers, s.split, self.states[logical])
        for arrays, state in shard:
            yield {**{k: torch.from_numpy(v) for k, v in arrays.items()}, "_worker": logical, "_state": state}


class PretrainingStream:
    """Batches {"input_ids": int64 [B, inputs_length], "labels": int64 [B, targets_length]} for one rank.

    Iterating continues where the last iteration stopped; `state_dict()` (plain ints, JSON- and
    `torch.save(weights_only=True)`-safe) taken after N batches, loaded into a new stream with the same
    config, tokenizer, rank and world size, yields batch N+1 next, bit for bit. With objective 'ul2' the
    labels' length depends on the batch's denoiser. No padding: no attention mask is needed.
    The train split is endless (epoch after epoch); the eval split is one pass, restarted by every
    iteration, and its last batch may be smaller.
    """

    def __init__(
        self,
        config: DataConfig,
        tokenizer: Tokenizes,
        *,
        rank: int = 0,
        world_size: int = 1,
        split: Split = "train",
    ) -> None:
        if not 0 <= rank < world_size:
            raise T5LabError(f"rank={rank}: expected 0 <= rank < world_size={world_size}")
        if split not in ("train", "eval"):
            raise T5LabError(f"split={split!r}: expected 'train' or 'eval'")
        if split == "eval" and config.eval_every == 0:
            raise T5LabError("eval split requested but data config field 'eval_fraction' is 0")
        self.config, self.tokenizer, self.rank, self.world_size, self.split = config, tokenizer, rank, world_size, split
        self.objective = build_objective(config.objective, tokenizer, config.inputs_length, config.noise_density,
                                         config.mean_noise_span_length)
        self.workers = max(config.num_workers, 1)
        self._states = [_start_state() for _ in range(self.workers)]
        self._next_worker = 0

    @property
    def tokens_length(self) -> int:
        """Raw tokens per example of the (first) denoiser, e.g. 568 for T5 at inputs 512."""
        return self.objective.denoisers[0].tokens_length

    @property
    def targets_length(self) -> int:
        """Labels per example of the (first) denoiser, e.g. 114 for T5 at inputs 512."""
        return self.objective.denoisers[0].targets_length

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.split == "eval":  # every pass over the held-out set starts at its beginning
            self._states, self._next_worker = [_start_state() for _ in range(self.workers)], 0
        dataset = _ShardedDataset(self, [dict(s) for s in self._states], self._next_worker)
        loader = DataLoader(dataset, batch_size=None, num_workers=self.config.num_workers)
        try:
            for item in loader:
                worker = item.pop("_worker")
                self._states[worker] = {k: int(v) for k, v in item.pop("_state").items()}
                self._next_worker = (worker + 1) % self.workers
                yield item
        except T5LabError as e:
            # A worker's error arrives wrapped with its traceback; keep the one-line message for the CLI.
            raise T5LabError(str(e).strip().splitlines()[-1].removeprefix("t5lab.errors.T5LabError: ")) from None

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "rank": self.rank,
            "world_size": self.world_size,
            "num_workers": self.workers,
            "split": self.split,
            "next_worker": self._next_worker,
            "workers": [dict(s) for s in self._states],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        expected = {"version": _STATE_VERSION, "rank": self.rank, "world_size": self.world_size,
                    "num_workers": self.workers, "split": self.split}
        for key, value in expected.items():
            if state.get(key) != value:
                raise T5LabError(
                    f"data state field '{key}'={state.get(key)!r}: this stream has {value!r} (resume with the "
                    "same world size, num_workers and split)"
                )
        workers = state.get("workers")
        if not isinstance(workers, list) or len(workers) != self.workers:
            raise T5LabError(f"data state field 'workers': expected {self.workers} worker positions")
        self._states = [{k: int(w[k]) for k in _start_state()} for w in workers]
        self._next_worker = int(state["next_worker"]) % self.workers
