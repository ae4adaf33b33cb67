"""`t5lab evaluate --task span-corruption`: held-out span-corruption loss of a model on a text file.

The computation is `t5lab.train.heldout`; this recipe finds the model, tokenizer and documents, prints the
result with its settings and writes OUT/summary.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from t5lab.data.corpora import iter_documents
from t5lab.errors import T5LabError
from t5lab.files import write_atomic
from t5lab.recipes.sources import resolve_model
from t5lab.train.heldout import HeldOutResult, format_heldout, span_corruption_heldout
from t5lab.train.loop import resolve_device

TASK = "span-corruption"


def evaluate_span_corruption(
    model: str,
    data: list[str] | str | None,
    *,
    tokenizer: str | None = None,
    inputs_length: int = 512,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    seed: int = 0,
    batch_size: int = 8,
    device: str = "auto",
    out: str | None = None,
    limit: int | None = None,
) -> HeldOutResult:
    """Score `model` on span corruption of every document of `data`; print and save the result."""
    if not data:
        raise T5LabError(f"evaluate --task {TASK}: give the text to score with --data FILE (paths, globs or hf:NAME)")
    if limit is not None and limit < 1:
        raise T5LabError(f"limit={limit}: expected a positive number of documents")
    sources = [data] if isinstance(data, str) else list(data)
    net, tok = resolve_model(model, tokenizer, seed=seed)
    net.to(resolve_device(device))
    documents = iter_documents(sources, keep=None if limit is None else (lambda number: number < limit))
    result = span_corruption_heldout(net, tok, documents, inputs_length=inputs_length, noise_density=noise_density,
                                     mean_noise_span_length=mean_noise_span_length, seed=seed, batch_size=batch_size)
    print(f"model {model} on {', '.join(sources)}\n{format_heldout(result)}")
    out_dir = Path(out) if out else Path("runs/evaluate") / TASK
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {"model": str(model), "data": sources, **result.as_dict()}
    write_atomic(out_dir / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return result
