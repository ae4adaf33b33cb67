"""What a text-to-text task is: `Example`, `Task`, and the file readers the task definitions share.

A task turns raw records (one row of an official data file, or one row of the Hugging Face copy of the same
data set) into `Example`s with T5's input/target strings, and scores generated strings with the benchmark's
official metric. Reading is split in two so that both sources share the conversion: a reader yields
`(location, record)` pairs from a file, and the task's `convert` turns one record into one `Example`. A bad
record raises `RecordError`, which `Task.load` turns into a `T5LabError` naming the file and line.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any

from t5lab.errors import T5LabError

Record = dict[str, Any]
Reader = Callable[[Path], Iterator[tuple[str, Record]]]
Scorer = Callable[[Sequence[str], Sequence["Example"]], dict[str, float]]

SPLITS = ("train", "validation", "test")


class RecordError(ValueError):
    """A record lacks a field or holds a value the task does not accept; `Task.load` adds file and line."""


@dataclass(frozen=True)
class Example:
    """One text-to-text example.

    `label` is the class index into `Task.label_names` (None for generation tasks and unlabelled test rows);
    `references` holds every acceptable answer (SQuAD's several answers, a summary) and defaults to the target;
    `group` ties examples that are scored together (MultiRC: the answer options of one question).
    """

    input: str
    target: str
    label: int | None = None
    references: tuple[str, ...] = ()
    group: str | None = None
    id: str = ""

    @property
    def answers(self) -> tuple[str, ...]:
        return self.references or (self.target,)


@dataclass(frozen=True, eq=False)  # compared by identity: the fields hold functions and dicts
class Task:
    """A named task: where its split files are, how a record becomes an `Example`, and how it is scored.

    `splits` maps a split name to candidate file names inside the task's folder (the first that exists is
    read), so that both the official release's names and other common layouts work. `folder` is where the
    task lives under a data root such as shared/data (e.g. "glue/rte"). `hf_dataset` is the (path, config)
    of the same data on the Hugging Face hub, used only when no folder is given and `datasets` is installed;
    `hf_splits` renames a split for the hub where its name differs there (MNLI's "validation" is the hub's
    "validation_matched"). In the splits named by `one_example_per_answer`, an example with several
    references becomes one example per reference (T5 trains ReCoRD so, and scores one example per query).
    """

    name: str
    splits: Mapping[str, tuple[str, ...]]
    read: Reader
    convert: Callable[[Record], Example]
    scorer: Scorer
    primary_metric: str
    label_names: tuple[str, ...] = ()
    folder: str = ""
    hf_dataset: tuple[str, str | None] | None = None
    notes: Mapping[str, str] = field(default_factory=dict)  # split -> why it is missing or what it really is
    hf_splits: Mapping[str, str] = field(default_factory=dict)
    one_example_per_answer: tuple[str, ...] = ()

    def task_dir(self, data_dir: str | Path) -> Path:
        """The folder holding this task's files: `data_dir` itself, or `data_dir/folder` if that exists."""
        data_dir = Path(data_dir)
        if self.folder and (data_dir / self.folder).is_dir():
            return data_dir / self.folder
        return data_dir

    def split_file(self, split: str, data_dir: str | Path) -> Path:
        """The file for `split`, or a T5LabError naming what was expected and which splits exist."""
        folder = self.task_dir(data_dir)
        if not folder.is_dir():
            raise T5LabError(f"{self.name}: data folder {folder} does not exist")
        available = [s for s, names in self.splits.items() if any((folder / n).is_file() for n in names)]
        if split not in self.splits:
            raise T5LabError(
                f"{self.name}: unknown split {split!r}; this task has {', '.join(self.splits)} "
                f"(available in {folder}: {', '.join(available) or 'none'})"
            )
        for name in self.splits[split]:
            if (folder / name).is_file():
                return folder / name
        note = f" ({self.notes[split]})" if split in self.notes else ""
        raise T5LabError(
            f"{self.name}: no {split!r} split in {folder}{note}: expected "
            f"{' or '.join(self.splits[split])}; available splits: {', '.join(available) or 'none'}"
        )

    def load(self, split: str, data_dir: str | Path | None = None) -> list[Example]:
        """Read `split` from local files in `data_dir` (or from the Hugging Face hub when it is None)."""
        if data_dir is None:
            return self._load_hf(split)
        path = self.split_file(split, data_dir)
        examples = []
        for location, record in self.read(path):
            try:
                examples.append(self.convert(record))
            except RecordError as e:
                raise T5LabError(f"{path}:{location}: {e}") from None
        if not examples:
            raise T5LabError(f"{path}: holds no examples")
        return self._per_answer(split, examples)

    def _per_answer(self, split: str, examples: list[Example]) -> list[Example]:
        if split not in self.one_example_per_answer:
            return examples
        return [replace(e, target=answer) for e in examples for answer in (e.references or (e.target,))]

    def _load_hf(self, split: str) -> list[Example]:
        try:
            import datasets  # optional; only for data that is not on disk
        except ImportError:
            raise T5LabError(
                f"{self.name}: give a data folder, or install `datasets` to load from the Hugging Face hub"
            ) from None
        if self.hf_dataset is None:
            raise T5LabError(f"{self.name}: has no Hugging Face copy; give a data folder")
        path, config = self.hf_dataset
        rows = datasets.load_dataset(path, config, split=self.hf_splits.get(split, split))
        examples = []
        for i, row in enumerate(rows):
            try:
                examples.append(self.convert(dict(row)))
            except RecordError as e:
                raise T5LabError(f"{path}/{config}[{split}][{i}]: {e}") from None
        return self._per_answer(split, examples)

    def score(self, predictions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
        """The task's official metrics (percent) of generated strings against `examples`."""
        if len(predictions) != len(examples):
            raise T5LabError(
                f"{self.name}: got {len(predictions)} predictions for {len(examples)} examples; "
                "expected one per example"
            )
        if self.label_names and any(e.label is None for e in examples):
            raise T5LabError(f"{self.name}: cannot score unlabelled examples (a test split has no labels)")
        return self.scorer(predictions, examples)


# Records -------------------------------------------------------------------------------------------------


def get_field(record: Mapping[str, Any], key: str) -> Any:
    """`record[key]`, or a RecordError naming the missing field."""
    if key not in record:
        raise RecordError(f"missing field {key!r} (fields: {', '.join(map(str, record))})")
    return record[key]


def text_field(record: Mapping[str, Any], key: str) -> str:
    value = get_field(record, key)
    if not isinstance(value, str):
        raise RecordError(f"field {key!r} should be a string, got {type(value).__name__} {value!r}")
    return value


def label_index(value: Any, label_names: Sequence[str]) -> int | None:
    """Class index of a label given as its name, an index (int or digit string) or a JSON boolean.

    None and -1 mean "no label" (test rows, as GLUE and Hugging Face mark them).
    """
    if value is None or (isinstance(value, int) and not isinstance(value, bool) and value == -1):
        return None
    if isinstance(value, bool):
        index = int(value)  # label names of boolean tasks are ("False", "True")
    elif isinstance(value, int):
        index = value
    elif isinstance(value, str) and value in label_names:
        return label_names.index(value)
    elif isinstance(value, str) and value.strip().isdigit():
        index = int(value)
    else:
        index = -1
    if not 0 <= index < len(label_names):
        raise RecordError(f"label {value!r} is not one of {', '.join(label_names)} (or their indices)")
    return index


def glue_input(benchmark: str, record: Mapping[str, Any], keys: Sequence[str]) -> str:
    """T5's GLUE-style input: "<benchmark> <key1>: <value1> <key2>: <value2> ..." (joined with single spaces)."""
    parts = [benchmark]
    for key in keys:
        parts += [f"{key}:", text_field(record, key)]
    return " ".join(parts)


def classification_example(
    record: Mapping[str, Any], text: str, label_names: Sequence[str], id_key: str = "idx"
) -> Example:
    label = label_index(record.get("label"), label_names)
    return Example(
        input=text,
        target="" if label is None else label_names[label],
        label=label,
        id=str(record.get(id_key, "")),
    )


# Readers -------------------------------------------------------------------------------------------------


def _decoded_lines(path: Path, f: IO[bytes], encoding: str = "utf-8") -> Iterator[str]:
    """The lines of a binary file decoded one by one, so that a bad byte fails naming its line when read."""
    for lineno, raw in enumerate(f, start=1):
        try:
            yield raw.decode(encoding)
        except UnicodeDecodeError as e:
            raise T5LabError(f"{path}:{lineno}: not valid {encoding.upper()} (byte {e.start + 1} of the line "
                             f"is {raw[e.start:e.start + 1]!r})") from None


def read_tsv(
    path: Path, names: Sequence[str] | None = None, encoding: str = "utf-8"
) -> Iterator[tuple[str, Record]]:
    """Rows of a tab-separated file without quoting (as GLUE writes them), as dicts keyed by column name.

    The column names come from `names`, or from the header line when `names` is None. Blank lines are
    skipped; a row with the wrong number of columns is an error naming its line.
    """
    with open(path, "rb") as f:
        lines = enumerate((line.rstrip("\r\n") for line in _decoded_lines(path, f, encoding)), start=1)
        if names is None:
            _, header = next(lines, (1, ""))
            names = header.split("\t")
        for lineno, line in lines:
            if not line.strip():
                continue
            cells = line.split("\t")
            if len(cells) != len(names):
                raise T5LabError(
                    f"{path}:{lineno}: expected {len(names)} tab-separated columns "
                    f"({', '.join(names)}), found {len(cells)}"
                )
            yield str(lineno), dict(zip(names, cells, strict=True))


def read_jsonl(path: Path) -> Iterator[tuple[str, Record]]:
    """One JSON object per line (SuperGLUE's format)."""
    with open(path, "rb") as f:
        for lineno, line in enumerate(_decoded_lines(path, f), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise T5LabError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise T5LabError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            yield str(lineno), record


def read_csv(path: Path) -> Iterator[tuple[str, Record]]:
    """Rows of a quoted CSV file with a header; the location is the line the row starts on."""
    with open(path, "rb") as f:
        reader = csv.reader(_decoded_lines(path, f))
        try:
            header = next(reader)
            while True:
                start = reader.line_num + 1
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                if not any(cells):
                    continue
                if len(cells) != len(header):
                    raise T5LabError(
                        f"{path}:{start}: expected {len(header)} comma-separated columns "
                        f"({', '.join(header)}), found {len(cells)}"
                    )
                yield str(start), dict(zip(header, cells, strict=True))
        except (csv.Error, StopIteration) as e:
            raise T5LabError(f"{path}:{reader.line_num}: malformed CSV ({e or 'no header'})") from None
