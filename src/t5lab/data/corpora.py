"""Streaming corpus readers: plain text, JSONL, Parquet, Hugging Face `datasets`, and the built-in corpus.

A corpus is a list of sources (paths, globs, `builtin`, or `hf:NAME[:CONFIG][@SPLIT]`). Documents are
numbered in reading order across all sources; `iter_documents(..., keep=...)` yields only the documents
whose number `keep` accepts, without decoding the others. For streaming at scale a corpus is cut into
`Piece`s (files, or byte ranges of big plain files) that `read_piece` reads from a saved position, so each
reader touches only its own bytes and a resumed reader seeks instead of re-reading.
"""

from __future__ import annotations

import functools
import glob
import gzip
import io
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from t5lab.data.builtin_corpus import BUILTIN, builtin_documents
from t5lab.errors import T5LabError

Format = Literal["auto", "text", "jsonl", "parquet", "hf"]
FORMATS: tuple[str, ...] = ("auto", "text", "jsonl", "parquet", "hf")
_SUFFIX_FORMATS = {".txt": "text", ".text": "text", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}


def resolve_sources(sources: Sequence[str]) -> list[str]:
    """Expand globs (sorted, for a reproducible order); `builtin` and `hf:` names pass through."""
    if not sources:
        raise T5LabError("sources: expected at least one path, glob, 'builtin' or 'hf:NAME'")
    resolved: list[str] = []
    for source in sources:
        if source == BUILTIN or source.startswith("hf:"):
            resolved.append(source)
        elif glob.has_magic(source):
            matches = sorted(glob.glob(os.path.expanduser(source), recursive=True))
            if not matches:
                raise T5LabError(f"{source}: no file matches this pattern")
            resolved.extend(matches)
        elif not Path(source).expanduser().exists():
            raise T5LabError(f"{source}: no such file or directory")
        else:
            resolved.append(str(Path(source).expanduser()))
    return resolved


def source_format(source: str, fmt: Format = "auto") -> str:
    """The reader for one source: the given format, or one guessed from the name."""
    if fmt not in FORMATS:
        raise T5LabError(f"format={fmt!r}: expected one of {', '.join(FORMATS)}")
    if source == BUILTIN:
        return BUILTIN
    if source.startswith("hf:") or Path(source).is_dir():
        return "hf"
    if fmt != "auto":
        return fmt
    suffix = Path(source[:-3] if source.endswith(".gz") else source).suffix.lower()
    if suffix not in _SUFFIX_FORMATS:
        raise T5LabError(
            f"{source}: cannot tell the format from the suffix {suffix!r} (expected .txt, .jsonl, .parquet, "
            "a datasets folder, or set format)"
        )
    return _SUFFIX_FORMATS[suffix]


def _open_binary(path: str) -> io.BufferedIOBase:
    try:
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")  # noqa: SIM115
    except OSError as e:
        raise T5LabError(f"{path}: cannot open ({e.strerror})") from None


class BadLine(T5LabError):
    """A line that is not a document (not UTF-8, not JSON, no text field): skippable with `skip_bad_lines`."""


def _line_number(path: str, offset: int) -> int:
    """The 1-based number of the line starting at byte `offset`; reads the file up to it, so it is only
    called to name a bad line, never on the reading path."""
    newlines = 0
    with _open_binary(path) as f:
        while offset > 0:
            block = f.read(min(offset, 1 << 20))
            if not block:
                break
            newlines += block.count(b"\n")
            offset -= len(block)
    return newlines + 1


