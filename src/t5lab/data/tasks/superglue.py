"""SuperGLUE BoolQ, CB, COPA, RTE, WiC, WSC, MultiRC and ReCoRD in T5's text-to-text format.

T5 formats SuperGLUE with its GLUE preprocessor: the task name, then each feature as "<name>: <text>" in
sorted name order unless T5 fixes the order (WiC: sentence1, sentence2, word; MultiRC: question, answer,
paragraph, with the paragraph's <br>/<b> markup removed). Targets are the TFDS label names ("False"/"True",
"entailment"/..., COPA "choice1"/"choice2"). WSC uses T5's `wsc` preprocessor: the noun is marked with
"* ... *" and the pronoun with "# ... #", target "True"/"False" (T5's leaderboard run used a different
"wsc_simple" referent-generation format, which needs its own post-processing; not implemented).

ReCoRD uses T5's `record` preprocessor: "record query: <query with @placeholder> entities: <e1>, <e2>, ...
passage: <passage>" (entities and answers unique and sorted, as TFDS gives them; the passage's "@highlight"
lines joined into sentences), target one answer. T5 trains on one example per answer and scores one per
query against all its answers (max-over-answers SQuAD EM/F1); `load` does the same: one example per answer
in "train", one per query elsewhere.

Files are SuperGLUE's JSONL (train.jsonl, val.jsonl, test.jsonl, plus FewGLUE's dev32.jsonl); note that the
train.jsonl files in t5lab's shared data are FewGLUE's 32-example subsets, not the full training sets. Metrics are
T5's SUPERGLUE_METRICS: accuracy, CB macro-F1 + accuracy, MultiRC F1 over all answers (F1a) + exact match
per question, ReCoRD F1 + exact match.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from t5lab.data.tasks.base import (
    Example,
    Record,
    RecordError,
    Task,
    classification_example,
    get_field,
    glue_input,
    read_jsonl,
    text_field,
)
from t5lab.data.tasks.scoring import label_scorer, multirc_scorer, squad_scorer
from t5lab.errors import T5LabError

BOOL_LABELS = ("False", "True")
CB_LABELS = ("entailment", "contradiction", "neutral")
COPA_LABELS = ("choice1", "choice2")
RTE_LABELS = ("entailment", "not_entailment")

SPLITS = {
    "train": ("train.jsonl",),
    "validation": ("val.jsonl",),
    "test": ("test.jsonl",),
    "dev32": ("dev32.jsonl",),  # FewGLUE's 32 held-out training examples
}


def _task(name: str, folder: str, convert, labels: tuple[str, ...], scorer, primary: str, hf: str) -> Task:
    return Task(
        name=f"superglue/{name}",
        splits=SPLITS,
        read={"multirc": _read_multirc, "record": _read_record}.get(name, read_jsonl),
        convert=convert,
        scorer=scorer,
        primary_metric=primary,
        label_names=labels,
        folder=f"superglue/{folder}",
        hf_dataset=("aps/super_glue", hf),
        one_example_per_answer=("train",) if name == "record" else (),
    )


def _glue_style(
    name: str, keys: tuple[str, ...], labels: tuple[str, ...], metrics: tuple[str, ...], folder: str
):
    def convert(record: Mapping[str, Any]) -> Example:
        return classification_example(record, glue_input(name, record, keys), labels)

    return _task(name, folder, convert, labels, label_scorer(labels, metrics), metrics[0], name)


# WSC -----------------------------------------------------------------------------------------------------


def _mark_span(text: str, span: str, word_index: int, mark: str) -> str:
    # T5's regex: skip `word_index` "<non-space><one space>" words, then expect the span text there. Like T5,
    # leave the text unmarked if the span is not found at that position. Case is ignored because SuperGLUE's
    # WSC capitalises some spans that are lower-case in the text ("The table"), which TFDS's wsc.fixed
    # (what T5 read) corrected.
    match = re.match(rf"^((?:\S+\s){{{word_index}}})({re.escape(span)})", text, re.IGNORECASE)
    if match is None:
        return text
    return f"{text[: match.start(2)]}{mark} {match.group(2)} {mark}{text[match.end(2) :]}"


def _convert_wsc(record: Mapping[str, Any]) -> Example:
    spans = record.get("target", record)  # nested in SuperGLUE's JSONL, flat in the Hugging Face copy
    if not isinstance(spans, Mapping):
        raise RecordError(f"field 'target' should be an object with the span fields, got {spans!r}")
    try:
        span1_index = int(get_field(spans, "span1_index"))
        span2_index = int(get_field(spans, "span2_index"))
    except (TypeError, ValueError):
        raise RecordError("span indices should be integers") from None
    text = _mark_span(text_field(record, "text"), text_field(spans, "span1_text"), span1_index, "*")
    # Marking span 1 added two words ("*" twice) before span 2 if span 1 came first.
    span2_index += 2 if span1_index < span2_index else 0
    text = _mark_span(text, text_field(spans, "span2_text"), span2_index, "#")
    return classification_example(record, f"wsc text: {text}", BOOL_LABELS)


# MultiRC -------------------------------------------------------------------------------------------------


def _read_multirc(path: Path) -> Iterator[tuple[str, Record]]:
    """One record per answer option (the Hugging Face layout) from SuperGLUE's one-paragraph-per-line JSONL."""
    for location, record in read_jsonl(path):
        try:
            passage = get_field(record, "passage")
            paragraph = text_field(passage, "text")
            for question in get_field(passage, "questions"):
                for answer in get_field(question, "answers"):
                    yield (
                        location,
                        {
                            "paragraph": paragraph,
                            "question": text_field(question, "question"),
                            "answer": text_field(answer, "text"),
                            "label": answer.get("label"),
                            "idx": {
                                "paragraph": get_field(record, "idx"),
                                "question": get_field(question, "idx"),
                                "answer": get_field(answer, "idx"),
                            },
                        },
                    )
        except (RecordError, TypeError, AttributeError) as e:
            raise T5LabError(f"{path}:{location}: malformed MultiRC paragraph ({e})") from None


