"""The GLUE tasks (CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI, RTE, WNLI) in T5's text-to-text format.

T5 (t5/data/preprocessors.py `glue`) writes "<benchmark> <feature>: <text> ..." with the features in sorted
name order and uses the label names of the TFDS GLUE builder as targets, e.g. "rte sentence1: ... sentence2:
..." -> "not_entailment", "mnli hypothesis: ... premise: ..." -> "neutral". STS-B is regression as text
(T5's `stsb`): the score rounded to the nearest 0.2 and written with one decimal ("3.8"). Metrics are those
of T5's GLUE_METRICS: CoLA Matthews correlation; SST-2, MNLI, QNLI, RTE and WNLI accuracy; MRPC and QQP F1
and accuracy; STS-B Pearson and Spearman correlation.

Files are read in the formats of the official releases: GLUE's TSVs (their own column names are renamed to
the Hugging Face field names, so that one converter serves both sources), the CoLA authors' raw TSVs (no
header), and Microsoft's MRPC files (which GLUE's MRPC train/dev TSVs share). MNLI's "validation" is the
matched dev set; "validation_mismatched" is the other.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from t5lab.data.tasks.base import (
    Example,
    Reader,
    Record,
    RecordError,
    Task,
    classification_example,
    glue_input,
    read_tsv,
)
from t5lab.data.tasks.scoring import label_scorer, stsb_scorer
from t5lab.errors import T5LabError

COLA_LABELS = ("unacceptable", "acceptable")
SST2_LABELS = ("negative", "positive")
MRPC_LABELS = ("not_equivalent", "equivalent")
RTE_LABELS = ("entailment", "not_entailment")
QQP_LABELS = ("not_duplicate", "duplicate")
MNLI_LABELS = ("entailment", "neutral", "contradiction")
QNLI_LABELS = ("entailment", "not_entailment")
WNLI_LABELS = ("not_entailment", "entailment")  # GLUE's WNLI files write 1 for entailment


def _read_cola(path: Path) -> Iterator[tuple[str, Record]]:
    # The CoLA release (and GLUE's copy of its train/dev) has no header: source, label, original mark, sentence.
    yield from read_tsv(path, names=("source", "label", "mark", "sentence"))


def _read_mrpc(path: Path) -> Iterator[tuple[str, Record]]:
    # Microsoft's format, with a byte-order mark: Quality, #1 ID, #2 ID, #1 String, #2 String. Renamed to the
    # field names GLUE (and Hugging Face) use so that one converter serves both sources.
    for location, row in read_tsv(path, encoding="utf-8-sig"):
        if "#1 String" not in row or "#2 String" not in row:
            raise T5LabError(f"{path}:1: expected MRPC's header with '#1 String' and '#2 String' columns")
        yield (
            location,
            {
                "sentence1": row.get("#1 String"),
                "sentence2": row.get("#2 String"),
                "label": row.get("Quality"),
                "idx": f"{row.get('#1 ID')}-{row.get('#2 ID')}",
            },
        )


def _read_renamed(columns: Mapping[str, str]) -> Reader:
    """GLUE's TSV (header line) with its columns renamed to the Hugging Face field names."""

    def read(path: Path) -> Iterator[tuple[str, Record]]:
        for location, row in read_tsv(path):
            yield location, {columns.get(name, name): value for name, value in row.items()}

    return read


def stsb_target(score: float) -> str:
    """T5's STS-B target, `tf.as_string(tf.round(score * 5) / 5, precision=1)`: 2.75 -> "2.8", 2.5 -> "2.4".

    Python's round, like tf.round, rounds halves to even. T5 computes in float32; for every score with up to
    four decimals (STS-B's have at most three) float64 gives the same strings.
    """
    return f"{round(score * 5) / 5:.1f}"


def _convert_stsb(record: Mapping[str, Any]) -> Example:
    text = glue_input("stsb", record, ("sentence1", "sentence2"))
    value = record.get("label")
    if value is None or value == "":
        return Example(input=text, target="", id=str(record.get("idx", "")))
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise RecordError(f"score {value!r} should be a number from 0 to 5") from None
    if score == -1:  # Hugging Face marks the unlabelled test rows so
        return Example(input=text, target="", id=str(record.get("idx", "")))
    if not 0 <= score <= 5:
        raise RecordError(f"score {value!r} should be a number from 0 to 5")
    return Example(input=text, target=stsb_target(score), id=str(record.get("idx", "")))


def _converter(benchmark: str, keys: tuple[str, ...], labels: tuple[str, ...]):
    def convert(record: Mapping[str, Any]) -> Example:
        return classification_example(record, glue_input(benchmark, record, keys), labels)

    return convert


