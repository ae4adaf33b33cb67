"""Metrics against hand-computed values, the official SQuAD normalisation, and rouge-score itself."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from t5lab import metrics
from t5lab.errors import T5LabError


def test_accuracy_and_length_mismatch():
    assert metrics.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 50.0
    with pytest.raises(T5LabError, match="3 predictions for 2 references"):
        metrics.accuracy([1, 0], [1, 0, 1])


def test_matthews_hand_computed():
    # tp 3, fn 1, fp 1, tn 3: (3*3 - 1*1) / sqrt(4*4*4*4) = 0.5
    gold = [1, 1, 1, 0, 0, 0, 1, 0]
    pred = [1, 0, 1, 0, 1, 0, 1, 0]
    assert metrics.matthews_corrcoef(gold, pred) == pytest.approx(50.0)
    assert metrics.matthews_corrcoef(gold, gold) == pytest.approx(100.0)
    # A constant prediction leaves the correlation undefined: 0, as sklearn reports it.
    assert metrics.matthews_corrcoef(gold, [1] * len(gold)) == 0.0


def test_invalid_predictions_count_as_wrong():
    # -1 (a string outside the label set) is a class of its own for Matthews (sklearn's multi-class form):
    # only invalid strings means no correlation, not anti-correlation.
    assert metrics.matthews_corrcoef([1, 0], [-1, -1]) == 0.0
    # gold (1,1,0,0), pred (1,-1,0,0): n 4, correct 3, t = {1:2, 0:2}, p = {1:1, -1:1, 0:2}
    # (3*4 - (1*2 + 2*2)) / sqrt((16 - 6) * (16 - 8)) = 6 / sqrt(80)
    assert metrics.matthews_corrcoef([1, 1, 0, 0], [1, -1, 0, 0]) == pytest.approx(100 * 6 / 80**0.5)
    assert metrics.binary_f1([1, 1], [-1, 1]) == pytest.approx(100 * 2 / 3)
    assert metrics.accuracy([0, 1], [-1, 1]) == 50.0


def test_binary_and_macro_f1_hand_computed():
    # tp 2, fp 1, fn 1 -> 2*2 / (2*2 + 1 + 1)
    assert metrics.binary_f1([1, 1, 0, 0, 1], [1, 0, 1, 0, 1]) == pytest.approx(100 * 4 / 6)
    # per class: 0 -> tp1 fn1 = 2/3; 1 -> tp2 fp1 = 4/5; 2 -> tp1 fn1 (the invalid -1) = 2/3
    gold = [0, 0, 1, 2, 2, 1]
    pred = [0, 1, 1, 2, -1, 1]
    assert metrics.macro_f1(gold, pred, 3) == pytest.approx(100 * (2 / 3 + 4 / 5 + 2 / 3) / 3)


def test_classification_metrics_match_sklearn():
    sk = pytest.importorskip("sklearn.metrics")
    gold = [0, 1, 2, 2, 1, 0, 1, 2, 0, 0]
    pred = [0, 2, 2, 1, 1, 0, 1, 2, 1, 0]
    assert metrics.macro_f1(gold, pred, 3) == pytest.approx(100 * sk.f1_score(gold, pred, average="macro"))
    bgold, bpred = [g % 2 for g in gold], [p % 2 for p in pred]
    assert metrics.matthews_corrcoef(bgold, bpred) == pytest.approx(100 * sk.matthews_corrcoef(bgold, bpred))
    with_invalid = [-1 if i % 4 == 0 else p for i, p in enumerate(bpred)]
    assert metrics.matthews_corrcoef(bgold, with_invalid) == pytest.approx(
        100 * sk.matthews_corrcoef(bgold, with_invalid)
    )
    assert metrics.binary_f1(bgold, bpred) == pytest.approx(100 * sk.f1_score(bgold, bpred))


def test_multirc_f1a_and_question_exact_match():
    # Question q1: 3 options all right; q2: 2 options, one wrong -> EM 1/2.
    # Over all options: tp 3, fp 1, fn 0 -> F1a 6/7.
    gold = [1, 0, 1, 0, 1]
    pred = [1, 0, 1, 1, 1]
    groups = ["q1", "q1", "q1", "q2", "q2"]
    scores = metrics.multirc_scores(gold, pred, groups)
    assert scores["em"] == pytest.approx(50.0)
    assert scores["f1a"] == pytest.approx(100 * 6 / 7)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("The Denver Broncos", "denver broncos"),
        ("  Denver \t Broncos\n", "denver broncos"),
        ("an apple, a pear.", "apple pear"),
        ("theatre thence", "theatre thence"),  # articles only as whole words
        ("Denver-Broncos", "denverbroncos"),  # punctuation is deleted, not replaced by a space
        ("U . S .", "u s"),
        ("Levi's", "levis"),
    ],
)
def test_squad_normalization(text, normalized):
    assert metrics.normalize_answer(text) == normalized


def test_squad_scores_hand_computed():
    # F1 of "Denver Broncos team" vs "the Denver Broncos": P 2/3, R 1 -> 0.8.
    assert metrics.squad_f1("Denver Broncos team", "the Denver Broncos") == pytest.approx(0.8)
    assert metrics.squad_exact_match("the  denver broncos!", "Denver Broncos")
    scores = metrics.squad_scores(
        ["Denver Broncos team", "broncos", "Carolina"],
        [["the Denver Broncos"], ["Carolina", "Denver Broncos"], ["Carolina Panthers", "Carolina"]],
    )
    # EM: 0, 0, 1 (best of two answers); F1: 0.8, max(0, 2/3), 1.
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (0.8 + 2 / 3 + 1) / 3)


def test_rouge_equals_rouge_score():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    preds = ["Amanda baked cookies and will bring Jerry some.", "Olivia and Olivier are voting for liberals."]
    refs = [
        ["Amanda baked cookies and will bring Jerry some tomorrow."],
        ["Olivia and Olivier vote liberal."],
    ]
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
    expected = {
        key: 100 * sum(scorer.score(r[0], p)[key].fmeasure for p, r in zip(preds, refs, strict=True)) / 2
        for key in ("rouge1", "rouge2", "rougeL")
    }
    assert metrics.rouge_scores(preds, refs) == pytest.approx(expected)
    # Several references: the best one counts.
    multi = metrics.rouge_scores([preds[1]], [["something else entirely", refs[1][0]]])
    assert multi["rouge1"] == pytest.approx(100 * scorer.score(refs[1][0], preds[1])["rouge1"].fmeasure)


@given(st.lists(st.integers(0, 1), min_size=1, max_size=30))
def test_perfect_predictions_score_full_marks(labels):
    assert metrics.accuracy(labels, labels) == 100.0
    if 1 in labels:
        assert metrics.binary_f1(labels, labels) == pytest.approx(100.0)
    if 0 in labels and 1 in labels:
        assert metrics.matthews_corrcoef(labels, labels) == pytest.approx(100.0)


@given(st.text(max_size=40), st.text(max_size=40))
def test_squad_f1_is_symmetric_and_bounded(a, b):
    assert metrics.squad_f1(a, b) == pytest.approx(metrics.squad_f1(b, a))
    assert 0.0 <= metrics.squad_f1(a, b) <= 1.0


def test_pearson_and_spearman_match_scipys_documented_values():
    # scipy.stats docs: pearsonr([1, 2, 3, 4, 5], [10, 9, 2.5, 6, 4]) = -0.7426106572325057 and
    # spearmanr([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) = 0.8207826816681233 (ties averaged: ranks 1, 2, 3.5, 5, 3.5).
    assert metrics.pearson_corrcoef([1, 2, 3, 4, 5], [10, 9, 2.5, 6, 4]) == pytest.approx(-74.26106572325057)
    assert metrics.spearman_corrcoef([1, 2, 3, 4, 5], [5, 6, 7, 8, 7]) == pytest.approx(82.07826816681233)
    # Hand: deviations (-1, 0, 1) and (-1, 1, 0): covariance 1, variances 2 and 2 -> 1 / 2.
    assert metrics.pearson_corrcoef([1, 2, 3], [1, 3, 2]) == pytest.approx(50.0)
    # Undefined (a constant side): 0, where scipy gives NaN.
    assert metrics.pearson_corrcoef([1, 2, 3], [2, 2, 2]) == 0.0
    assert metrics.spearman_corrcoef([1], [1]) == 0.0


def test_pearson_and_spearman_match_scipy():
    stats = pytest.importorskip("scipy.stats")
    gold = [5.0, 4.8, 0.0, 2.4, 2.8, 3.6, 3.6, 1.2]
    pred = [4.6, 5.0, -1.0, 2.4, 3.0, 3.0, 4.2, 0.8]
    assert metrics.pearson_corrcoef(gold, pred) == pytest.approx(100 * stats.pearsonr(gold, pred)[0])
    assert metrics.spearman_corrcoef(gold, pred) == pytest.approx(100 * stats.spearmanr(gold, pred)[0])


@given(st.lists(st.integers(-1000, 1000), min_size=2, max_size=20))
def test_spearman_is_invariant_under_monotone_maps(values):
    mapped = [v**3 + 2 * v for v in values]  # strictly increasing
    assert metrics.spearman_corrcoef(values, mapped) == pytest.approx(
        metrics.spearman_corrcoef(values, values), abs=1e-9
    )
