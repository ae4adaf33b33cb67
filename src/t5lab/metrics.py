"""Evaluation metrics of the T5 benchmarks, in pure Python (no torch), each returning percentages (0-100).

This is a leaf module beside `config.py` rather than part of `analysis/`: task definitions in `data/` and the
evaluation code both score predictions with it, and `data` must not import sideways into `analysis`.

Classification metrics take integer class ids, where a prediction the task could not decode (a string outside
its label set) is -1 and always counts as wrong, as in T5's `f1_score_with_invalid`. The binary F1 replaces
an invalid prediction by the opposite of the gold label; Matthews correlation treats it as a class of its
own (sklearn's multi-class form, which T5 calls); the multi-class macro F1 treats it as a
class of its own, so it is a false negative of the gold class and a false positive of none (sklearn's
`fbeta_score(labels=range(n), average="macro")`, which T5 uses).
"""

from __future__ import annotations

import collections
import math
import re
import string
from collections.abc import Hashable, Sequence

from t5lab.errors import T5LabError


def _check_lengths(gold: Sequence, pred: Sequence) -> None:
    if len(gold) != len(pred):
        raise T5LabError(
            f"got {len(pred)} predictions for {len(gold)} references; expected one per reference"
        )


def accuracy(gold: Sequence[Hashable], pred: Sequence[Hashable]) -> float:
    """Share of exact matches, in percent (0 for empty inputs)."""
    _check_lengths(gold, pred)
    return 100.0 * sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold) if gold else 0.0


