"""`t5lab tokenizer train`: a T5-style SentencePiece tokenizer (unigram, pad 0 / EOS 1 / UNK 2, 100 sentinels)
trained on your corpus, written as a folder that `t5lab pretrain --tokenizer` and transformers' T5Tokenizer read.

    t5lab tokenizer train --data 'notes/*.txt' --vocab-size 8000 --out my-tokenizer
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from t5lab.data.corpora import Format, iter_documents
from t5lab.data.tokenizer import Tokenizer
from t5lab.errors import T5LabError


def tokenizer(
    action: Literal["train"],
    data: list[str] | None = None,
    vocab_size: int = 8000,
    out: str = "tokenizer",
    format: Format = "auto",
    text_field: str = "text",
    paragraphs: bool = False,
    character_coverage: float = 0.9995,
    seed: int = 0,
) -> Path:
    """Train a T5-style SentencePiece tokenizer on text sources and save it (OUT/spiece.model + configs).

    Args:
        action: what to do: train.
        data: text sources: files, globs, 'builtin' or 'hf:NAME' (as `t5lab pretrain --data`).
        vocab_size: SentencePiece pieces (T5: 32,000); the tokenizer adds 100 sentinels `<extra_id_N>` on top.
        out: folder to write spiece.model and the tokenizer configs into.
        format: 'auto' (from the file suffix), 'text', 'jsonl', 'parquet' or 'hf'.
        text_field: the JSONL field / Parquet or dataset column holding the text.
        paragraphs: text files: one document per blank-line separated paragraph instead of per line.
        character_coverage: share of characters the pieces must cover (T5: 0.9995; 1.0 for small alphabets).
        seed: SentencePiece's random seed (the same corpus and seed give the same tokenizer).
    """
    if action != "train":  # jsonargparse checks the Literal on the command line; this guards Python callers
        raise T5LabError(f"tokenizer {action!r}: expected 'train'")
    if not data:
        raise T5LabError("tokenizer train: give the training text with --data FILES (paths, globs, builtin or hf:NAME)")
    if vocab_size < 8:
        raise T5LabError(f"--vocab-size={vocab_size}: expected at least 8 SentencePiece pieces")
    documents = iter_documents(data, format, text_field, paragraphs)
    tok = Tokenizer.train(documents, vocab_size, out, seed=seed, character_coverage=character_coverage)
    path = Path(out) / "spiece.model"
    print(f"wrote {path}: {tok.vocab_size - tok.num_sentinels:,} pieces + {tok.num_sentinels} sentinels = "
          f"{tok.vocab_size:,} ids (pad 0, EOS 1, UNK 2)")
    print(f"use it with: t5lab pretrain --tokenizer {path} --data ...")
    return path
