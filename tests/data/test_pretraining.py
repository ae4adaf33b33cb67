from __future__ import annotations

import gzip
import io
import itertools
import json
import os
import tempfile
from pathlib import Path

import pytest
import torch
from fake_tokenizer import FakeTokenizer
from hypothesis import given, settings
from hypothesis import strategies as st
from span_inverse import reconstruct

from t5lab.data.pretraining import DataConfig, PretrainingStream, _Lane, merge_states
from t5lab.errors import T5LabError


class IdTokenizer(FakeTokenizer):
    """Document "w17" encodes to [20, 20, 20, EOS]: the token names its document."""

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        return [3 + int(text[1:])] * 3 + ([self.eos_id] if add_eos else [])


def corpus(tmp_path: Path, n: int) -> str:
    path = tmp_path / "docs.txt"
    path.write_text("".join(f"w{i}\n" for i in range(n)))
    return str(path)


def lane_documents(stream: PretrainingStream, lane: int, split: str = "train") -> list[int]:
    """The documents lane `lane` reads in its first epoch (document ids, see IdTokenizer)."""
    state = [0, 0, 0, 0, 0, -1, 0]
    ids = []
    for (epoch, *_), tokens in _Lane(stream.config, stream.tokenizer, stream.lane_reads(lane), lane, split,
                                     state).documents():
        if epoch > 0:
            break
        ids.append(int(tokens[0]) - 3)
    return ids


def reads_of(world_size: int, workers: int, config: DataConfig, tok: FakeTokenizer) -> dict:
    """{(rank, worker): (documents, pieces)} that each rank x worker reads in an epoch."""
    out = {}
    for rank in range(world_size):
        stream = PretrainingStream(config.replace(num_workers=workers), tok, rank=rank, world_size=world_size)
        for worker in range(max(workers, 1)):
            lanes = stream.lanes_of(stream.slots(worker))
            docs = [d for lane in lanes for d in lane_documents(stream, lane)]
            pieces = {p for lane in lanes for p in stream.lane_reads(lane).pieces}
            out[rank, worker] = (docs, pieces)
    return out


@pytest.mark.parametrize("world_size", [2, 3])
def test_each_rank_and_worker_reads_its_own_documents_once(tmp_path: Path, world_size: int) -> None:
    n = 203
    config = DataConfig(sources=(corpus(tmp_path, n),), shuffle_buffer=7, eval_fraction=0.1, inputs_length=16,
                        batch_size=1, grad_accum=2, split_bytes=64)
    tok = IdTokenizer(pieces=300)
    reads = reads_of(world_size, 2, config, tok)
    seen = [d for docs, _ in reads.values() for d in docs]
    held_out = {i for i in range(n) if held_out_in(tmp_path, i, 10)}
    assert len(seen) == len(set(seen)) == n - len(held_out)  # disjoint, each document once
    assert set(seen) | held_out == set(range(n))
    pieces = [p for _, ps in reads.values() for p in ps]
    assert len(pieces) == len(set(pieces)) >= 2 * world_size * 2  # byte ranges, no two readers share one
    first = reads[0, 0][0]
    assert first != sorted(first)  # shuffled within blocks
    stream = PretrainingStream(config, tok, split="eval")
    evals = [d for lane in stream.lanes_of(range(stream.global_batch)) for d in lane_documents(stream, lane, "eval")]
    assert sorted(evals) == sorted(held_out)


def held_out_in(tmp_path: Path, doc: int, every: int) -> bool:
    """Whether document `doc` of the corpus file is held out: every `every`-th line of its byte range."""
    from t5lab.data.corpora import plan_pieces, read_piece

    index = doc
    for piece in plan_pieces([str(tmp_path / "docs.txt")], split_bytes=64):
        count = sum(1 for _ in read_piece(piece))
        if index < count:
            return index % every == every - 1
        index -= count
    raise AssertionError(doc)


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 60), per_rank=st.integers(1, 4), world_size=st.integers(1, 4), split=st.integers(8, 400),
       seed=st.integers(0, 3))
