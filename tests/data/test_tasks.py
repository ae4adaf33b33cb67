"""Task definitions: real validation data in T5's formats, split handling, scoring, and malformed-row errors."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from t5lab.data.tasks import Example, generic_task, get_task, list_tasks
from t5lab.data.tasks.base import glue_input
from t5lab.data.tasks.scoring import decode_label, label_scorer
from t5lab.data.tasks.squad import pad_punctuation
from t5lab.errors import T5LabError

# task -> (evaluation split, number of examples, input prefix). MRPC has no GLUE dev split here.
EVAL = {
    "glue/cola": ("validation", 527, "cola sentence: "),
    "glue/sst2": ("validation", 872, "sst2 sentence: "),
    "glue/mrpc": ("test", 1725, "mrpc sentence1: "),
    "glue/rte": ("validation", 277, "rte sentence1: "),
    "superglue/boolq": ("validation", 3270, "boolq passage: "),
    "superglue/cb": ("validation", 56, "cb hypothesis: "),
    "superglue/copa": ("validation", 100, "copa choice1: "),
    "superglue/rte": ("validation", 277, "rte hypothesis: "),
    "superglue/wic": ("validation", 638, "wic sentence1: "),
    "superglue/wsc": ("validation", 104, "wsc text: "),
    "superglue/multirc": ("validation", 4848, "multirc question: "),
    "squad": ("validation", 10570, "question: "),
    "samsum": ("validation", 818, "summarize: "),
}


# Tasks whose data is not in shared/data; tested below on hand-made rows in the official file layouts.
HAND_MADE = {"glue/mnli", "glue/qnli", "glue/qqp", "glue/stsb", "glue/wnli", "superglue/record"}


def test_every_registered_task_is_covered():
    assert set(list_tasks()) == set(EVAL) | HAND_MADE | {"generic"}


@pytest.mark.parametrize("name", sorted(EVAL))
def test_real_validation_data_loads_and_scores(name, shared_data):
    task = get_task(name)
    split, count, prefix = EVAL[name]
    examples = task.load(split, shared_data)
    assert len(examples) == count
    assert all(e.input.startswith(prefix) and e.target.strip() for e in examples)
    if task.label_names:
        assert all(e.target == task.label_names[e.label] for e in examples)
        assert len({e.label for e in examples}) > 1
    # Gold targets score full marks on the primary metric; an answer outside the label set does not crash.
    assert task.score([e.target for e in examples], examples)[task.primary_metric] == pytest.approx(100.0)
    if task.label_names:
        assert task.score(["maybe"] * len(examples), examples)[task.primary_metric] <= 0.0


def test_exact_t5_formats(shared_data):
    rte = get_task("glue/rte").load("validation", shared_data)[0]
    assert rte.input == (
        "rte sentence1: Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44, "
        "according to the Christopher Reeve Foundation. sentence2: Christopher Reeve had an accident."
    )
    assert rte.target == "not_entailment"
    copa = get_task("superglue/copa").load("validation", shared_data)[0]
    assert copa.input == (
        "copa choice1: The toilet filled with water. choice2: Water flowed from the spout. "
        "premise: The man turned on the faucet. question: effect"
    )
    assert copa.target == "choice2"
    assert get_task("glue/cola").load("validation", shared_data)[0].target == "acceptable"
    assert get_task("superglue/boolq").load("validation", shared_data)[0].target in ("False", "True")


def test_wsc_marks_noun_and_pronoun(shared_data):
    first = get_task("superglue/wsc").load("validation", shared_data)[0]
    assert "* anyone *" in first.input and "# him #" in first.input
    assert first.target == "False"


def test_multirc_groups_options_by_question_and_strips_markup(shared_data):
    examples = get_task("superglue/multirc").load("validation", shared_data)
    assert len({e.group for e in examples}) == 953  # questions in the official dev set
    assert not any("<b>" in e.input or "<br>" in e.input for e in examples)


def test_squad_is_punctuation_padded_with_all_answers(shared_data):
    examples = get_task("squad").load("validation", shared_data)
    first = examples[0]
    assert first.input.startswith("question: Which NFL team represented the AFC at Super Bowl 50 ? context: ")
    assert first.target == "Denver Broncos" and len(first.references) == 3
    assert "Levi ' s Stadium" in first.input


def test_missing_split_names_expected_file_and_available_splits(shared_data):
    with pytest.raises(
        T5LabError, match=r"no 'train' split .*train-v1\.1\.json; available splits: validation"
    ):
        get_task("squad").load("train", shared_data)
    with pytest.raises(T5LabError, match="mrpc_dev_ids.tsv"):
        get_task("glue/mrpc").load("validation", shared_data)
    with pytest.raises(T5LabError, match="unknown split 'dev'"):
        get_task("glue/rte").load("dev", shared_data)


def test_data_dir_may_be_the_root_or_the_task_folder(shared_data):
    task = get_task("glue/rte")
    assert task.load("validation", shared_data) == task.load("validation", shared_data / "glue" / "rte")


def test_unknown_task_suggests_close_names():
    with pytest.raises(T5LabError, match="did you mean glue/rte"):
        get_task("glue/rtee")
    assert get_task("GLUE/RTE").name == "glue/rte"


def test_unlabelled_test_split_cannot_be_scored(shared_data):
    task = get_task("glue/rte")
    examples = task.load("test", shared_data)
    assert examples[0].label is None
    with pytest.raises(T5LabError, match="unlabelled"):
        task.score(["entailment"] * len(examples), examples)


def test_label_scorer_alone_refuses_unlabelled_examples():
    # A scorer called without `Task.score`'s check: a missing label is refused, not scored as a wrong answer.
    scorer = label_scorer(("no", "yes"), ("accuracy", "f1"))
    assert scorer(["yes", "no"], [Example("a", "yes", 1), Example("b", "no", 0)]) == {"accuracy": 100.0, "f1": 100.0}
    with pytest.raises(T5LabError, match="unlabelled"):
        scorer(["yes", "no"], [Example("a", "yes", 1), Example("b", "no")])


def test_score_needs_one_prediction_per_example():
    task = get_task("glue/rte")
    with pytest.raises(T5LabError, match="1 predictions for 2 examples"):
        task.score(["entailment"], [Example("a", "entailment", 0), Example("b", "entailment", 0)])


# Malformed files ---------------------------------------------------------------------------------------------


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_row_with_wrong_column_count(tmp_path):
    _write(
        tmp_path / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\ta\tentailment\n"
    )
    with pytest.raises(T5LabError, match=r"dev\.tsv:3: expected 4 tab-separated columns"):
        get_task("glue/rte").load("validation", tmp_path)


def test_tsv_label_the_task_does_not_have(tmp_path):
    _write(tmp_path / "dev.tsv", "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(
        T5LabError, match=r"dev\.tsv:2: label 'maybe' is not one of entailment, not_entailment"
    ):
        get_task("glue/rte").load("validation", tmp_path)


def test_jsonl_bad_json_and_missing_field(tmp_path):
    good = json.dumps({"premise": "p", "hypothesis": "h", "label": "neutral", "idx": 0})
    _write(tmp_path / "val.jsonl", good + "\n{not json\n")
    with pytest.raises(T5LabError, match=r"val\.jsonl:2: not valid JSON"):
        get_task("superglue/cb").load("validation", tmp_path)
    _write(tmp_path / "val.jsonl", good + "\n" + json.dumps({"hypothesis": "h", "label": "neutral"}) + "\n")
    with pytest.raises(T5LabError, match=r"val\.jsonl:2: missing field 'premise'"):
        get_task("superglue/cb").load("validation", tmp_path)


def test_csv_error_names_the_line_a_multiline_row_starts_on(tmp_path):
    _write(
        tmp_path / "samsum-validation.csv", 'id,dialogue,summary\n1,"A: hi\nB: hello",greeting\n2,"A: bye"\n'
    )
    with pytest.raises(T5LabError, match=r"samsum-validation\.csv:4: expected 3 comma-separated columns"):
        get_task("samsum").load("validation", tmp_path)


def test_multirc_malformed_paragraph(tmp_path):
    _write(tmp_path / "val.jsonl", json.dumps({"idx": 0, "passage": {"text": "t"}}) + "\n")
    with pytest.raises(T5LabError, match=r"val\.jsonl:1: malformed MultiRC paragraph .*'questions'"):
        get_task("superglue/multirc").load("validation", tmp_path)


# Generic tasks -----------------------------------------------------------------------------------------------


def test_generic_jsonl_with_several_references(tmp_path):
    rows = [
        {"question": "2+2?", "answer": ["four", "4"]},
        {"question": "capital of France?", "answer": "Paris"},
    ]
    _write(tmp_path / "dev.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    task = generic_task("qa", input_column="question", target_column="answer", metric="squad", prefix="qa:")
    examples = task.load("validation", tmp_path)
    assert (
        examples[0].input == "qa: 2+2?"
        and examples[0].target == "four"
        and examples[0].answers == ("four", "4")
    )
    assert task.score(["4", "the paris"], examples) == {"exact_match": 100.0, "f1": 100.0}


def test_generic_csv_accuracy_and_f1(tmp_path):
    _write(tmp_path / "train.csv", "input,target\ngood film,positive\nbad film,negative\nfine,positive\n")
    examples = generic_task(metric="accuracy").load("train", tmp_path)
    assert generic_task(metric="accuracy").score(["positive", "negative", "nope"], examples) == pytest.approx(
        {"accuracy": 100 * 2 / 3}
    )
    # classes negative, positive: negative tp1 -> 1; positive tp1 fn1 -> 2/3
    assert generic_task(metric="f1").score(["positive", "negative", "nope"], examples)["f1"] == pytest.approx(
        100 * (1 + 2 / 3) / 2
    )


def test_generic_errors(tmp_path):
    with pytest.raises(T5LabError, match="unknown metric 'bleu'"):
        generic_task(metric="bleu")
    _write(tmp_path / "test.tsv", "text\tlabel\nhello\tworld\n")
    with pytest.raises(T5LabError, match=r"test\.tsv:2: missing field 'input'"):
        generic_task().load("test", tmp_path)


# Properties of the text transforms ---------------------------------------------------------------------------


@given(st.text())
def test_pad_punctuation_is_idempotent(text):
    once = pad_punctuation(text)
    assert pad_punctuation(once) == once
    assert "  " not in once


@given(st.sampled_from(["entailment", "not_entailment"]), st.sampled_from(["", " ", "\n"]))
def test_decode_label_round_trip(label, space):
    labels = ("entailment", "not_entailment")
    assert decode_label(space + label + space, labels) == labels.index(label)
    assert decode_label(label.upper(), labels) == -1


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.text(max_size=10), min_size=3))
def test_glue_input_lists_every_feature_in_order(record):
    text = glue_input("task", record, ("c", "a", "b"))
    assert text == f"task c: {record['c']} a: {record['a']} b: {record['b']}"


# Optional Hugging Face source ----------------------------------------------------------------------------


def test_hub_rows_use_the_same_conversion(monkeypatch):
    calls = []

    def load_dataset(path, config, split):
        calls.append((path, config, split))
        return [{"premise": "p", "hypothesis": "h", "label": 2, "idx": 7}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    (example,) = get_task("superglue/cb").load("validation")
    assert calls == [("aps/super_glue", "cb", "validation")]
    assert example == Example("cb hypothesis: h premise: p", "neutral", label=2, id="7")


def test_hub_path_without_datasets_asks_for_a_folder(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(T5LabError, match="give a data folder"):
        get_task("glue/rte").load("validation")


def test_tasks_and_metrics_import_no_torch():
    code = "import sys, t5lab.data.tasks, t5lab.data.mixture, t5lab.metrics; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# The GLUE/SuperGLUE tasks without shared data: small hand-made rows in the official file layouts ------------

MNLI_HEADER = (
    "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\t"
    "sentence2_parse\tsentence1\tsentence2"
)


def _mnli_row(i: int, premise: str, hypothesis: str, labels: tuple[str, ...]) -> str:
    return "\t".join(
        [
            str(i),
            "63735",
            "63735n",
            "slate",
            "( ( x ) )",
            "( y )",
            "(ROOT x)",
            "(ROOT y)",
            premise,
            hypothesis,
            *labels,
        ]
    )


@pytest.fixture
def glue_files(tmp_path):
    dev = "\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
    _write(
        tmp_path / "glue/mnli/train.tsv",
        MNLI_HEADER
        + "\tlabel1\tgold_label\n"
        + _mnli_row(
            0,
            "Conceptually cream skimming has two basic dimensions.",
            "Product and geography are what make cream skimming work. ",
            ("neutral", "neutral"),
        )
        + "\n",
    )
    _write(
        tmp_path / "glue/mnli/dev_matched.tsv",
        MNLI_HEADER
        + dev
        + _mnli_row(
            0,
            "The new rights are nice enough",
            "Everyone really likes the newest benefits ",
            ("neutral", "entailment", "neutral", "neutral", "neutral", "neutral"),
        )
        + "\n"
        + _mnli_row(1, "This site includes a list.", "The site has a list.", ("entailment",) * 6)
        + "\n",
    )
    _write(
        tmp_path / "glue/mnli/dev_mismatched.tsv",
        MNLI_HEADER
        + dev
        + _mnli_row(0, "Your gift is appreciated.", "Your gift is hated.", ("contradiction",) * 6)
        + "\n",
    )
    _write(tmp_path / "glue/mnli/test_matched.tsv", MNLI_HEADER + "\n" + _mnli_row(0, "p", "h", ()) + "\n")
    _write(
        tmp_path / "glue/qnli/dev.tsv",
        "index\tquestion\tsentence\tlabel\n"
        "0\tWhat came into force after the new constitution was herald?\tAs of that day, the new constitution "
        "heralding the Second Republic came into force.\tentailment\n"
        "1\tWhat is the first major city in the stream of the Rhine?\tThe most important tributaries are the "
        "Aare.\tnot_entailment\n",
    )
    _write(
        tmp_path / "glue/qqp/dev.tsv",
        "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
        "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0\n"
        "263843\t69383\t380476\tI want to pursue PhD in Computer Science?\tI handle social media for a "
        "non-profit.\t0\n"
        "172974\t266948\t175089\tIs there a reason why we should travel alone?\tWhat are some reasons to "
        "travel alone?\t1\n"
        "15329\t29298\t29299\tHow do I learn Python?\tWhat is the best way to learn Python?\t1\n"
        "9\t18\t19\tWhy is salt water taste salty?\tWhy is salt water salty?\t1\n",
    )
    _write(tmp_path / "glue/qqp/test.tsv", "id\tquestion1\tquestion2\n0\tWhat?\tWhy?\n")
    _write(
        tmp_path / "glue/stsb/dev.tsv",
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
        "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\t"
        "A man wearing a hard hat is dancing.\t5.000\n"
        "1\tmain-captions\tMSRvid\t2012test\t0002\tnone\tnone\tA young child is riding a horse.\t"
        "A child is riding a horse.\t4.750\n"
        "2\tmain-captions\tMSRvid\t2012test\t0003\tnone\tnone\tA man is feeding a mouse to a snake.\t"
        "The man is feeding a mouse to the snake.\t5.000\n"
        "3\tmain-captions\tMSRvid\t2012test\t0007\tnone\tnone\tA woman is playing the guitar.\t"
        "A man is playing guitar.\t2.400\n"
        "4\tmain-captions\tMSRvid\t2012test\t0008\tnone\tnone\tA woman is playing the flute.\t"
        "A man is playing a flute.\t2.750\n"
        "5\tmain-captions\tMSRvid\t2012test\t0010\tnone\tnone\tA woman is slicing an onion.\t"
        "A man is riding a bike.\t0.100\n",
    )
    _write(
        tmp_path / "glue/wnli/dev.tsv",
        "index\tsentence1\tsentence2\tlabel\n"
        "0\tThe drain is clogged with hair. It has to be cleaned.\tThe hair has to be cleaned.\t0\n"
        "1\tJane knocked on Susan's door but she did not answer.\tSusan did not answer.\t1\n",
    )
    return tmp_path


def test_new_glue_tasks_in_t5_formats(glue_files):
    mnli = get_task("glue/mnli").load("validation", glue_files)
    assert mnli[0].input == (
        "mnli hypothesis: Everyone really likes the newest benefits  premise: The new rights are nice enough"
    )
    assert [e.target for e in mnli] == ["neutral", "entailment"]  # gold_label, not label1
    assert get_task("glue/mnli").load("validation_matched", glue_files) == mnli
    (mismatched,) = get_task("glue/mnli").load("validation_mismatched", glue_files)
    assert mismatched.target == "contradiction" and mismatched.label == 2
    assert get_task("glue/mnli").load("train", glue_files)[0].target == "neutral"
    assert get_task("glue/mnli").load("test", glue_files)[0].label is None
    qnli = get_task("glue/qnli").load("validation", glue_files)
    assert qnli[0].input.startswith(
        "qnli question: What came into force after the new constitution was herald? sentence: As of that day,"
    )
    assert [e.target for e in qnli] == ["entailment", "not_entailment"]
    qqp = get_task("glue/qqp").load("validation", glue_files)
    assert qqp[0].input == (
        "qqp question1: Why are African-Americans so beautiful? question2: Why are hispanics so beautiful?"
    )
    assert [e.target for e in qqp] == ["not_duplicate"] * 2 + ["duplicate"] * 3 and qqp[0].id == "201359"
    assert get_task("glue/qqp").load("test", glue_files)[0].target == ""
    wnli = get_task("glue/wnli").load("validation", glue_files)
    assert wnli[0].input == (
        "wnli sentence1: The drain is clogged with hair. It has to be cleaned. "
        "sentence2: The hair has to be cleaned."
    )
    assert [e.target for e in wnli] == ["not_entailment", "entailment"]  # GLUE's 1 is entailment


def test_stsb_targets_are_t5s_rounded_scores(glue_files):
    task = get_task("glue/stsb")
    examples = task.load("validation", glue_files)
    assert examples[0].input == (
        "stsb sentence1: A man with a hard hat is dancing. sentence2: A man wearing a hard hat is dancing."
    )
    # round(score * 5) / 5 with halves to even (tf.round): 4.75 -> 23.75 -> 24 -> 4.8; 2.4 stays; 2.75 -> 2.8;
    # 0.1 -> 0.5 -> 0 -> 0.0.
    assert [e.target for e in examples] == ["5.0", "4.8", "5.0", "2.4", "2.8", "0.0"]
    assert task.score([e.target for e in examples], examples) == {"pearson": 100.0, "spearman": 100.0}


def test_stsb_unparseable_predictions_score_minus_one(glue_files):
    task = get_task("glue/stsb")
    examples = task.load("validation", glue_files)[:3]  # gold 5.0, 4.8, 5.0
    # "five" and "nan" parse to -1 (T5's string_to_float default): predictions (-1, 4.8, -1).
    # Pearson: gold mean 4.9333, deviations (.0667, -.1333, .0667); pred mean 0.9333, (-1.9333, 3.8667, -1.9333):
    # cov = -0.7733, var_g = 0.02667, var_p = 22.4267 -> -1. Spearman: gold ranks (2.5, 1, 2.5),
    # pred ranks (1.5, 3, 1.5) -> -1.
    scores = task.score(["five", " 4.8 ", "nan"], examples)
    assert scores == pytest.approx({"pearson": -100.0, "spearman": -100.0})
    with pytest.raises(T5LabError, match=r"dev\.tsv:2: score 'high' should be a number from 0 to 5"):
        _write(glue_files / "glue/stsb/dev.tsv", "index\tsentence1\tsentence2\tscore\n0\ta\tb\thigh\n")
        task.load("validation", glue_files)


def test_qqp_scores_f1_and_accuracy(glue_files):
    task = get_task("glue/qqp")
    examples = task.load("validation", glue_files)  # gold 0 0 1 1 1
    # pred: dup, not_dup, dup, not_dup, invalid -> tp 1, fp 1, fn 2 (the invalid one counts as wrong);
    # F1 = 2*1 / (2*1 + 1 + 2) = 0.4; accuracy 2/5.
    scores = task.score(["duplicate", "not_duplicate", "duplicate", "not_duplicate", "yes"], examples)
    assert scores == pytest.approx({"f1": 40.0, "accuracy": 40.0})
    assert task.primary_metric == "f1"


RECORD_PASSAGE = {
    "idx": 0,
    "source": "Daily mail",
    "passage": {
        "text": "Tracy Morgan is recovering.\n@highlight\nHe was hurt in New Jersey\n@highlight\nWalmart said "
        "sorry",
        "entities": [
            {"start": 0, "end": 11},
            {"start": 54, "end": 63},
            {"start": 76, "end": 82},
            {"start": 0, "end": 4},
            {"start": 0, "end": 11},
        ],
    },
    "qas": [
        {
            "query": "@placeholder is in hospital.",
            "idx": 0,
            "answers": [
                {"start": 0, "end": 11, "text": "Tracy Morgan"},
                {"start": 0, "end": 4, "text": "Tracy"},
                {"start": 0, "end": 11, "text": "Tracy Morgan"},
            ],
        },
        {
            "query": "The crash happened in @placeholder.",
            "idx": 1,
            "answers": [{"start": 54, "end": 63, "text": "New Jersey"}],
        },
    ],
}


def test_record_in_t5_format_one_example_per_answer_for_training(tmp_path):
    for name in ("train.jsonl", "val.jsonl"):
        _write(tmp_path / name, json.dumps(RECORD_PASSAGE) + "\n")
    task = get_task("superglue/record")
    validation = task.load("validation", tmp_path)
    assert validation[0].input == (
        "record query: @placeholder is in hospital. entities: New Jersey, Tracy, Tracy Morgan, Walmart "
        "passage: Tracy Morgan is recovering. He was hurt in New Jersey. Walmart said sorry"
    )
    assert [(e.target, e.references, e.id) for e in validation] == [
        ("Tracy", ("Tracy", "Tracy Morgan"), "0-0"),
        ("New Jersey", ("New Jersey",), "0-1"),
    ]
    train = task.load("train", tmp_path)
    assert [e.target for e in train] == ["Tracy", "Tracy Morgan", "New Jersey"]
    # Max over answers with SQuAD's normalisation: "the Tracy Morgan" matches; "Jersey" has F1 2/3.
    assert task.score(["the Tracy Morgan", "Jersey"], validation) == pytest.approx(
        {"exact_match": 50.0, "f1": 100 * (1 + 2 / 3) / 2}
    )


def test_record_malformed_passage_and_unanswered_queries(tmp_path):
    _write(tmp_path / "val.jsonl", json.dumps({"idx": 0, "passage": {"text": "t", "entities": []}}) + "\n")
    with pytest.raises(T5LabError, match=r"val\.jsonl:1: malformed ReCoRD passage .*'qas'"):
        get_task("superglue/record").load("validation", tmp_path)
    unanswered = dict(RECORD_PASSAGE, qas=[{"query": "@placeholder?", "idx": 0}])
    _write(tmp_path / "test.jsonl", json.dumps(unanswered) + "\n")
    examples = get_task("superglue/record").load("test", tmp_path)
    assert examples[0].target == ""
    with pytest.raises(T5LabError, match="without answers"):
        get_task("superglue/record").score(["x"], examples)


def test_hub_split_names_and_per_answer_examples(monkeypatch):
    calls = []
    rows = {
        "mnli": [{"premise": "p", "hypothesis": "h", "label": 1, "idx": 3}],
        "stsb": [
            {"sentence1": "a", "sentence2": "b", "label": 3.8, "idx": 0},
            {"sentence1": "a", "sentence2": "b", "label": -1.0, "idx": 1},
        ],
        "record": [
            {
                "passage": "x",
                "query": "@placeholder y",
                "entities": ["B", "A"],
                "answers": ["B", "A"],
                "idx": {"passage": 0, "query": 0},
            }
        ],
    }

    def load_dataset(path, config, split):
        calls.append((path, config, split))
        return rows[config]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert get_task("glue/mnli").load("validation")[0] == Example(
        "mnli hypothesis: h premise: p", "neutral", 1, id="3"
    )
    assert [e.target for e in get_task("glue/stsb").load("test")] == ["3.8", ""]
    assert [e.target for e in get_task("superglue/record").load("train")] == ["A", "B"]
    assert calls == [
        ("nyu-mll/glue", "mnli", "validation_matched"),
        ("nyu-mll/glue", "stsb", "test"),
        ("aps/super_glue", "record", "train"),
    ]
