from __future__ import annotations

import gzip
import importlib.util
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t5lab.data import corpora
from t5lab.data.builtin_corpus import builtin_documents
from t5lab.data.corpora import BadLine, iter_documents, plan_pieces, read_piece
from t5lab.errors import T5LabError


def test_text_lines_and_paragraphs(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    path.write_text("first line\nsecond line\n\n\nthird\n  \nfourth\n")
    assert list(iter_documents([str(path)])) == ["first line", "second line", "third", "fourth"]
    assert list(iter_documents([str(path)], paragraphs=True)) == ["first line\nsecond line", "third", "fourth"]


def test_jsonl_field_gzip_and_globs(tmp_path: Path) -> None:
    (tmp_path / "b.jsonl").write_text("\n".join(json.dumps({"body": f"doc {i}"}) for i in range(3)))
    with gzip.open(tmp_path / "a.jsonl.gz", "wt") as f:
        f.write(json.dumps({"body": "zipped"}) + "\n")
    docs = list(iter_documents([str(tmp_path / "*.jsonl*")], text_field="body"))
    assert docs == ["zipped", "doc 0", "doc 1", "doc 2"]  # sorted glob: a.jsonl.gz before b.jsonl


def test_keep_skips_without_decoding(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(b"zero\n\xff\xfe bad\ntwo\n")
    assert list(iter_documents([str(path)], keep=lambda n: n != 1)) == ["zero", "two"]
    with pytest.raises(T5LabError, match=r"c\.txt:2: not UTF-8"):
        list(iter_documents([str(path)]))


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"text": "ok"}\n{"text": oops}\n', r"d\.jsonl:2: not valid JSON"),
        ('{"text": "ok"}\n{"title": "x"}\n', r"d\.jsonl:2: .*'text'"),
        ('{"text": 3}\n', r"d\.jsonl:1: field 'text' is not a string"),
        ("\n\n", r"d\.jsonl: contains no documents"),
    ],
)
def test_bad_jsonl_names_file_and_line(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text(content)
    with pytest.raises(T5LabError, match=match):
        list(iter_documents([str(path)]))


def test_missing_sources(tmp_path: Path) -> None:
    with pytest.raises(T5LabError, match="nope.txt: no such file"):
        list(iter_documents([str(tmp_path / "nope.txt")]))
    with pytest.raises(T5LabError, match="no file matches"):
        list(iter_documents([str(tmp_path / "*.jsonl")]))
    (tmp_path / "e.csv").write_text("x\n")
    with pytest.raises(T5LabError, match="e.csv: cannot tell the format"):
        list(iter_documents([str(tmp_path / "e.csv")]))
    assert list(iter_documents([str(tmp_path / "e.csv")], fmt="text")) == ["x"]


def test_parquet(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    if importlib.util.find_spec("pyarrow") is None:
        path.write_bytes(b"PAR1")
        with pytest.raises(T5LabError, match="f.parquet: reading Parquet needs pyarrow"):
            list(iter_documents([str(path)]))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["a b", None, "c"], "n": [1, 2, 3]}), path)
    assert list(iter_documents([str(path)])) == ["a b", "c"]
    with pytest.raises(T5LabError, match="no column 'body'"):
        list(iter_documents([str(path)], text_field="body"))


def test_hf_dataset_folder(tmp_path: Path) -> None:
    if importlib.util.find_spec("datasets") is None:
        with pytest.raises(T5LabError, match=r"needs `datasets`"):
            list(iter_documents([str(tmp_path)]))
        return
    import datasets

    datasets.Dataset.from_dict({"text": ["x y", "", "z"]}).save_to_disk(str(tmp_path / "ds"))
    assert list(iter_documents([str(tmp_path / "ds")])) == ["x y", "z"]


def test_builtin_corpus_is_english_and_stable() -> None:
    docs = builtin_documents()
    assert len(docs) > 1000 and sum(map(len, docs)) > 300_000
    assert all(d.strip() == d and d for d in docs)
    assert docs == builtin_documents()
    assert list(iter_documents(["builtin"], keep=lambda n: n < 3)) == docs[:3]