def test_lanes_partition_the_corpus(n: int, per_rank: int, world_size: int, split: int, seed: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        config = DataConfig(sources=(corpus(Path(folder), n),), eval_fraction=0.0, inputs_length=16,
                            batch_size=per_rank, shuffle_buffer=5, split_bytes=split, seed=seed)
        tok = IdTokenizer(pieces=300)
        stream = PretrainingStream(config, tok, world_size=world_size)
        if n < stream.global_batch:
            return  # lanes without documents: an error, tested below
        lanes = [lane_documents(stream, lane) for lane in stream.lanes_of(range(stream.global_batch))]
        assert sorted(d for docs in lanes for d in docs) == list(range(n))


def run_ranks(config: DataConfig, tok: FakeTokenizer, world_size: int, workers: int, steps: int,
              states: list | None = None) -> tuple[list[torch.Tensor], list[torch.Tensor], list[dict]]:
    """The global batches of `steps` steps (ranks' micro-batches concatenated) and the ranks' states."""
    per_rank = config.replace(batch_size=config.batch_size // world_size, num_workers=workers)
    streams = [PretrainingStream(per_rank, tok, rank=r, world_size=world_size) for r in range(world_size)]
    for stream, state in zip(streams, states or [None] * world_size, strict=True):
        if state is not None:
            stream.load_state_dict(state)
    iters = [iter(s) for s in streams]
    inputs, labels = [], []
    for _ in range(steps):
        micro = [next(it) for it in iters for _ in range(config.grad_accum)]
        inputs.append(torch.cat([m["input_ids"] for m in micro]))
        labels.append(torch.cat([m["labels"] for m in micro]))
    return inputs, labels, [s.state_dict() for s in streams]


@pytest.mark.parametrize(("objective", "weights"), [("span_corruption", ()), ("ul2", (0.7, 0.3))])
def test_global_batches_do_not_depend_on_world_size_or_workers(objective: str, weights: tuple) -> None:
    tok = FakeTokenizer(num_sentinels=60)
    sources = ("builtin", "builtin") if weights else ("builtin",)
    config = DataConfig(sources=sources, weights=weights, inputs_length=48, batch_size=4, grad_accum=2,
                        shuffle_buffer=30, objective=objective)
    one_in, one_labels, _ = run_ranks(config, tok, 1, 0, 3)
    for world_size, workers in [(2, 0), (2, 2), (4, 2)]:
        got_in, got_labels, _ = run_ranks(config, tok, world_size, workers, 3)
        assert all(torch.equal(a, b) for a, b in zip(one_in, got_in, strict=True))
        assert all(torch.equal(a, b) for a, b in zip(one_labels, got_labels, strict=True))
    assert not torch.equal(one_in[0], one_in[1])


@settings(max_examples=10, deadline=None)
@given(world_size=st.sampled_from([1, 2, 3]), grad_accum=st.sampled_from([1, 2]), per_micro=st.integers(1, 2),
       weight=st.floats(0.0, 1.0), seed=st.integers(0, 9))
def test_world_size_independence_property(world_size: int, grad_accum: int, per_micro: int, weight: float,
                                          seed: int) -> None:
    """Any world size and grad_accum that give the same global batch (12 or 24) give the same batches."""
    tok = FakeTokenizer(num_sentinels=60)
    global_batch = 12 * per_micro
    config = DataConfig(sources=("builtin", "builtin"), weights=(weight, 1.0), inputs_length=24,
                        batch_size=global_batch, shuffle_buffer=10, seed=seed, eval_fraction=0.1)
    one, _, _ = run_ranks(config, tok, 1, 0, 2)
    config = config.replace(batch_size=global_batch // grad_accum, grad_accum=grad_accum)
    many, _, _ = run_ranks(config, tok, world_size, 0, 2)
    assert all(torch.equal(a, b) for a, b in zip(one, many, strict=True))


def test_resume_reads_nothing_before_the_saved_position(tmp_path: Path) -> None:
    """After saving, every byte a lane read before its current shuffle block is made undecodable: the
    resumed stream still gives the same batches, so it seeks past them instead of re-reading them."""
    path = tmp_path / "docs.txt"
    path.write_text("".join(f"w{i}\n" for i in range(2000)))
    tok = IdTokenizer(pieces=2100)
    config = DataConfig(sources=(str(path),), inputs_length=16, batch_size=4, shuffle_buffer=10,
                        eval_fraction=0.0, split_bytes=200)
    full, _ = _run(config, tok, 30)
    _, state = _run(config, tok, 20)
    stream = PretrainingStream(config, tok)
    read = []  # byte ranges whose lines (those that start in them) the lanes are past
    for lane, (_, _, _, _, piece_no, position, _) in state["lanes"].items():
        pieces = stream.lane_reads(int(lane)).pieces
        assert piece_no > 0  # the lane has moved on to a later piece
        read += [(p.start, p.end) for p in pieces[:piece_no]] + [(pieces[piece_no].start, max(position, 0))]
    lines, at = [], 0
    for line in path.read_bytes().splitlines(keepends=True):
        lines.append(b"\xff" * (len(line) - 1) + b"\n" if any(a <= at < b for a, b in read) else line)
        at += len(line)
    path.write_bytes(b"".join(lines))
    rest, _ = _run(config, tok, 10, state)
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(full[20:], rest, strict=True))
    with pytest.raises(T5LabError, match="not UTF-8"):  # the corruption is real
        _run(config, tok, 1)


@pytest.mark.parametrize(("before", "after"), [(2, 1), (1, 2)])
def test_resume_on_another_world_size_continues_the_global_batches(before: int, after: int) -> None:
    tok = FakeTokenizer(num_sentinels=60)
    config = DataConfig(inputs_length=32, batch_size=4, shuffle_buffer=20)
    full, _, _ = run_ranks(config, tok, 1, 0, 5)
    _, _, states = run_ranks(config, tok, before, 2, 2)
    merged = merge_states(json.loads(json.dumps(states)))
    rest, _, _ = run_ranks(config, tok, after, 0, 3, [merged] * after)
    assert all(torch.equal(a, b) for a, b in zip(full[2:], rest, strict=True))
    if before == 2:  # one rank's state lacks the other's lanes
        with pytest.raises(T5LabError, match="merge the ranks' states"):
            PretrainingStream(config.replace(batch_size=2), tok, rank=1, world_size=2).load_state_dict(states[0])


def test_packing_concatenates_documents_with_eos(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    lines = [" ".join(f"x{i}_{j}" for j in range(i % 13 + 1)) for i in range(60)]
    path.write_text("\n".join(lines) + "\n")
    tok = FakeTokenizer()
    config = DataConfig(sources=(str(path),), shuffle_buffer=1, eval_fraction=0.0, inputs_length=24, batch_size=4)
    stream = PretrainingStream(config, tok)
    sentinels = {tok.sentinel_id(i) for i in range(tok.num_sentinels)}
    raw: list[list[int]] = [[] for _ in range(4)]  # per slot of the batch, i.e. per lane
    for batch in itertools.islice(stream, 3):
        assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].shape == (4, 24)
        assert batch["labels"].shape == (4, stream.targets_length)
        for slot, (inputs, labels) in enumerate(zip(batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True)):
            chunk = reconstruct(inputs, labels, sentinels)
            assert len(chunk) == stream.tokens_length
            raw[slot].extend(chunk)
    for slot in range(4):  # the four lanes share the file: lane k reads lines k, k+4, ...
        expected = [t for line in lines[slot::4] for t in tok.encode(line)]
        assert raw[slot] == expected[: len(raw[slot])]  # no token lost, duplicated or padded


def _run(config: DataConfig, tok: FakeTokenizer, n: int, state: dict | None = None) -> tuple[list, dict]:
    stream = PretrainingStream(config, tok)
    if state is not None:
        stream.load_state_dict(state)
    batches = [{k: v.clone() for k, v in b.items()} for b in itertools.islice(stream, n)]
    return batches, stream.state_dict()


@pytest.mark.parametrize(("workers", "objective", "grad_accum"),
                         [(0, "span_corruption", 1), (2, "span_corruption", 1), (0, "ul2", 1), (3, "ul2", 2)])
def test_resume_is_exact(workers: int, objective: str, grad_accum: int) -> None:
    """Also from the middle of a global batch (5 micro-batches of 2 per step)."""
    tok = FakeTokenizer(num_sentinels=60)
    config = DataConfig(inputs_length=48, batch_size=3, shuffle_buffer=40, num_workers=workers, objective=objective,
                        grad_accum=grad_accum)
    full, _ = _run(config, tok, 9)
    first, state = _run(config, tok, 5)
    state = json.loads(json.dumps(state))  # plain ints and lists
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    rest, _ = _run(config, tok, 4, state)
    for a, b in zip(full, first + rest, strict=True):
        assert a.keys() == b.keys() == {"input_ids", "labels"}
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert not torch.equal(full[0]["input_ids"], full[1]["input_ids"])


def test_iterating_again_continues() -> None:
    tok = FakeTokenizer()
    config = DataConfig(inputs_length=32, batch_size=2, shuffle_buffer=20)
    full, _ = _run(config, tok, 4)
    stream = PretrainingStream(config, tok)
    got = list(itertools.islice(stream, 2)) + list(itertools.islice(stream, 2))
    assert all(torch.equal(a["labels"], b["labels"]) for a, b in zip(full, got, strict=True))


def test_ranks_get_different_data() -> None:
    tok = FakeTokenizer()
    config = DataConfig(inputs_length=32, batch_size=2)
    a = next(iter(PretrainingStream(config, tok, rank=0, world_size=2)))
    b = next(iter(PretrainingStream(config, tok, rank=1, world_size=2)))
    assert not torch.equal(a["input_ids"], b["input_ids"])


def test_eval_split_is_finite_and_repeatable() -> None:
    tok = FakeTokenizer()
    config = DataConfig(inputs_length=64, batch_size=16, eval_fraction=0.05)
    stream = PretrainingStream(config, tok, split="eval")
    runs = [list(stream), list(PretrainingStream(config, tok, split="eval")), list(stream)]
    assert 1 <= len(runs[0]) < 100
    for other in runs[1:]:
        assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(runs[0], other, strict=True))


def test_errors_name_the_field(tmp_path: Path) -> None:
    tok = FakeTokenizer()
    with pytest.raises(T5LabError, match="'batch_size'"):
        DataConfig(batch_size=0)
    with pytest.raises(T5LabError, match="'objective'"):
        DataConfig(objective="bert")  # type: ignore[arg-type]
    small = DataConfig(sources=(corpus(tmp_path, 3),), eval_fraction=0.0, inputs_length=16)
    with pytest.raises(T5LabError, match="too small"):
        next(iter(PretrainingStream(small, tok, rank=3, world_size=4)))
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine\n\xff\n")
    with pytest.raises(T5LabError, match=r"^\S*bad\.txt:2: not UTF-8[^\n]*$"):  # one line, from a worker
        next(iter(PretrainingStream(DataConfig(sources=(str(bad),), eval_fraction=0.0, num_workers=1, batch_size=2),
                                    tok)))
    state = PretrainingStream(DataConfig(num_workers=2), tok).state_dict()
    PretrainingStream(DataConfig(num_workers=3), tok).load_state_dict(state)  # workers may change
    with pytest.raises(T5LabError, match="'global_batch'=8: this stream has 16"):
        PretrainingStream(DataConfig(), tok, world_size=2).load_state_dict(state)
    with pytest.raises(T5LabError, match="'num_workers'=9: expected at most"):
        DataConfig(num_workers=9)


@pytest.mark.parametrize(
    ("weights", "message"),
    [((1.0,), "one weight per source"), ((1.0, -1.0), "non-negative"), ((0, 0), "not all zero"),
     ((1.0, float("nan")), "finite"), (("a", 1), "numbers")],
)
def test_weights_are_validated(weights: tuple, message: str) -> None:
    with pytest.raises(T5LabError, match=rf"^data config field 'weights'=.*{message}"):
        DataConfig(sources=("a.txt", "b.txt"), weights=weights)


def test_weighted_sources_interleave_per_example(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("".join(f"w{i}\n" for i in range(100)))
    (tmp_path / "b.txt").write_text("".join(f"w{i}\n" for i in range(200, 300)))
    tok = IdTokenizer(pieces=400)
    config = DataConfig(sources=(str(tmp_path / "a.txt"), str(tmp_path / "b.txt")), weights=(0.8, 0.2),
                        inputs_length=16, batch_size=8, eval_fraction=0.0, noise_density=0.5)
    batches, _ = _run(config, tok, 25)
    # Word ids (3 <= id < 400; sentinels are above) below 200 + 3 come from a.txt.
    def words(row: torch.Tensor) -> torch.Tensor:
        return row[(row > 2) & (row < 400)]

    from_a = [bool((words(b["input_ids"][i]) < 203).all()) for b in batches for i in range(8)]
    assert 0.7 < sum(from_a) / len(from_a) < 0.9
    assert from_a[:40] != sorted(from_a[:40], reverse=True)  # interleaved, not one source after the other
    only_b, _ = _run(config.replace(weights=(0, 1)), tok, 2)
    assert all(bool((words(b["input_ids"][i]) >= 203).all()) for b in only_b for i in range(8))


def test_bad_lines_fail_with_file_and_line_or_are_skipped_and_counted(tmp_path: Path) -> None:
    lines = [json.dumps({"text": f"w{i}"}).encode() for i in range(2000)]
    lines[1499] = b'{"text": "w\xff"}'  # line 1,500
    path = tmp_path / "big.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    tok = IdTokenizer(pieces=3000)
    config = DataConfig(sources=(str(path),), inputs_length=64, batch_size=2, eval_fraction=0.0, split_bytes=2000,
                        shuffle_buffer=100, num_workers=2)
    with pytest.raises(T5LabError, match=r"^\S*big\.jsonl:1500: not UTF-8"):
        for _ in PretrainingStream(config, tok):
            pass
    stream = PretrainingStream(config.replace(skip_bad_lines=True), tok)
    assert stream.tokens_length == 70
    for _ in itertools.islice(stream, 80):  # one epoch of each lane, not two: 1000 documents x 4 tokens / 70
        pass
    assert stream.skipped_lines == 1


def test_c4_cut_into_64_gzip_shards_streams_with_workers(tmp_path: Path) -> None:
    source = Path(os.environ.get("T5LAB_DATA", "/work/shared/data")) / "c4_en_sample"
    files = sorted(source.glob("*.jsonl"))
    if not files:
        pytest.skip("the C4 sample is not available (set T5LAB_DATA)")
    docs = files[0].read_bytes().splitlines(keepends=True)
    for shard in range(64):
        with gzip.open(tmp_path / f"c4-{shard:05d}.json.gz", "wb") as f:
            f.writelines(docs[shard::64])
    tok = FakeTokenizer()
    config = DataConfig(sources=(str(tmp_path / "*.json.gz"),), inputs_length=64, batch_size=4, grad_accum=2,
                        shuffle_buffer=4)
    readers = {}
    for rank in range(2):
        stream = PretrainingStream(config.replace(num_workers=4), tok, rank=rank, world_size=2)
        for worker in range(4):
            readers[rank, worker] = {p.source for lane in stream.lanes_of(stream.slots(worker))
                                     for p in stream.lane_reads(lane).pieces}
    owned = [f for files_ in readers.values() for f in files_]
    assert len(owned) == len(set(owned)) == 64  # each file has exactly one reader
    one, _, _ = run_ranks(config.replace(batch_size=8), tok, 1, 0, 3)
    two, _, _ = run_ranks(config.replace(batch_size=8), tok, 2, 4, 3)
    assert all(torch.equal(a, b) for a, b in zip(one, two, strict=True))