def _binary_counts(gold: Sequence[int], pred: Sequence[int]) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) with positive class 1; an invalid prediction becomes the wrong class."""
    _check_lengths(gold, pred)
    tp = fp = fn = tn = 0
    for g, p in zip(gold, pred, strict=True):
        if p not in (0, 1):
            p = 1 - g
        if g == 1:
            tp, fn = (tp + 1, fn) if p == 1 else (tp, fn + 1)
        else:
            fp, tn = (fp + 1, tn) if p == 1 else (fp, tn + 1)
    return tp, fp, fn, tn


def _f1(tp: int, fp: int, fn: int) -> float:
    # sklearn's zero_division default: F1 is 0 when there is no positive in either gold or prediction.
    return 100.0 * 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0


def binary_f1(gold: Sequence[int], pred: Sequence[int]) -> float:
    """F1 of class 1 (MRPC "equivalent", MultiRC "True"), in percent."""
    tp, fp, fn, _ = _binary_counts(gold, pred)
    return _f1(tp, fp, fn)


def macro_f1(gold: Sequence[int], pred: Sequence[int], num_classes: int) -> float:
    """Unweighted mean of the per-class F1 over classes 0..num_classes-1 (CB), in percent."""
    _check_lengths(gold, pred)
    scores = []
    for c in range(num_classes):
        tp = sum(g == c and p == c for g, p in zip(gold, pred, strict=True))
        fp = sum(g != c and p == c for g, p in zip(gold, pred, strict=True))
        fn = sum(g == c and p != c for g, p in zip(gold, pred, strict=True))
        scores.append(_f1(tp, fp, fn))
    return sum(scores) / num_classes


def matthews_corrcoef(gold: Sequence[int], pred: Sequence[int]) -> float:
    """Matthews correlation (CoLA), times 100 as T5 and GLUE report it; 0 if undefined.

    The multi-class form (Gorodkin 2004) that sklearn computes and T5 calls with invalid predictions as a
    class -1 of their own: for binary labels it is the usual (tp*tn - fp*fn) / sqrt(...), and a model that
    only produces invalid strings scores 0 (no correlation), not -100.
    """
    _check_lengths(gold, pred)
    n = len(gold)
    correct = sum(g == p for g, p in zip(gold, pred, strict=True))
    true_counts, pred_counts = collections.Counter(gold), collections.Counter(pred)
    covariance = correct * n - sum(pred_counts[k] * true_counts[k] for k in true_counts)
    denominator = math.sqrt(
        (n * n - sum(c * c for c in pred_counts.values())) * (n * n - sum(c * c for c in true_counts.values()))
    )
    return 100.0 * covariance / denominator if denominator else 0.0


def multirc_scores(gold: Sequence[int], pred: Sequence[int], groups: Sequence[Hashable]) -> dict[str, float]:
    """MultiRC: F1a over every answer option, and EM = share of questions whose options are all right.

    `groups[i]` names the question that answer option i belongs to.
    """
    _check_lengths(gold, pred)
    _check_lengths(gold, groups)
    all_right: dict[Hashable, bool] = {}
    for g, p, q in zip(gold, pred, groups, strict=True):
        all_right[q] = all_right.get(q, True) and g == p
    em = 100.0 * sum(all_right.values()) / len(all_right) if all_right else 0.0
    return {"f1a": binary_f1(gold, pred), "em": em}


# SQuAD v1.1: the normalisation and scores of the official evaluate-v1.1.py, rewritten.
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation and the articles a/an/the, collapse whitespace (official order)."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", s).split())


def squad_exact_match(prediction: str, reference: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(reference)


def squad_f1(prediction: str, reference: str) -> float:
    """Token-overlap F1 of the normalised strings, as a fraction in [0, 1]."""
    pred_tokens = normalize_answer(prediction).split()
    ref_tokens = normalize_answer(reference).split()
    common = collections.Counter(pred_tokens) & collections.Counter(ref_tokens)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision = overlap / len(pred_tokens)
    recall = overlap / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """Mean over questions of the best EM and F1 against any reference answer, in percent."""
    _check_lengths(references, predictions)
    if not predictions:
        return {"exact_match": 0.0, "f1": 0.0}
    em = f1 = 0.0
    for pred, refs in zip(predictions, references, strict=True):
        if not refs:
            raise T5LabError("a SQuAD question has no reference answer; expected at least one")
        em += max(squad_exact_match(pred, r) for r in refs)
        f1 += max(squad_f1(pred, r) for r in refs)
    n = len(predictions)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}


ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


def rouge_scores(
    predictions: Sequence[str], references: Sequence[Sequence[str]], use_stemmer: bool = True
) -> dict[str, float]:
    """Mean ROUGE-1/2/L F-measure (percent) from Google's `rouge-score` package, best reference per example.

    The Porter stemmer is on, as in T5's `rouge` metric. The plain mean is reported instead of the
    bootstrap median T5 uses, so that the numbers are deterministic.
    """
    from rouge_score import rouge_scorer  # lazy: pulls in nltk

    _check_lengths(references, predictions)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for pred, refs in zip(predictions, references, strict=True):
        if not refs:
            raise T5LabError("an example has no reference summary; expected at least one")
        scores = scorer.score(refs[0], pred) if len(refs) == 1 else scorer.score_multi(list(refs), pred)
        for key in ROUGE_TYPES:
            totals[key] += scores[key].fmeasure
    n = max(len(predictions), 1)
    return {key: 100.0 * total / n for key, total in totals.items()}


# STS-B: correlations of T5's regression-as-text, as scipy's pearsonr / spearmanr compute them.
def pearson_corrcoef(gold: Sequence[float], pred: Sequence[float]) -> float:
    """Pearson correlation times 100; 0 when undefined (a constant side), where scipy gives NaN."""
    _check_lengths(gold, pred)
    n = len(gold)
    if n < 2:
        return 0.0
    mean_g, mean_p = sum(gold) / n, sum(pred) / n
    cov = sum((g - mean_g) * (p - mean_p) for g, p in zip(gold, pred, strict=True))
    var_g = sum((g - mean_g) ** 2 for g in gold)
    var_p = sum((p - mean_p) ** 2 for p in pred)
    if var_g == 0 or var_p == 0:
        return 0.0
    # Clamped: rounding can push a perfect correlation a hair past 1.
    return 100.0 * max(-1.0, min(1.0, cov / math.sqrt(var_g * var_p)))


def _average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks, ties sharing the mean of the ranks they span (scipy's rankdata "average")."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in order[start : end + 1]:
            ranks[i] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman_corrcoef(gold: Sequence[float], pred: Sequence[float]) -> float:
    """Spearman rank correlation times 100: Pearson of the tie-averaged ranks; 0 when undefined."""
    _check_lengths(gold, pred)
    return pearson_corrcoef(_average_ranks(gold), _average_ranks(pred))
