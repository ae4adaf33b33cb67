"""A span-filling sample: a held-out sentence with two spans masked and the model's greedy fill.

What `t5lab pretrain` prints at the end, so that a user sees what pre-training taught the model.
"""

from __future__ import annotations

import torch

from t5lab.data.pretraining import DataConfig, held_out_documents
from t5lab.generate import generate
from t5lab.model import T5


def held_out_text(config: DataConfig, min_words: int = 12, max_words: int = 40) -> str | None:
    """The first held-out document with at least `min_words` words, cut to `max_words` (None: none)."""
    if config.eval_every == 0:
        return None
    for text in held_out_documents(config):
        words = text.split()
        if len(words) >= min_words:
            return " ".join(words[:max_words])
    return None


def span_fill_sample(model: T5, tokenizer, text: str) -> str:
    """Mask two spans of `text` (about a third and two thirds in) and show the model's fill for each."""
    words = text.split()
    n = len(words)
    spans = [(n // 3, n // 3 + 2), (2 * n // 3, 2 * n // 3 + 3)]
    ids, shown, cut = [], [], 0
    for i, (start, end) in enumerate(spans):
        ids += tokenizer.encode(" ".join(words[cut:start]), add_eos=False) + [tokenizer.sentinel_id(i)]
        shown += words[cut:start] + [f"<extra_id_{i}>"]
        cut = end
    ids += tokenizer.encode(" ".join(words[cut:]), add_eos=True)
    shown += words[cut:]
    was_training = model.training
    model.eval()
    with torch.no_grad():
        source = torch.tensor([ids], device=model.shared.weight.device)
        output = generate(model, source, max_new_tokens=24)[0].tolist()  # greedy
    model.train(was_training)
    fills: dict[int, list[int]] = {}
    current = None
    for token in output:
        if token in (tokenizer.eos_id, tokenizer.pad_id):
            break
        sentinel = next((i for i in range(len(spans)) if token == tokenizer.sentinel_id(i)), None)
        if sentinel is not None:
            current = sentinel
            fills.setdefault(current, [])
        elif current is not None:
            fills[current].append(token)
    lines = [f"held-out text:  {text}", f"model input:    {' '.join(shown)}"]
    for i, (start, end) in enumerate(spans):
        guess = tokenizer.decode(fills[i]) if i in fills else "(no fill)"
        lines.append(f"<extra_id_{i}>: expected {' '.join(words[start:end])!r}, model wrote {guess!r}")
    return "\n".join(lines)