def _glue_task(
    benchmark: str,
    keys: tuple[str, ...],
    labels: tuple[str, ...],
    metrics: tuple[str, ...],
    splits: Mapping[str, tuple[str, ...]],
    read=read_tsv,
    notes: Mapping[str, str] | None = None,
    hf_splits: Mapping[str, str] | None = None,
) -> Task:
    return Task(
        name=f"glue/{benchmark}",
        splits=splits,
        read=read,
        convert=_converter(benchmark, keys, labels),
        scorer=label_scorer(labels, metrics),
        primary_metric=metrics[0],
        label_names=labels,
        folder=f"glue/{benchmark}",
        hf_dataset=("nyu-mll/glue", benchmark),
        notes=notes or {},
        hf_splits=hf_splits or {},
    )


GLUE_SPLITS = {"train": ("train.tsv",), "validation": ("dev.tsv",), "test": ("test.tsv",)}

TASKS = (
    _glue_task(
        "cola",
        ("sentence",),
        COLA_LABELS,
        ("matthews",),
        {
            "train": ("train.tsv", "raw/in_domain_train.tsv"),
            "validation": ("dev.tsv", "raw/in_domain_dev.tsv"),
            "validation_ood": ("raw/out_of_domain_dev.tsv",),
        },
        read=_read_cola,
        notes={"test": "GLUE's CoLA test set is unlabelled and not read here"},
    ),
    _glue_task(
        "sst2",
        ("sentence",),
        SST2_LABELS,
        ("accuracy",),
        {"train": ("train.tsv",), "validation": ("dev.tsv",), "test": ("test.tsv",)},
    ),
    _glue_task(
        "mrpc",
        ("sentence1", "sentence2"),
        MRPC_LABELS,
        ("f1", "accuracy"),
        {
            "train": ("train.tsv", "msr_paraphrase_train.txt"),
            "validation": ("dev.tsv",),
            "test": ("test.tsv", "msr_paraphrase_test.txt"),
        },
        read=_read_mrpc,
        notes={
            "train": "msr_paraphrase_train.txt holds GLUE's train and dev pairs together (4076)",
            "validation": "GLUE's dev.tsv is cut from msr_paraphrase_train.txt with its mrpc_dev_ids.tsv; "
            "without it, evaluate on 'test' (msr_paraphrase_test.txt, labelled)",
        },
    ),
    _glue_task(
        "qqp",
        ("question1", "question2"),
        QQP_LABELS,
        ("f1", "accuracy"),
        GLUE_SPLITS,
        read=_read_renamed({"id": "idx", "is_duplicate": "label"}),
    ),
    Task(
        name="glue/stsb",
        splits=GLUE_SPLITS,
        read=_read_renamed({"index": "idx", "score": "label"}),
        convert=_convert_stsb,
        scorer=stsb_scorer,
        primary_metric="pearson",
        folder="glue/stsb",
        hf_dataset=("nyu-mll/glue", "stsb"),
    ),
    _glue_task(
        "mnli",
        ("hypothesis", "premise"),
        MNLI_LABELS,
        ("accuracy",),
        {
            "train": ("train.tsv",),
            "validation": ("dev_matched.tsv",),
            "validation_matched": ("dev_matched.tsv",),
            "validation_mismatched": ("dev_mismatched.tsv",),
            "test": ("test_matched.tsv",),
            "test_matched": ("test_matched.tsv",),
            "test_mismatched": ("test_mismatched.tsv",),
        },
        read=_read_renamed(
            {"index": "idx", "sentence1": "premise", "sentence2": "hypothesis", "gold_label": "label"}
        ),
        notes={"validation": "MNLI's validation is the matched dev set, dev_matched.tsv"},
        hf_splits={"validation": "validation_matched", "test": "test_matched"},
    ),
    _glue_task(
        "qnli",
        ("question", "sentence"),
        QNLI_LABELS,
        ("accuracy",),
        GLUE_SPLITS,
        read=_read_renamed({"index": "idx"}),
    ),
    _glue_task(
        "rte",
        ("sentence1", "sentence2"),
        RTE_LABELS,
        ("accuracy",),
        {"train": ("train.tsv",), "validation": ("dev.tsv",), "test": ("test.tsv",)},
    ),
    _glue_task(
        "wnli",
        ("sentence1", "sentence2"),
        WNLI_LABELS,
        ("accuracy",),
        GLUE_SPLITS,
        read=_read_renamed({"index": "idx"}),
    ),
)
