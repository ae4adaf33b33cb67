"""Tokenizer: T5's golden ids, parity with transformers' T5Tokenizer on real text, training, errors."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from shared_test_data import shared_data_dir

from t5lab.data.tokenizer import Tokenizer
from t5lab.errors import T5LabError

GOLDEN_TEXT = "The <extra_id_0> walks in <extra_id_1> park"
GOLDEN_IDS = [37, 32099, 10681, 16, 32098, 2447, 1]


@pytest.fixture
def t5(spiece_model: Path) -> Tokenizer:
    return Tokenizer.from_file(spiece_model)


@pytest.fixture(scope="module")
def t5_once() -> Tokenizer:
    """For hypothesis, which calls a test many times and refuses function-scoped fixtures."""
    path = shared_data_dir() / "t5_spiece" / "spiece.model"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return Tokenizer.from_file(path)


@pytest.fixture
def hf_t5(spiece_model: Path):
    transformers = pytest.importorskip("transformers")
    # Loading the folder (not `T5Tokenizer(vocab_file=...)`, which in 5.x yields ~104 tokens) adds the
    # default 100 extra ids: len 32100, <extra_id_0> = 32099.
    tok = transformers.T5Tokenizer.from_pretrained(spiece_model.parent)
    assert len(tok) == 32100 and tok.convert_tokens_to_ids("<extra_id_0>") == 32099
    return tok


def real_texts(data: Path) -> list[str]:
    """A few hundred real lines and documents, kept raw: leading spaces, newlines, unicode, `<unk>`."""
    wiki = data.joinpath("wikitext2_v1_tokenized", "valid.txt").read_text(encoding="utf-8").splitlines(True)
    shakespeare = data.joinpath("tinyshakespeare", "input.txt").read_text(encoding="utf-8").splitlines(True)
    with next(data.joinpath("c4_en_sample").glob("*.jsonl")).open(encoding="utf-8") as f:
        c4 = [json.loads(line)["text"] for line in itertools.islice(f, 60)]
    squad = json.loads(data.joinpath("squad_v1.1", "dev-v1.1.json").read_text(encoding="utf-8"))
    contexts = [p["context"] for article in squad["data"][:12] for p in article["paragraphs"][:5]]
    texts = wiki[:120] + shakespeare[:100] + ["".join(shakespeare[200:260])] + c4 + contexts
    # Sentinels written into real text, as span corruption's inputs and targets are.
    rng = random.Random(0)
    for i, text in enumerate(texts[100:160]):
        words = text.split(" ")
        for j in sorted(rng.sample(range(len(words)), min(3, len(words)))):
            words[j] = f"<extra_id_{(i + j) % 100}>"
        texts.append(" ".join(words))
    texts += [
        "",
        " ",
        "\n\n",
        "a  b\t\tc\r\nd",
        "naïve café ﬁ ½ 日本語 😀 Ⅻ",
        "x\x85y",
        "<extra_id_99><extra_id_0>",
    ]
    texts += ["<extra_id_100> <extra_id_05> <extra_id_7 <s> </s> <pad>x<unk>", " leading and trailing  "]
    return texts


def test_golden_ids_and_sentinels(t5: Tokenizer) -> None:
    assert t5.encode(GOLDEN_TEXT) == GOLDEN_IDS
    assert t5.encode("The cute dog walks in the park", add_eos=False) == [37, 5295, 1782, 10681, 16, 8, 2447]
    assert (t5.vocab_size, t5.num_sentinels, t5.pad_id, t5.eos_id, t5.unk_id) == (32100, 100, 0, 1, 2)
    assert [t5.sentinel_id(i) for i in (0, 1, 99)] == [32099, 32098, 32000]
    assert [t5.is_sentinel(i) for i in (31999, 32000, 32099, 32100)] == [False, True, True, False]
    with pytest.raises(T5LabError, match="sentinel index 100"):
        t5.sentinel_id(100)
    assert t5.decode(GOLDEN_IDS) == "The walks in park"
    assert t5.decode(GOLDEN_IDS, skip_special_tokens=False) == "The<extra_id_0> walks in<extra_id_1> park</s>"


def test_encode_and_decode_match_transformers_on_real_text(t5: Tokenizer, hf_t5, shared_data: Path) -> None:
    texts = real_texts(shared_data)
    assert len(texts) > 300
    ours, theirs = t5.encode_batch(texts), hf_t5(texts).input_ids
    for text, a, b in zip(texts, ours, theirs, strict=True):
        assert a == b, text
    assert ours == [t5.encode(text) for text in texts]
    assert t5.encode_batch(texts, add_eos=False) == [ids[:-1] for ids in ours]
    for skip in (True, False):
        assert t5.decode_batch(ours, skip) == hf_t5.batch_decode(theirs, skip_special_tokens=skip)


def test_decode_matches_transformers_on_random_ids(t5: Tokenizer, hf_t5) -> None:
    rng = random.Random(1)
    for _ in range(50):
        ids = [rng.choice([0, 1, 2, 3, rng.randrange(32100)]) for _ in range(rng.randrange(12))]
        for skip in (True, False):
            assert t5.decode(ids, skip) == hf_t5.decode(ids, skip_special_tokens=skip), ids


def test_decode_drops_ids_outside_the_vocabulary(t5: Tokenizer, hf_t5) -> None:
    # The embedding of a T5 checkpoint has 32128 rows, so a model can emit 32100..32127; labels hold -100.
    ids = [5, 32100, 32127, -100, 1]
    assert t5.decode(ids, skip_special_tokens=False) == hf_t5.decode([5, 32100, 32127, 1]) == ".</s>"
    assert t5.decode(ids) == "."


@settings(max_examples=60, deadline=None)
@given(words=st.lists(st.from_regex(r"[a-zA-Z0-9]{1,8}", fullmatch=True), max_size=8), n=st.integers(0, 99))
def test_round_trip_and_sentinel_split(t5_once: Tokenizer, words: list[str], n: int) -> None:
    t5 = t5_once
    text = " ".join(words)
    ids = t5.encode(text)
    assert ids[-1] == t5.eos_id and all(0 <= i < t5.vocab_size for i in ids)
    assert t5.decode(ids) == text  # ASCII words with single spaces survive SentencePiece's normalisation
    # A sentinel splits the text: each side is encoded on its own, whatever spaces surround it.
    joined = t5.encode(f"{text}  <extra_id_{n}>{text}", add_eos=False)
    assert joined == ids[:-1] + [t5.sentinel_id(n)] + ids[:-1]


def test_save_loads_in_transformers_with_the_same_ids(
    t5: Tokenizer, tmp_path: Path, shared_data: Path
) -> None:
    transformers = pytest.importorskip("transformers")
    path = t5.save(tmp_path / "tok")
    assert path == tmp_path / "tok" / "spiece.model" and path.read_bytes() == t5._proto
    assert sorted(p.name for p in path.parent.iterdir()) == [
        "special_tokens_map.json",
        "spiece.model",
        "tokenizer_config.json",
    ]
    texts = real_texts(shared_data)[::5]
    for cls in (transformers.T5Tokenizer, transformers.AutoTokenizer):
        hf = cls.from_pretrained(path.parent)
        assert len(hf) == t5.vocab_size
        assert hf(texts).input_ids == t5.encode_batch(texts)
    assert Tokenizer.from_file(path.parent).encode(GOLDEN_TEXT) == GOLDEN_IDS


def test_bad_model_files_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(T5LabError, match="nope.model"):
        Tokenizer.from_file(tmp_path / "nope.model")
    with pytest.raises(T5LabError, match=str(tmp_path / "spiece.model")):
        Tokenizer.from_file(tmp_path)  # a folder without spiece.model
    corrupt = tmp_path / "corrupt.model"
    corrupt.write_bytes(b"\x00not a sentencepiece model")
    with pytest.raises(T5LabError, match="corrupt.model: not a valid SentencePiece model"):
        Tokenizer.from_file(corrupt)


@pytest.fixture
def corpus(shared_data: Path) -> list[str]:
    return (
        shared_data.joinpath("tinyshakespeare", "input.txt").read_text(encoding="utf-8").splitlines()[:4000]
    )


def test_train_is_deterministic_and_round_trips(corpus: list[str], tmp_path: Path) -> None:
    file = tmp_path / "corpus.txt"
    file.write_text("\n".join(corpus) + "\n", encoding="utf-8")
    a = Tokenizer.train(corpus, 400, tmp_path / "a", num_sentinels=7, seed=3)
    b = Tokenizer.train([file], 400, tmp_path / "b", num_sentinels=7, seed=3)  # same lines from a file
    assert (tmp_path / "a" / "spiece.model").read_bytes() == (tmp_path / "b" / "spiece.model").read_bytes()
    assert (a.vocab_size, a.sentinel_id(0), a.sentinel_id(6)) == (407, 406, 400)
    text = "First Citizen: <extra_id_6> speak, <extra_id_0> speak."
    ids = a.encode(text)
    assert ids[-1] == 1 and 406 in ids and 400 in ids and max(i for i in ids if i < 400) > 3
    assert b.encode(text) == ids
    loaded = Tokenizer.from_file(tmp_path / "a", num_sentinels=7)
    assert loaded.encode(text) == ids and loaded.decode(ids, False) == a.decode(ids, False)
    assert a.decode(ids) == "First Citizen: speak, speak."
    transformers = pytest.importorskip("transformers")
    hf = transformers.T5Tokenizer.from_pretrained(tmp_path / "a")
    assert len(hf) == 407 and hf(corpus[:200]).input_ids == a.encode_batch(corpus[:200])


def test_train_rejects_bad_input(corpus: list[str], tmp_path: Path) -> None:
    with pytest.raises(T5LabError, match="missing.txt"):
        Tokenizer.train([tmp_path / "missing.txt"], 100, tmp_path / "out")
    for empty in ([], ["", "  \n\n"]):
        with pytest.raises(T5LabError, match="no non-blank line"):
            Tokenizer.train(empty, 100, tmp_path / "out")
    with pytest.raises(T5LabError, match="vocab_size=50000"):
        Tokenizer.train(corpus[:200], 50_000, tmp_path / "out")
    with pytest.raises(T5LabError, match="pad/eos/unk ids are"):  # SentencePiece's own defaults are not T5's
        Tokenizer.train(corpus[:500], 100, tmp_path / "out", pad_id=-1, unk_id=0, bos_id=1, eos_id=2)
    assert not (tmp_path / "out").exists()
