from __future__ import annotations

import io
import itertools
import json
from pathlib import Path

import pytest
import torch
from fake_tokenizer import FakeTokenizer
from span_inverse import reconstruct

from t5lab.data.objectives import build_objective
from t5lab.data.pretraining import DataConfig, PretrainingStream, ShardStream, shard_of
from t5lab.errors import T5LabError


class IdTokenizer(FakeTokenizer):
    """Document "w17" encodes to [20, 20, 20, EOS]: the token names its document."""

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        return [3 + int(text[1:])] * 3 + ([self.eos_id] if add_eos else [])


def corpus(tmp_path: Path, n: int) -> str:
    path = tmp_path / "docs.txt"
    path.write_text("".join(f"w{i}\n" for i in range(n)))
    return str(path)


def documents_of_epoch(stream: ShardStream) -> list[int]:
    ids = []
    for (epoch, _, _), tokens in stream.documents():
        if epoch > 0:
            break
        ids.append(tokens[0] - 3)
    return ids


def test_shards_are_disjoint_and_cover_every_document(tmp_path: Path) -> None:
    config = DataConfig(sources=(corpus(tmp_path, 203),), shuffle_buffer=7, eval_fraction=0.1, inputs_length=16)
    tok = IdTokenizer(pieces=300)
    objective = build_objective("span_corruption", tok, 16)
    world_size, workers = 2, 2
    per_shard = {}
    for rank, worker in itertools.product(range(world_size), range(workers)):
        shard = rank * workers + worker
        per_shard[shard] = documents_of_epoch(ShardStream(config, tok, objective, shard, world_size * workers))
    seen = [d for ids in per_shard.values() for d in ids]
    held_out = {i for i in range(203) if i % 10 == 9}
    assert len(seen) == len(set(seen)) == 203 - len(held_out)  # disjoint, each document once
    assert set(seen) | held_out == set(range(203))
    assert all(abs(len(ids) - len(seen) / 4) <= 1 for ids in per_shard.values())  # round-robin balance
    assert per_shard[0] != sorted(per_shard[0])  # shuffled within blocks
    evals = ShardStream(config, tok, objective, 0, 1, split="eval")
    assert sorted(documents_of_epoch(evals)) == sorted(held_out)


def test_shuffle_differs_per_epoch_and_seed(tmp_path: Path) -> None:
    config = DataConfig(sources=(corpus(tmp_path, 50),), shuffle_buffer=50, eval_fraction=0.0, inputs_length=16)
    tok = IdTokenizer(pieces=300)
    objective = build_objective("span_corruption", tok, 16)
    docs = ShardStream(config, tok, objective, 0, 1).documents()
    epochs = [[int(t[0]) for _, t in itertools.islice(docs, 50)] for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]
    other = ShardStream(config.replace(seed=1), tok, objective, 0, 1).documents()
    assert [int(t[0]) for _, t in itertools.islice(other, 50)] != epochs[0]


def test_shard_of_is_round_robin() -> None:
    config = DataConfig(eval_fraction=0.25)  # documents 3, 7, 11, ... are held out
    assert [shard_of(config, n, "train", 3) for n in range(6)] == [(0, 0), (1, 0), (2, 0), None, (0, 1), (1, 1)]
    assert [shard_of(config, n, "eval", 3) for n in (3, 7, 11, 15)] == [(0, 0), (1, 0), (2, 0), (0, 1)]


def test_packing_concatenates_documents_with_eos(tmp_path: Path) -> None:
    path = tmp_path / "t.txt"
    lines = [" ".join(f"x{i}_{j}" for j in range(i % 13 + 1)) for i in range(60)]
    path.write_text("\n".join(lines) + "\n")
    tok = FakeTokenizer()
    config = DataConfig(sources=(str(path),), shuffle_buffer=1, eval_fraction=0.0, inputs_length=24, batch_size=4)
    stream = PretrainingStream(config, tok)
    sentinels = {tok.sentinel_id(i) for i in range(tok.num_sentinels)}
    raw: list[int] = []
    for batch in itertools.islice(stream, 3):
        assert batch["input_ids"].dtype == torch.int64 and batch["input_ids"].shape == (4, 24)
        assert batch["labels"].shape == (4, stream.targets_length)
        for inputs, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist(), strict=True):
            chunk = reconstruct(inputs, labels, sentinels)
            assert len(chunk) == stream.tokens_length
            raw.extend(chunk)
    expected = [t for line in lines for t in tok.encode(line)]
    assert raw == expected[: len(raw)]  # no token lost, duplicated or padded


def _run(config: DataConfig, tok: FakeTokenizer, n: int, state: dict | None = None) -> tuple[list, dict]:
    stream = PretrainingStream(config, tok)
    if state is not None:
        stream.load_state_dict(state)
    batches = [{k: v.clone() for k, v in b.items()} for b in itertools.islice(stream, n)]
    return batches, stream.state_dict()


@pytest.mark.parametrize(("workers", "objective"), [(0, "span_corruption"), (2, "span_corruption"), (0, "ul2")])
def test_resume_is_exact(workers: int, objective: str) -> None:
    tok = FakeTokenizer(num_sentinels=60)
    config = DataConfig(inputs_length=48, batch_size=3, shuffle_buffer=40, num_workers=workers, objective=objective)
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
        next(iter(PretrainingStream(DataConfig(sources=(str(bad),), eval_fraction=0.0, num_workers=1), tok)))
    state = PretrainingStream(DataConfig(num_workers=2), tok).state_dict()
    with pytest.raises(T5LabError, match="num_workers"):
        PretrainingStream(DataConfig(num_workers=3), tok).load_state_dict(state)