def _convert_multirc(record: Mapping[str, Any]) -> Example:
    text = glue_input("multirc", record, ("question", "answer", "paragraph"))
    text = re.sub(r"<(/)?b>", "", text.replace("<br>", " "))
    idx = get_field(record, "idx")
    if not isinstance(idx, Mapping):
        raise RecordError(f"field 'idx' should hold paragraph/question/answer indices, got {idx!r}")
    paragraph, question, answer = (get_field(idx, k) for k in ("paragraph", "question", "answer"))
    example = classification_example(record, text, BOOL_LABELS)
    # Question indices are per paragraph in some copies: group by both.
    return Example(
        input=example.input,
        target=example.target,
        label=example.label,
        group=f"{paragraph}-{question}",
        id=f"{paragraph}-{question}-{answer}",
    )


# ReCoRD --------------------------------------------------------------------------------------------------


def _read_record(path: Path) -> Iterator[tuple[str, Record]]:
    """One record per query (the Hugging Face layout) from SuperGLUE's one-passage-per-line JSONL."""
    for location, record in read_jsonl(path):
        try:
            passage = get_field(record, "passage")
            text = text_field(passage, "text")
            # Entity spans are character offsets with an inclusive end.
            entities = [text[int(e["start"]) : int(e["end"]) + 1] for e in get_field(passage, "entities")]
            for qa in get_field(record, "qas"):
                yield (
                    location,
                    {
                        "passage": text,
                        "query": text_field(qa, "query"),
                        "entities": entities,
                        "answers": [text_field(a, "text") for a in qa.get("answers", ())],
                        "idx": {"passage": get_field(record, "idx"), "query": get_field(qa, "idx")},
                    },
                )
        except (RecordError, TypeError, AttributeError, KeyError, ValueError) as e:
            raise T5LabError(f"{path}:{location}: malformed ReCoRD passage ({e})") from None


def _string_list(record: Mapping[str, Any], key: str) -> list[str]:
    values = get_field(record, key)
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        raise RecordError(f"field {key!r} should be a list of strings, got {values!r}")
    return list(values)


def _convert_record(record: Mapping[str, Any]) -> Example:
    passage = text_field(record, "passage")
    passage = re.sub(r"(\.|\?|\!|\"|\')\n@highlight\n", r"\1 ", passage)
    passage = re.sub(r"\n@highlight\n", ". ", passage)
    entities = ", ".join(sorted(set(_string_list(record, "entities"))))
    answers = tuple(sorted(set(_string_list(record, "answers"))))
    idx = get_field(record, "idx")
    if not isinstance(idx, Mapping):
        raise RecordError(f"field 'idx' should hold passage/query indices, got {idx!r}")
    return Example(
        input=f"record query: {text_field(record, 'query')} entities: {entities} passage: {passage}",
        target=answers[0] if answers else "",
        references=answers,
        id=f"{get_field(idx, 'passage')}-{get_field(idx, 'query')}",
    )


def _score_record(predictions, examples):
    if any(not e.references for e in examples):
        raise T5LabError("superglue/record: cannot score queries without answers (a test split?)")
    return squad_scorer(predictions, examples)


TASKS = (
    _glue_style("boolq", ("passage", "question"), BOOL_LABELS, ("accuracy",), "BoolQ"),
    _glue_style("cb", ("hypothesis", "premise"), CB_LABELS, ("macro_f1", "accuracy"), "CB"),
    _glue_style("copa", ("choice1", "choice2", "premise", "question"), COPA_LABELS, ("accuracy",), "COPA"),
    _glue_style("rte", ("hypothesis", "premise"), RTE_LABELS, ("accuracy",), "RTE"),
    _glue_style("wic", ("sentence1", "sentence2", "word"), BOOL_LABELS, ("accuracy",), "WiC"),
    _task(
        "wsc",
        "WSC",
        _convert_wsc,
        BOOL_LABELS,
        label_scorer(BOOL_LABELS, ("accuracy",)),
        "accuracy",
        "wsc.fixed",
    ),
    _task("multirc", "MultiRC", _convert_multirc, BOOL_LABELS, multirc_scorer, "f1a", "multirc"),
    _task("record", "ReCoRD", _convert_record, (), _score_record, "f1", "record"),
)
