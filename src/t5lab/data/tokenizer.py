"""T5's SentencePiece tokenizer: a SentencePiece unigram model plus sentinel ids appended after its pieces.

T5 reserves pad = 0 (also the decoder start), eos = 1 and unk = 2, has no BOS, and appends `<extra_id_0>` …
`<extra_id_{n-1}>` in *reverse* after the SentencePiece pieces: `<extra_id_i>` = sp_size + n - 1 - i
(32099 - i for T5's 32,000 pieces, so the vocabulary is 32,100; checkpoints pad the embedding to 32,128).

Encoding and decoding follow transformers' `T5Tokenizer` (the numerical reference, checked in
tests/data/test_tokenizer.py) rather than raw SentencePiece:
- The literal strings `<extra_id_i>`, `</s>`, `<pad>` and `<unk>` in the text become their single ids; the
  text between them is encoded by SentencePiece on its own (a leading "▁" each, spaces beside them dropped).
  seqio (the original T5 pipeline) would instead spell `</s>` out as ordinary pieces; we follow HF, which
  also maps WikiText's literal `<unk>` to the unk id.
- `decode(..., skip_special_tokens=True)` drops pad, eos, unk *and* the sentinels, as HF does; with False they
  are written as `<pad>`, `</s>`, `<unk>`, `<extra_id_i>` with no space added around them (HF:
  "x<extra_id_0> y"). Ids outside [0, vocab_size) — e.g. 32100..32127 from a padded embedding, or -100 —
  are dropped silently, as HF's tokenizers backend does for unknown ids.
- Decoding is not the inverse of encoding: SentencePiece's NFKC normalisation and whitespace collapsing
  ("a  b\\n" → "a b") are lossy, exactly as in HF.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from t5lab.errors import T5LabError
from t5lab.files import write_atomic

SPIECE_FILE = "spiece.model"
_SPECIALS = {"<pad>": 0, "</s>": 1, "<unk>": 2}


_EMBEDDING_PADDING = 128  # embeddings are padded to a multiple of this many rows


class Tokenizer:
    """T5's SentencePiece vocabulary with `num_sentinels` sentinel ids after its pieces (see module doc)."""

    pad_id: int = 0
    eos_id: int = 1
    unk_id: int = 2

    def __init__(self, model_proto: bytes, num_sentinels: int = 100, source: str = "<memory>") -> None:
        """Load a serialized SentencePiece model; `source` names it in error messages."""
        try:
            self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
        except (RuntimeError, OSError) as e:
            raise T5LabError(f"{source}: not a valid SentencePiece model ({str(e).strip()[:120]})") from None
        got = (self._sp.pad_id(), self._sp.eos_id(), self._sp.unk_id())
        if got != (self.pad_id, self.eos_id, self.unk_id):
            raise T5LabError(f"{source}: pad/eos/unk ids are {got}, expected T5's (0, 1, 2)")
        if num_sentinels < 0:
            raise T5LabError(f"num_sentinels must be >= 0, got {num_sentinels}")
        self._proto = model_proto
        self.source = source
        self.num_sentinels = num_sentinels
        self._sp_size = self._sp.get_piece_size()
        # Decoding is a table lookup; ids past the table (padded embedding rows) are dropped.
        self._pieces = [self._sp.id_to_piece(i) for i in range(self._sp_size)]
        self._pieces += [f"<extra_id_{i}>" for i in reversed(range(num_sentinels))]
        self._special_ids = {
            **_SPECIALS,
            **{f"<extra_id_{i}>": self.sentinel_id(i) for i in range(num_sentinels)},
        }
        # Longest first, so that a prefix never wins (HF matches added tokens leftmost-longest).
        names = sorted(self._special_ids, key=len, reverse=True)
        self._special_re = re.compile("|".join(map(re.escape, names)))

    @classmethod
    def from_file(cls, path: str | Path, num_sentinels: int = 100) -> Tokenizer:
        """Load `spiece.model`, or the `spiece.model` inside the folder `path`."""
        path = Path(path)
        if path.is_dir():
            path = path / SPIECE_FILE
        try:
            data = path.read_bytes()
        except OSError as e:
            raise T5LabError(f"{path}: cannot read the SentencePiece model ({e.strerror})") from None
        return cls(data, num_sentinels, source=str(path))

    @classmethod
    def train(
        cls,
        texts_or_files: Iterable[str] | Sequence[Path],
        vocab_size: int,
        out_dir: str | Path,
        *,
        num_sentinels: int = 100,
        seed: int = 0,
        **sentencepiece_options: object,
    ) -> Tokenizer:
        """Train a T5-style unigram SentencePiece model in-process, save it to `out_dir` and load it.

        `texts_or_files` holds either texts (`str`, split into lines) or text files (`Path`, one sentence
        per line, UTF-8). `vocab_size` counts SentencePiece pieces, as T5's 32,000 did: the returned
        tokenizer's `vocab_size` is that plus `num_sentinels`. The same corpus and seed give the same model
        (SentencePiece's global random seed is set to `seed`). `sentencepiece_options` override the
        defaults below (see SentencePiece's options.md), e.g. `character_coverage=1.0`.
        """
        if isinstance(texts_or_files, str):
            raise T5LabError("Tokenizer.train expects a list of texts or of Paths, not a single str")
        items = [texts_or_files] if isinstance(texts_or_files, Path) else texts_or_files
        failure: list[T5LabError] = []  # an exception raised inside the iterator reaches us as RuntimeError
        counted = [0]

        def lines(item: str | Path) -> Iterator[str]:
            if not isinstance(item, Path):
                yield from item.splitlines()
                return
            with item.open(encoding="utf-8") as f:
                yield from f

        def sentences() -> Iterator[str]:
            for item in items:
                try:
                    for line in lines(item):
                        if line.strip():
                            counted[0] += 1
                            yield line.rstrip("\n")
                except (OSError, UnicodeDecodeError) as e:
                    failure.append(T5LabError(f"{item}: cannot read training text ({e})"))
                    return

        options: dict[str, Any] = {  # SentencePieceTrainer's keyword options, each of its own type
            "model_type": "unigram",
            "vocab_size": vocab_size,
            **{"pad_id": 0, "eos_id": 1, "unk_id": 2, "bos_id": -1},
            **{"pad_piece": "<pad>", "eos_piece": "</s>", "unk_piece": "<unk>"},
            "character_coverage": 0.9995,  # T5's value
            "normalization_rule_name": "nmt_nfkc",
            "input_sentence_size": 2_000_000,  # sample at most this many lines: bounds time and memory
            "shuffle_input_sentence": True,
            "max_sentence_length": 16384,
            "num_threads": min(16, os.cpu_count() or 1),
            "minloglevel": 2,  # quiet
        }
        options.update(sentencepiece_options)
        model = io.BytesIO()
        spm.set_random_generator_seed(seed)
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=sentences(), model_writer=model, **options)
        except RuntimeError as e:
            if failure:
                raise failure[0] from None
            if counted[0] == 0:
                raise T5LabError("Tokenizer.train: the training corpus has no non-blank line") from None
            detail = str(e).strip().splitlines()[0].split("] ")[-1]
            raise T5LabError(
                f"Tokenizer.train: vocab_size={vocab_size} or an option is invalid: {detail}"
            ) from None
        if failure:
            raise failure[0]
        tokenizer = cls(model.getvalue(), num_sentinels, source="trained model")
        tokenizer.save(out_dir)
        return tokenizer

    @property
    def vocab_size(self) -> int:
        """SentencePiece pieces + sentinels (32,100 for T5; a model's embedding may be larger)."""
        return self._sp_size + self.num_sentinels

    def check_fits(self, model_vocab_size: int, model: str) -> None:
        """Refuse a tokenizer that does not belong to a model with `model_vocab_size` embedding rows, both
        ways: more ids than rows (ids without an embedding), or fewer ids by a whole padding block or more
        (an embedding is padded by less than 128 rows, as T5's 32,100 ids in 32,128 rows: a tokenizer that
        much smaller was made for another model, whose sentinels and pieces mean other things)."""
        if self.vocab_size > model_vocab_size:
            raise T5LabError(f"tokenizer has {self.vocab_size} ids ({self.source}) but model '{model}' has "
                             f"vocab_size={model_vocab_size}; use a matching tokenizer or a larger vocab_size")
        if model_vocab_size - self.vocab_size >= _EMBEDDING_PADDING:
            raise T5LabError(f"tokenizer has {self.vocab_size} ids ({self.source}) but model '{model}' has "
                             f"vocab_size={model_vocab_size} (more than {_EMBEDDING_PADDING - 1} rows of padding): "
                             "the tokenizer belongs to another model; use the model's own spiece.model")

    def sentinel_id(self, i: int) -> int:
        """The id of `<extra_id_i>`: counted down from the last id (32099 - i for T5)."""
        if not 0 <= i < self.num_sentinels:
            raise T5LabError(f"sentinel index {i} is out of range: this tokenizer has {self.num_sentinels}")
        return self._sp_size + self.num_sentinels - 1 - i

    def is_sentinel(self, token_id: int) -> bool:
        return self._sp_size <= token_id < self.vocab_size

    def _segments(self, text: str) -> list[str | int]:
        """Split `text` into plain-text pieces (str) and the ids of the special tokens written in it."""
        if "<" not in text:  # fast path: no special token possible
            return [text]
        out: list[str | int] = []
        pos = 0
        for m in self._special_re.finditer(text):
            out += [text[pos : m.start()], self._special_ids[m.group()]]
            pos = m.end()
        out.append(text[pos:])
        return out

    def encode(self, text: str, add_eos: bool = True) -> list[int]:
        """Ids of `text`, with EOS (1) appended like T5 unless `add_eos` is False."""
        return self.encode_batch([text], add_eos)[0]

    def encode_batch(self, texts: Sequence[str], add_eos: bool = True) -> list[list[int]]:
        """`encode` for many texts, with one SentencePiece call for all of their plain-text segments."""
        segmented = [self._segments(t) for t in texts]
        # U+0085 (NEL) is whitespace to HF's pre-tokenizer but an unknown character to SentencePiece: the
        # only character on which they differ (checked over all of Unicode), so we space it as HF does.
        plain = [s.replace("\x85", " ") for segs in segmented for s in segs if isinstance(s, str)]
        encoded = iter(self._sp.encode(plain))
        out = []
        for segs in segmented:
            ids: list[int] = []
            for s in segs:
                if isinstance(s, str):
                    ids += next(encoded)
                else:
                    ids.append(s)
            if add_eos:
                ids.append(self.eos_id)
            out.append(ids)
        return out

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids` as HF's T5Tokenizer writes it; see the module docstring for special tokens."""
        pieces = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                continue
            if skip_special_tokens and (i in (self.pad_id, self.eos_id, self.unk_id) or i >= self._sp_size):
                continue
            pieces.append(self._pieces[i])
        # HF's Metaspace decoder: "▁" is a space, except in the first piece where it is dropped.
        if not pieces:
            return ""
        return pieces[0].replace("▁", "") + "".join(pieces[1:]).replace("▁", " ")

    def decode_batch(self, batch: Sequence[Sequence[int]], skip_special_tokens: bool = True) -> list[str]:
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    def save(self, out_dir: str | Path) -> Path:
        """Write `spiece.model` and the small configs that let transformers' T5Tokenizer load `out_dir`
        with the same sentinels. Returns the path of `spiece.model`."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        sentinels = [f"<extra_id_{i}>" for i in range(self.num_sentinels)]
        special = {"eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>"}
        config = {
            "tokenizer_class": "T5Tokenizer",
            **special,
            "extra_ids": self.num_sentinels,
            "additional_special_tokens": sentinels,
        }
        files = {
            SPIECE_FILE: self._proto,
            "tokenizer_config.json": json.dumps(config, indent=2).encode(),
            "special_tokens_map.json": json.dumps(
                {**special, "additional_special_tokens": sentinels}
            ).encode(),
        }
        for name, data in files.items():
            write_atomic(out / name, data)
        return out / SPIECE_FILE
