"""Scorers that turn generated strings into a task's metrics, built on `t5lab.metrics`.

A classification scorer decodes each generated string back to a class index by exact match with the task's
label names (after stripping surrounding whitespace), as T5's `string_label_to_class_id` does; anything
else decodes to -1, which every metric counts as wrong.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from t5lab import metrics
from t5lab.data.tasks.base import Example, Scorer
from t5lab.errors import T5LabError


def decode_label(prediction: str, label_names: Sequence[str]) -> int:
    """Class index of a generated label string, or -1 when it is not one of `label_names`."""
    text = prediction.strip()
    return label_names.index(text) if text in label_names else -1


def gold_labels(examples: Sequence[Example]) -> list[int]:
    """The examples' class indices (`Task.score` refuses unlabelled examples before a scorer runs)."""
    labels = [e.label for e in examples if e.label is not None]
    if len(labels) != len(examples):
        raise T5LabError("cannot score unlabelled examples (a test split has no labels)")
    return labels


def label_scorer(label_names: Sequence[str], names: Sequence[str]) -> Scorer:
    """Scorer computing the named metrics ("accuracy", "f1", "macro_f1", "matthews") over decoded labels."""
    label_names = tuple(label_names)

    def score(predictions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
        pred = [decode_label(p, label_names) for p in predictions]
        gold = gold_labels(examples)
        fns = {
            "accuracy": lambda: metrics.accuracy(gold, pred),
            "f1": lambda: metrics.binary_f1(gold, pred),
            "macro_f1": lambda: metrics.macro_f1(gold, pred, len(label_names)),
            "matthews": lambda: metrics.matthews_corrcoef(gold, pred),
        }
        return {name: fns[name]() for name in names}

    return score


def multirc_scorer(predictions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
    """F1 over all answer options and exact match per question (`Example.group`)."""
    pred = [decode_label(p, ("False", "True")) for p in predictions]
    gold = gold_labels(examples)
    return metrics.multirc_scores(gold, pred, [e.group for e in examples])


def parse_score(prediction: str) -> float:
    """T5's `string_to_float`: the number a generated string spells, or -1 when it spells none.

    Unlike T5, "nan" and "inf" also give -1: Python's float() accepts them, and one such string would make
    the whole correlation NaN.
    """
    try:
        value = float(prediction)
    except ValueError:
        return -1.0
    return value if math.isfinite(value) else -1.0


def stsb_scorer(predictions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
    """Pearson and Spearman correlation of the generated scores with the (0.2-rounded) target scores."""
    if any(not e.target for e in examples):
        raise T5LabError("glue/stsb: cannot score unlabelled examples (a test split has no scores)")
    gold = [float(e.target) for e in examples]
    pred = [parse_score(p) for p in predictions]
    return {
        "pearson": metrics.pearson_corrcoef(gold, pred),
        "spearman": metrics.spearman_corrcoef(gold, pred),
    }


def squad_scorer(predictions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
    return metrics.squad_scores(predictions, [e.answers for e in examples])


def rouge_scorer(predictions: Sequence[str], examples: Sequence[Example]) -> dict[str, float]:
    return metrics.rouge_scores(predictions, [e.answers for e in examples])
