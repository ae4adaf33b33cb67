"""The corpus and tokenizer `t5lab pretrain` uses when given none: no network, no data files.

The text is the standard library's pydoc topics (`pydoc_data.topics`, ~0.5 MB of English documentation
that every CPython installation carries), read at run time, never copied into the repository. It is
enough to smoke-test pre-training anywhere, not to train a useful model.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from t5lab.data.tokenizer import Tokenizer

BUILTIN = "builtin"
DEFAULT_PIECES = 3000
DEFAULT_SENTINELS = 100


def builtin_documents() -> list[str]:
    """Each blank-line separated paragraph of each pydoc topic (in sorted topic order) is one document, so
    the corpus splits into many shards and a held-out set."""
    from pydoc_data.topics import topics

    docs: list[str] = []
    for name in sorted(topics):
        docs.extend(p.strip() for p in topics[name].split("\n\n") if p.strip())
    return docs


def cache_dir() -> Path:
    """$T5LAB_CACHE, else $XDG_CACHE_HOME/t5lab, else ~/.cache/t5lab."""
    if os.environ.get("T5LAB_CACHE"):
        return Path(os.environ["T5LAB_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "t5lab"


def default_tokenizer(
    cache: str | Path | None = None,
    *,
    vocab_size: int = DEFAULT_PIECES,
    num_sentinels: int = DEFAULT_SENTINELS,
    seed: int = 0,
) -> Tokenizer:
    """A small SentencePiece tokenizer trained on the built-in corpus, cached under `cache` (default
    `cache_dir()`) in a folder keyed by a hash of the corpus and the settings (the corpus changes with the
    Python version). The folder appears atomically: trained in a temporary folder, then renamed."""
    from t5lab.data.tokenizer import Tokenizer

    docs = builtin_documents()
    digest = hashlib.sha256()
    digest.update(f"v1 vocab={vocab_size} sentinels={num_sentinels} seed={seed}\n".encode())
    for doc in docs:
        digest.update(doc.encode("utf-8") + b"\0")
    root = Path(cache) if cache is not None else cache_dir()
    final = root / f"builtin-tokenizer-{digest.hexdigest()[:16]}"
    if not final.is_dir():
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-tokenizer-", dir=root))
        try:
            Tokenizer.train(docs, vocab_size, tmp, num_sentinels=num_sentinels, seed=seed)
            try:
                os.replace(tmp, final)
            except OSError:  # another process finished first: use its copy
                if not final.is_dir():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Tokenizer.from_file(final)
