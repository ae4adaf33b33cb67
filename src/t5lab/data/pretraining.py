"""The pre-training stream: corpus -> tokens -> fixed-length chunks -> denoised batches, sharded and resumable.

The order of examples is defined by the GLOBAL batch, never by the world size or the number of workers
(MosaicML streaming's "canonical nodes" idea, with one lane per slot of the global batch):

- The global batch holds B = world_size x grad_accum x batch_size examples; global example i is slot
  i mod B of global batch i // B. Each source group (all sources, or each source of a weighted mixture)
  has B *lanes*, one per slot: lane (g, k) is an endless, EOS-joined token stream over its own documents.
- A corpus is cut into pieces (files; big plain text/JSONL files into byte ranges of `split_bytes`; a
  Hugging Face dataset into its shards).
  With at least B pieces, lane k owns pieces k, k+B, k+2B, ...; with fewer, the lanes that share a
  piece take every n-th of its documents (and each decompresses the piece: cut corpora into many files).
  Within a piece every `eval_every`-th document is held out.
- Each epoch, a lane shuffles its documents in blocks of `shuffle_buffer` (seeded by seed, lane, epoch,
  block), tokenizes them, joins them with EOS and cuts raw chunks of the denoiser's `tokens_length`.
- Example i draws its source group by the weights and its span noise from a generator seeded by
  (seed, i); a UL2 denoiser is drawn per global batch. So an example is the same whoever computes it.
- Rank r owns slots [r*a*b, (r+1)*a*b) (a = grad_accum, b = batch_size) and yields them as a micro-
  batches of b: concatenating the ranks' micro-batches of a step gives the 1-rank global batch. Worker j
  of a rank owns the rank's slots j, j+W, ...: every rank x worker reads only its own lanes' pieces.

Resume: `state_dict()` is the global position (the next global batch and micro-batch) and, for each lane
this rank owns, (epoch, block, doc, token offset, and where its block starts: piece, position in it,
documents of the piece read). None of it depends on the world size or workers, so a state saved by two
ranks (merged with `merge_states`) resumes on one, and the other way round; a resumed lane seeks to its
block (plain files) or skips documents within one piece (gzip, Parquet), never re-reading earlier pieces.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from t5lab.data.config import DataConfig
from t5lab.data.corpora import BadLine, Piece, plan_pieces, read_piece
from t5lab.data.objectives import Denoiser, Mixture, TokenizerLike, build_objective
from t5lab.errors import T5LabError

Split = Literal["train", "eval"]
_STATE_VERSION = 2
# A lane's position: epoch, block, document in block, token offset in it; the block's start: piece, position
# in the piece (-1: its start), documents of the piece read before it.
_LANE_FIELDS = ("epoch", "block", "doc", "offset", "piece", "position", "index")
_EVAL_SEED = 0xE7A1  # keeps the held-out noise apart from the training noise


class Tokenizes(TokenizerLike, Protocol):
    def encode_batch(self, texts: list[str], add_eos: bool = True) -> list[list[int]]: ...


def held_out(config: DataConfig, index: int) -> bool:
    """Whether the `index`-th document (from 0) of a piece belongs to the eval split."""
    k = config.eval_every
    return k > 0 and index % k == k - 1


def held_out_documents(config: DataConfig) -> Iterator[str]:
    """The eval split's documents, piece after piece (for samples and inspection)."""
    for group in config.groups:
        for piece in plan_pieces(group, config.format, config.paragraphs, config.split_bytes, config.text_field):
            for index, (lazy, _) in enumerate(read_piece(piece, config.text_field, config.paragraphs)):
                if held_out(config, index):
                    yield lazy()


def _start_lane() -> list[int]:
    return [0, 0, 0, 0, 0, -1, 0]