def _decode(raw: bytes, path: str, offset: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadLine(f"{path}:{_line_number(path, offset)}: not UTF-8 text ({e.reason} at byte {e.start})") from None


@dataclass(frozen=True)
class Piece:
    """A unit of reading: a whole source, or the lines of a plain text/JSONL file that start in the byte
    range [start, end). Pieces are what lanes (see `t5lab.data.pretraining`) own, so that no reader
    touches another's bytes."""

    source: str
    fmt: str
    start: int = 0
    end: int = -1  # -1: to the end of the source
    shard: int = 0  # a Parquet file's row group or a Hugging Face dataset's shard, of `num_shards`
    num_shards: int = 1

    def __str__(self) -> str:
        if self.num_shards > 1:
            return f"{self.source} (shard {self.shard} of {self.num_shards})"
        return self.source if self.end < 0 else f"{self.source}[{self.start}:{self.end}]"


def plan_pieces(sources: Sequence[str], fmt: Format = "auto", paragraphs: bool = False,
                split_bytes: int = 1 << 20, text_field: str = "text", split_rows: int = 10_000) -> list[Piece]:
    """The pieces of `sources`, in order: plain (uncompressed) line-per-document files are cut into byte
    ranges of about `split_bytes`; Parquet files into their row groups; Hugging Face datasets into their
    shards (a streamed dataset's files, a saved one's rows in blocks of `split_rows`); gzip, paragraph-mode
    text and `builtin` stay whole (they cannot be entered in the middle cheaply)."""
    pieces: list[Piece] = []
    for source in resolve_sources(sources):
        fmt_here = source_format(source, fmt)
        if fmt_here == "hf":
            n = _hf_shards(source, text_field, split_rows)
            pieces += [Piece(source, fmt_here, shard=i, num_shards=n) for i in range(n)]
            continue
        if fmt_here == "parquet":
            n = max(1, _parquet(source, text_field)[0].metadata.num_row_groups)
            pieces += [Piece(source, fmt_here, shard=i, num_shards=n) for i in range(n)]
            continue
        if fmt_here in ("text", "jsonl") and not source.endswith(".gz") and not (fmt_here == "text" and paragraphs):
            try:
                size = os.path.getsize(source)
            except OSError as e:
                raise T5LabError(f"{source}: cannot open ({e.strerror})") from None
            n = -(-size // split_bytes)
            if n > 1:
                bounds = [size * i // n for i in range(n + 1)]
                pieces += [Piece(source, fmt_here, a, b) for a, b in zip(bounds, bounds[1:], strict=False)]
                continue
        pieces.append(Piece(source, fmt_here))
    return pieces


Lazy = Callable[[], str]


def _given(text: str) -> Lazy:
    """A document its reader has decoded already (Parquet, datasets, the built-in text)."""
    return lambda: text


def _line_text(raw: bytes, path: str, offset: int) -> str:
    return _decode(raw, path, offset).rstrip("\r\n")


def _paragraph_text(lines: list[bytes], path: str, offset: int) -> str:
    return _decode(b"".join(lines), path, offset).strip()


def _lines(piece: Piece, position: int | None) -> Iterator[tuple[bytes, int, int]]:
    """(line, its byte offset, the offset after it) for the lines starting in the piece, from `position`
    (a line start returned earlier; None: the piece's start). Reads no byte before the piece but the one
    that tells whether its first line starts exactly at `start`."""
    with _open_binary(piece.source) as f:
        if position is not None:
            f.seek(position)
            pos = position
        elif piece.start > 0:
            f.seek(piece.start - 1)
            pos = piece.start - 1 + len(f.readline())  # the line in progress belongs to the piece before
        else:
            pos = 0
        while piece.end < 0 or pos < piece.end:
            raw = f.readline()
            if not raw:
                return
            yield raw, pos, pos + len(raw)
            pos += len(raw)


def _read_text(piece: Piece, paragraphs: bool, position: int | None) -> Iterator[tuple[Lazy, int]]:
    """One document per non-blank line, or per blank-line separated paragraph; decoding is deferred."""
    path = piece.source
    if not paragraphs:
        for raw, at, after in _lines(piece, position):
            if raw.strip():
                yield functools.partial(_line_text, raw, path, at), after
        return
    lines: list[bytes] = []
    first = 0
    for raw, at, after in _lines(piece, position):
        if raw.strip():
            if not lines:
                first = at
            lines.append(raw)
        elif lines:
            yield functools.partial(_paragraph_text, lines, path, first), after
            lines = []
    if lines:
        yield functools.partial(_paragraph_text, lines, path, first), after


def _read_jsonl(piece: Piece, text_field: str, position: int | None) -> Iterator[tuple[Lazy, int]]:
    path = piece.source

    def parse(raw: bytes, at: int) -> str:
        try:
            record = json.loads(_decode(raw, path, at))
        except json.JSONDecodeError as e:
            raise BadLine(f"{path}:{_line_number(path, at)}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or text_field not in record:
            raise BadLine(f"{path}:{_line_number(path, at)}: expected a JSON object with the field "
                          f"'{text_field}' (text_field)")
        if not isinstance(record[text_field], str):
            raise BadLine(f"{path}:{_line_number(path, at)}: field '{text_field}' is not a string")
        return record[text_field]

    for raw, at, after in _lines(piece, position):
        if raw.strip():
            yield functools.partial(parse, raw, at), after


def _parquet(path: str, text_field: str) -> tuple[Any, tuple[type[Exception], ...]]:
    """The opened Parquet file and the exceptions that mean it is unreadable (pyarrow raises its own)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise T5LabError(f"{path}: reading Parquet needs pyarrow (pip install 't5lab[parquet]')") from None
    unreadable = (OSError, pa.ArrowException)
    try:
        file = pq.ParquetFile(path)
    except unreadable as e:
        raise T5LabError(f"{path}: not a readable Parquet file ({e})") from None
    if text_field not in file.schema_arrow.names:
        raise T5LabError(f"{path}: no column '{text_field}' (text_field); columns: {file.schema_arrow.names}")
    return file, unreadable


def _read_parquet(piece: Piece, text_field: str) -> Iterator[Lazy]:
    file, unreadable = _parquet(piece.source, text_field)
    row_groups = [piece.shard] if piece.num_shards > 1 else None
    try:
        for batch in file.iter_batches(batch_size=1024, row_groups=row_groups, columns=[text_field]):
            for text in batch.column(0).to_pylist():
                if isinstance(text, str) and text.strip():  # nulls and empty rows are not documents
                    yield _given(text)
    except unreadable as e:
        raise T5LabError(f"{piece.source}: not a readable Parquet file ({e})") from None


@functools.lru_cache(maxsize=16)  # a lane opens each of its shards; resolving a hub dataset is a round trip
def _hf_dataset(source: str, text_field: str) -> Any:
    """The `datasets` dataset of `source`: streamed from the hub ('hf:...'), or a saved folder's train split."""
    try:
        import datasets
    except ImportError:
        raise T5LabError(f"{source}: reading Hugging Face datasets needs `datasets` "
                         "(pip install 't5lab[datasets]')") from None
    if source.startswith("hf:"):
        name, _, split = source[3:].partition("@")
        path, _, config = name.partition(":")
        try:
            data = datasets.load_dataset(path, config or None, split=split or "train", streaming=True)
        except Exception as e:  # network, unknown name, bad split: all user-facing
            raise T5LabError(f"{source}: cannot load this dataset ({type(e).__name__}: {e})") from None
    else:
        try:
            data = datasets.load_from_disk(source)
        except Exception as e:
            raise T5LabError(f"{source}: not a dataset folder saved by `datasets` ({e})") from None
        if isinstance(data, datasets.DatasetDict):
            if "train" not in data:
                raise T5LabError(f"{source}: a DatasetDict without a 'train' split (splits: {list(data)})")
            data = data["train"]
    if text_field not in (data.column_names or [text_field]):
        raise T5LabError(f"{source}: no column '{text_field}' (text_field); columns: {data.column_names}")
    return data


def _hf_shards(source: str, text_field: str, split_rows: int) -> int:
    """Pieces of a dataset: a streamed one's files (C4 'en': 1,024), a saved one's rows in `split_rows`."""
    data = _hf_dataset(source, text_field)
    if source.startswith("hf:"):
        return max(1, data.n_shards)
    return max(1, -(-len(data) // split_rows))


def _read_hf(piece: Piece, text_field: str) -> Iterator[Lazy]:
    data = _hf_dataset(piece.source, text_field)
    if piece.num_shards > 1:
        if piece.source.startswith("hf:"):  # exactly the stream's files number `piece.shard` mod num_shards
            from datasets.distributed import split_dataset_by_node

            data = split_dataset_by_node(data, rank=piece.shard, world_size=piece.num_shards)
        else:
            data = data.shard(piece.num_shards, piece.shard, contiguous=True)
    for record in data:
        text = record[text_field]
        if isinstance(text, str) and text.strip():
            yield _given(text)


def _counted(docs: Iterator[Lazy], position: int | None) -> Iterator[tuple[Lazy, int]]:
    """Readers that cannot seek: the position is the number of documents read, skipped by count."""
    skip = position or 0
    for number, lazy in enumerate(docs, 1):
        if number > skip:
            yield lazy, number


def read_piece(piece: Piece, text_field: str = "text", paragraphs: bool = False,
               position: int | None = None) -> Iterator[tuple[Lazy, int]]:
    """(lazily decoded document, the position after it) for each document of `piece` from `position` (one
    returned earlier; None: the start). Plain and gzip files seek to it (gzip by decompressing up to it);
    Parquet, datasets and `builtin` skip that many documents."""
    if piece.fmt == BUILTIN:
        return _counted((_given(d) for d in builtin_documents()), position)
    if piece.fmt == "hf":
        return _counted(_read_hf(piece, text_field), position)
    if piece.fmt == "parquet":
        return _counted(_read_parquet(piece, text_field), position)
    if piece.fmt == "jsonl":
        return _read_jsonl(piece, text_field, position)
    return _read_text(piece, paragraphs, position)


def iter_documents(
    sources: Sequence[str],
    fmt: Format = "auto",
    text_field: str = "text",
    paragraphs: bool = False,
    keep: Callable[[int], bool] | None = None,
) -> Iterator[str]:
    """Stream the documents of `sources` in order, numbered from 0; only those `keep(number)` accepts are
    decoded and yielded. Raises T5LabError naming the file for a missing file, a file without documents,
    or undecodable text (with its line)."""
    number = 0
    for source in resolve_sources(sources):
        found = False
        for lazy, _ in read_piece(Piece(source, source_format(source, fmt)), text_field, paragraphs):
            found = True
            if keep is None or keep(number):
                yield lazy()
            number += 1
        if not found:
            raise T5LabError(f"{source}: contains no documents")