@settings(max_examples=40, deadline=None)
@given(lengths=st.lists(st.integers(0, 30), min_size=1, max_size=40), split=st.integers(1, 200),
       trailing_newline=st.booleans())
def test_byte_ranges_hold_each_line_once(lengths: list[int], split: int, trailing_newline: bool) -> None:
    lines = [f"d{i}" + "x" * n for i, n in enumerate(lengths)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "docs.txt"
        path.write_text("\n".join(lines) + ("\n" if trailing_newline else ""))
        pieces = plan_pieces([str(path)], split_bytes=split)
        assert len(pieces) == max(1, -(-path.stat().st_size // split))
        read = [lazy() for piece in pieces for lazy, _ in read_piece(piece)]
    assert read == lines


def test_reading_resumes_at_a_saved_position_and_gzip_stays_whole(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"doc {i}"}) for i in range(50)]
    plain = tmp_path / "a.jsonl"
    plain.write_text("\n".join(lines) + "\n")
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write("\n".join(lines) + "\n")
    pieces = plan_pieces([str(plain), str(tmp_path / "b.jsonl.gz")], split_bytes=300)
    assert [p.end for p in pieces][-1] == -1 and len(pieces) > 3  # byte ranges, then the whole gzip file
    for piece in (pieces[1], pieces[-1]):
        docs = list(read_piece(piece))
        _, position = docs[2]
        assert [lazy() for lazy, _ in read_piece(piece, position=position)] == [lazy() for lazy, _ in docs[3:]]


def test_a_bad_line_inside_a_byte_range_names_its_line(tmp_path: Path) -> None:
    lines = [b"line %d" % i for i in range(2000)]
    lines[1499] = b"bad \xff line"
    for name, opener in (("big.txt", open), ("big.txt.gz", gzip.open)):
        path = tmp_path / name
        with opener(path, "wb") as f:
            f.write(b"\n".join(lines) + b"\n")
        pieces = plan_pieces([str(path)], split_bytes=1000)
        with pytest.raises(BadLine, match=rf"^\S*{name}:1500: not UTF-8"):
            for piece in pieces:
                for lazy, _ in read_piece(piece):
                    lazy()


def test_a_streamed_hub_dataset_is_read_shard_by_shard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each piece of an 'hf:' source is one of the stream's files (C4 'en' has 1,024), so lanes never read
    one another's; the hub is stood in for by local JSON files streamed the same way."""
    datasets = pytest.importorskip("datasets")
    files = []
    for i in range(6):
        files.append(str(tmp_path / f"p{i}.jsonl"))
        Path(files[-1]).write_text("".join(json.dumps({"text": f"doc {i}-{j}"}) + "\n" for j in range(3)))
    monkeypatch.setattr(corpora, "_hf_dataset", lambda source, text_field: datasets.load_dataset(
        "json", data_files=files, split="train", streaming=True))
    pieces = plan_pieces(["hf:stand-in"])
    assert [(p.shard, p.num_shards) for p in pieces] == [(i, 6) for i in range(6)]
    assert [lazy() for lazy, _ in read_piece(pieces[4])] == ["doc 4-0", "doc 4-1", "doc 4-2"]
    _, position = next(iter(read_piece(pieces[2])))
    assert [lazy() for lazy, _ in read_piece(pieces[2], position=position)] == ["doc 2-1", "doc 2-2"]


def test_parquet_row_groups_are_pieces_and_a_broken_file_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "g.parquet"
    texts = [f"row {i}" for i in range(10)]
    pq.write_table(pa.table({"text": texts}), path, row_group_size=3)
    pieces = plan_pieces([str(path)])
    assert [(p.shard, p.num_shards) for p in pieces] == [(i, 4) for i in range(4)]
    assert [[lazy() for lazy, _ in read_piece(p)] for p in pieces] == [texts[i : i + 3] for i in range(0, 10, 3)]
    path.write_bytes(path.read_bytes()[:-20])  # truncated: the footer is gone
    with pytest.raises(T5LabError, match=r"^\S*g\.parquet: not a readable Parquet file \(") as error:
        plan_pieces([str(path)])
    assert "\n" not in str(error.value)