@dataclass(frozen=True)
class _LanePieces:
    """What lane `lane` of `lanes` reads: its own pieces, or every `share`-th document (from `first`) of a
    piece it shares with other lanes."""

    pieces: tuple[Piece, ...]
    share: int
    first: int

    @classmethod
    def of(cls, pieces: Sequence[Piece], lane: int, lanes: int) -> _LanePieces:
        if len(pieces) >= lanes:
            return cls(tuple(pieces[lane::lanes]), 1, 0)
        home = lane % len(pieces)
        return cls((pieces[home],), len(range(home, lanes, len(pieces))), lane // len(pieces))


class _Lane:
    """One lane's documents of one split from a saved position: (epoch, block, doc, block start) and tokens."""

    def __init__(self, config: DataConfig, tokenizer: Tokenizes, reads: _LanePieces, lane_id: int,
                 split: Split, state: Sequence[int]) -> None:
        self.config, self.tokenizer, self.reads, self.lane_id, self.split = config, tokenizer, reads, lane_id, split
        self.state = list(state)
        self.skipped = 0  # bad lines skipped (skip_bad_lines)

    def _mine(self, index: int) -> bool:
        """Whether the `index`-th document of the piece is this lane's and in its split."""
        k = self.config.eval_every
        if held_out(self.config, index) != (self.split == "eval"):
            return False
        number = index // k if self.split == "eval" else index - (index // k if k else 0)
        return number % self.reads.share == self.reads.first

    def _epoch(self, piece_no: int, position: int, index: int) -> Iterator[tuple[Any, tuple[int, int, int]]]:
        """(lazy document, where reading resumes after it) of this lane from a block start to the epoch's end."""
        c = self.config
        while piece_no < len(self.reads.pieces):
            piece = self.reads.pieces[piece_no]
            for lazy, after in read_piece(piece, c.text_field, c.paragraphs, None if position < 0 else position):
                index += 1
                if self._mine(index - 1):
                    yield lazy, (piece_no, after, index)
            piece_no, position, index = piece_no + 1, -1, 0

    def _decoded(self, lazies: list[Any]) -> list[str]:
        texts = []
        for lazy in lazies:
            try:
                texts.append(lazy())
            except BadLine:
                if not self.config.skip_bad_lines:
                    raise
                self.skipped += 1
        return texts

    def documents(self) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
        """(epoch, block, doc, piece, position, index) and EOS-terminated tokens of each document from the
        saved position on; endless for the train split, one pass for eval."""
        epoch, block, doc, _, *start = self.state
        size = self.config.shuffle_buffer if self.split == "train" else 1 << 30
        while True:
            from_epoch_start = block == 0 and doc == 0
            found = False
            docs = self._epoch(*start)
            while batch := list(itertools.islice(docs, size)):
                found = True
                texts = self._shuffled(self._decoded([lazy for lazy, _ in batch]), epoch, block)
                for i, tokens in enumerate(self.tokenizer.encode_batch(texts[doc:], add_eos=True)):
                    yield (epoch, block, doc + i, *start), np.asarray(tokens, dtype=np.int64)
                block, doc, start = block + 1, 0, list(batch[-1][1])
            if self.split == "eval":
                return
            if not found and from_epoch_start:
                names = ", ".join(map(str, self.reads.pieces))
                if not any(True for piece in self.reads.pieces for _ in read_piece(piece, self.config.text_field,
                                                                                    self.config.paragraphs)):
                    raise T5LabError(f"{names}: contains no documents")
                raise T5LabError(f"sources {list(self.config.sources)}: no training documents for lane "
                                 f"{self.lane_id} (it reads {names}); the corpus is too small for a global "
                                 "batch this large (one lane per example of the global batch)")
            epoch, block, doc, start = epoch + 1, 0, 0, [0, -1, 0]

    def _shuffled(self, texts: list[str], epoch: int, block: int) -> list[str]:
        if self.split != "train" or len(texts) <= 1:
            return texts
        order = np.random.default_rng([self.config.seed, self.lane_id, epoch, block]).permutation(len(texts))
        return [texts[i] for i in order]


class _TokenCursor:
    """Reads an EOS-joined token stream; (`where`, `offset`) locate the next token to read."""

    def __init__(self, docs: Iterator[tuple[tuple[int, ...], np.ndarray]], where: tuple[int, ...], offset: int) -> None:
        self._docs, self.where, self.offset = docs, where, offset
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
                self.where, self._tokens = nxt
                continue
            piece = self._tokens[self.offset : self.offset + n]
            pieces.append(piece)
            self.offset += len(piece)
            n -= len(piece)
        return np.concatenate(pieces)


class _LaneCursor:
    """A lane's token cursor with its state as the 7 integers of `_LANE_FIELDS`."""

    def __init__(self, lane: _Lane) -> None:
        self.lane = lane
        epoch, block, doc, offset, *start = lane.state
        self.cursor = _TokenCursor(lane.documents(), (epoch, block, doc, *start), offset)

    def take(self, n: int) -> np.ndarray | None:
        return self.cursor.take(n)

    @property
    def state(self) -> list[int]:
        epoch, block, doc, *start = self.cursor.where
        return [epoch, block, doc, self.cursor.offset, *start]


class _RankDataset(IterableDataset):
    """Runs in each DataLoader worker (or the main process): the worker's slots of each global batch."""

    def __init__(self, stream: PretrainingStream, lanes: dict[int, list[int]], first_batch: int) -> None:
        self.stream, self.lanes, self.first_batch = stream, lanes, first_batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        s = self.stream
        worker = info.id if info else 0
        if s.split == "eval":
            yield from self._eval(worker)
            return
        slots = s.slots(worker)
        cursors = {lane: _LaneCursor(_Lane(s.config, s.tokenizer, s.lane_reads(lane), lane, "train", self.lanes[lane]))
                   for lane in s.lanes_of(slots)}
        cumulative = np.cumsum(s.weights)
        for number in itertools.count(self.first_batch):
            denoiser = s.denoiser_of_batch(number)
            inputs, labels = [], []
            for slot in slots:
                rng = np.random.default_rng([s.config.seed, number * s.global_batch + slot])
                group = int(np.searchsorted(cumulative, rng.random() * cumulative[-1], side="right"))
                group = min(group, len(cumulative) - 1)
                chunk = cursors[group * s.global_batch + slot].take(denoiser.tokens_length)
                assert chunk is not None  # the train split is endless
                x, y = denoiser(chunk[None, :], rng)
                inputs.append(x[0])
                labels.append(y[0])
            yield {"input_ids": torch.from_numpy(np.stack(inputs)), "labels": torch.from_numpy(np.stack(labels)),
                   "_lanes": {lane: c.state for lane, c in cursors.items()},
                   "_skipped": sum(c.lane.skipped for c in cursors.values())}

    def _eval(self, worker: int) -> Iterator[dict[str, Any]]:
        """One pass over the held-out documents of the worker's lanes, lane after lane, in batches."""
        s = self.stream
        lanes = [_Lane(s.config, s.tokenizer, s.lane_reads(lane), lane, "eval", _start_lane())
                 for lane in s.lanes_of(s.slots(worker))]
        cursor = _TokenCursor(itertools.chain.from_iterable(lane.documents() for lane in lanes), (), 0)
        for number in itertools.count():
            rng = np.random.default_rng([s.config.seed, _EVAL_SEED, s.rank, worker, number])
            denoiser = s.objective.draw(rng)
            chunks: list[np.ndarray] = []
            while len(chunks) < s.config.batch_size and (chunk := cursor.take(denoiser.tokens_length)) is not None:
                chunks.append(chunk)
            if not chunks:  # a partial chunk at the end is dropped
                return
            x, y = denoiser(np.stack(chunks), rng)
            yield {"input_ids": torch.from_numpy(x), "labels": torch.from_numpy(y), "_lanes": {},
                   "_skipped": sum(lane.skipped for lane in lanes)}
            if len(chunks) < s.config.batch_size:
                return


class PretrainingStream:
    """Batches {"input_ids": int64 [b, inputs_length], "labels": int64 [b, targets_length]} for one rank.

    For each global batch N (world_size x grad_accum x batch_size examples; see the module docstring)
    the train split yields this rank's contiguous slice of it as `grad_accum` micro-batches of
    `batch_size`; concatenating the ranks' micro-batches of a step gives exactly the global batch of a
    1-rank stream. Iterating continues where the last iteration stopped; `state_dict()` (plain ints,
    JSON- and `torch.save(weights_only=True)`-safe), loaded into a stream with the same data config and
    global batch (any world size or num_workers; per-rank states merged with `merge_states`), yields the
    next micro-batch, bit for bit. With objective 'ul2' the labels' length depends on the batch's
    denoiser. No padding: no attention mask is needed. The eval split is one pass over this rank's
    held-out documents, restarted by every iteration; its last batch may be smaller.
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
        self.objective: Mixture = build_objective(config.objective, tokenizer, config.inputs_length,
                                                  config.noise_density, config.mean_noise_span_length)
        self.workers = max(config.num_workers, 1)
        self.per_rank = config.grad_accum * config.batch_size
        self.global_batch = world_size * self.per_rank
        self.weights = tuple(config.weights) or (1.0,)
        self._pieces = [plan_pieces(group, config.format, config.paragraphs, config.split_bytes, config.text_field)
                        for group in config.groups]
        first = rank * self.per_rank
        self._lanes = {lane: _start_lane() for lane in self.lanes_of(range(first, first + self.per_rank))}
        self._next_batch, self._micro = 0, 0
        self.skipped_lines = 0  # bad lines skipped by this stream's iterations (skip_bad_lines), once per epoch

    @property
    def tokens_length(self) -> int:
        """Raw tokens per example of the (first) denoiser, e.g. 568 for T5 at inputs 512."""
        return self.objective.denoisers[0].tokens_length

    @property
    def targets_length(self) -> int:
        """Labels per example of the (first) denoiser, e.g. 114 for T5 at inputs 512."""
        return self.objective.denoisers[0].targets_length

    def slots(self, worker: int) -> list[int]:
        """The global-batch slots worker `worker` of this rank computes."""
        first = self.rank * self.per_rank
        return list(range(first + worker, first + self.per_rank, self.workers))

    def lanes_of(self, slots: Sequence[int]) -> list[int]:
        """Lane ids (group x global_batch + slot) of `slots` in every source group."""
        return [group * self.global_batch + slot for group in range(len(self._pieces)) for slot in slots]

    def lane_reads(self, lane: int) -> _LanePieces:
        return _LanePieces.of(self._pieces[lane // self.global_batch], lane % self.global_batch, self.global_batch)

    def denoiser_of_batch(self, number: int) -> Denoiser:
        """The denoiser of global batch `number` (one per global batch, so that its shapes are uniform)."""
        return self.objective.draw(np.random.default_rng([self.config.seed, number, _EVAL_SEED + 1]))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        dataset = _RankDataset(self, {k: list(v) for k, v in self._lanes.items()}, self._next_batch)
        loader = DataLoader(dataset, batch_size=None, num_workers=self.config.num_workers)
        try:
            if self.split == "eval":
                for item in loader:
                    del item["_lanes"]
                    self.skipped_lines += int(item.pop("_skipped"))
                    yield item
                return
            items = iter(loader)
            skipped = [0] * self.workers
            while True:
                parts = [next(items) for _ in range(self.workers)]  # DataLoader returns workers in turn
                for j, part in enumerate(parts):
                    self.skipped_lines += int(part["_skipped"]) - skipped[j]
                    skipped[j] = int(part["_skipped"])
                # Local slot s was computed by worker s % W as its (s // W)-th example.
                order = [(s % self.workers, s // self.workers) for s in range(self.per_rank)]
                inputs = torch.stack([parts[j]["input_ids"][i] for j, i in order])
                labels = torch.stack([parts[j]["labels"][i] for j, i in order])
                after = {int(k): [int(x) for x in v] for part in parts for k, v in part["_lanes"].items()}
                size = self.config.batch_size
                for micro in range(self._micro, self.config.grad_accum):
                    if micro + 1 == self.config.grad_accum:
                        self._lanes, self._next_batch, self._micro = after, self._next_batch + 1, 0
                    else:
                        self._micro = micro + 1
                    yield {"input_ids": inputs[micro * size : (micro + 1) * size],
                           "labels": labels[micro * size : (micro + 1) * size]}
        except T5LabError as e:
            # A worker's error arrives wrapped with its traceback; keep the one-line message for the CLI.
            last = str(e).strip().splitlines()[-1]
            raise T5LabError(re.sub(r"^t5lab\.[\w.]+: ", "", last)) from None

    def merge_states(self, states: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """`merge_states` (below), for a trainer that holds only the stream."""
        return merge_states(states)

    def state_dict(self) -> dict[str, Any]:
        """The global position and this rank's lanes (all lanes on one rank; see `merge_states`)."""
        return {
            "version": _STATE_VERSION,
            "split": self.split,
            "global_batch": self.global_batch,
            "grad_accum": self.config.grad_accum,
            "groups": len(self._pieces),
            "next_batch": self._next_batch,
            "micro": self._micro,
            "lanes": {str(k): list(v) for k, v in self._lanes.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != _STATE_VERSION:
            raise T5LabError(f"data state version {state.get('version')!r}: this t5lab reads version {_STATE_VERSION} "
                             "(version 1, per-worker shards, predates world-size independent lanes; restart the run)")
        expected = {"split": self.split, "global_batch": self.global_batch,
                    "grad_accum": self.config.grad_accum, "groups": len(self._pieces)}
        for key, value in expected.items():
            if state.get(key) != value:
                raise T5LabError(
                    f"data state field '{key}'={state.get(key)!r}: this stream has {value!r} (resume with the "
                    "same global batch = world_size x grad_accum x batch_size, sources and split)"
                )
        lanes = state.get("lanes")
        if not isinstance(lanes, dict):
            raise T5LabError("data state field 'lanes': expected a mapping of lane positions")
        missing = [k for k in self._lanes if str(k) not in lanes]
        if missing:
            raise T5LabError(f"data state has no position for lane {missing[0]} of rank {self.rank} (merge "
                             "the ranks' states with merge_states before resuming on another world size)")
        self._lanes = {k: [int(x) for x in lanes[str(k)]] for k in self._lanes}
        if any(len(v) != len(_LANE_FIELDS) for v in self._lanes.values()):
            raise T5LabError(f"data state field 'lanes': expected {len(_LANE_FIELDS)} integers per lane")
        self._next_batch, self._micro = int(state["next_batch"]), int(state["micro"])


def merge_states(states: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One global data state from the ranks' `state_dict()`s (e.g. gathered with all_gather_object), to
    save once and load on any world size."""
    if not states:
        raise T5LabError("merge_states: expected the data states of all ranks")
    keys = ("version", "split", "global_batch", "grad_accum", "groups", "next_batch", "micro")
    for other in states[1:]:
        differ = [k for k in keys if other.get(k) != states[0].get(k)]
        if differ:
            raise T5LabError(f"data states of the ranks differ in '{differ[0]}' (saved at different steps?)")
    lanes: dict[str, list[int]] = {}
    for state in states:
        lanes.update(state["lanes"])
    return {**{k: states[0][k] for k in keys}, "lanes": lanes}
