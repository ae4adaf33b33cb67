"""Held-out span-corruption loss of any model on any text: loss, token accuracy and bits per byte.

The documents are tokenized (each ending with EOS) and joined into one token stream, as pre-training reads
a corpus; the stream is cut into consecutive chunks of the raw length that corrupts into `inputs_length`
inputs, so every document is used once and no token twice. Chunk k is corrupted with
`numpy.random.default_rng([seed, k])`: the same file, settings and seed give the same examples whatever the
batch size. The last chunk is filled up with padding, which the encoder masks out and nothing scores.

What is reported (`HeldOutResult`):
- `loss`: mean cross-entropy per target token in nats, sentinels and EOS included (what training reports);
- `token_accuracy`: the share of those target tokens the model ranks first, in percent;
- `bits_per_byte`: the summed NLL in bits of the target tokens that stand for text (sentinels, EOS,
  padding and UNK left out: an UNK's text is unknown) divided by the UTF-8 bytes of the text those tokens
  spell (each piece's text, its word-boundary marker counting as one space). Per byte, not per token, so that models with different
  tokenizers compare on the same file (each masks about `noise_density` of its own tokens; the text those
  spans cover differs, so compare on files of more than a few chunks).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from t5lab.data.span_corruption import SpanCorruption
from t5lab.data.tokenizer import Tokenizer
from t5lab.errors import T5LabError
from t5lab.model import T5


@dataclass(frozen=True)
class HeldOutResult:
    loss: float
    token_accuracy: float
    bits_per_byte: float
    documents: int
    chunks: int
    target_tokens: int
    text_tokens: int
    text_bytes: int
    inputs_length: int
    targets_length: int
    noise_density: float
    mean_noise_span_length: float
    seed: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def piece_bytes(tok: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each id spells, its word-boundary marker as one space; 0 for pad, EOS, UNK and sentinels.

    Read through the public `decode`: decoding [i, i] writes the piece's text twice, the first time
    without its leading space, so the difference of the two lengths is the piece's text with its space.
    """
    table = np.zeros(tok.vocab_size, dtype=np.int64)
    for i in range(tok.vocab_size):
        if i in (tok.pad_id, tok.eos_id, tok.unk_id) or tok.is_sentinel(i):
            continue
        once = len(tok.decode([i], skip_special_tokens=False).encode("utf-8"))
        table[i] = len(tok.decode([i, i], skip_special_tokens=False).encode("utf-8")) - once
    return table


def span_corruption_heldout(
    model: T5,
    tok: Tokenizer,
    documents: Iterable[str],
    *,
    inputs_length: int = 512,
    noise_density: float = 0.15,
    mean_noise_span_length: float = 3.0,
    seed: int = 0,
    batch_size: int = 8,
) -> HeldOutResult:
    """Score `model` on T5 span corruption of `documents` (see the module docstring for the definitions)."""
    corruption = SpanCorruption(inputs_length, noise_density, mean_noise_span_length)
    corruption.check_sentinels(tok.num_sentinels)
    stream: list[int] = []
    count = 0
    for text in documents:
        if text.strip():
            stream += tok.encode(text, add_eos=True)
            count += 1
    if not stream:
        raise T5LabError("span-corruption evaluation: the data has no non-empty document")
    L = corruption.tokens_length
    num_chunks = -(-len(stream) // L)
    tokens = np.full(num_chunks * L, tok.pad_id, dtype=np.int64)
    tokens[: len(stream)] = stream
    chunks_CL = tokens.reshape(num_chunks, L)
    sentinels = np.array([tok.sentinel_id(i) for i in range(tok.num_sentinels)], dtype=np.int64)
    bytes_V = torch.from_numpy(piece_bytes(tok))
    device = next(model.parameters()).device

    nll_nats = text_nll_nats = 0.0
    scored = correct = text_tokens = text_bytes = 0
    model.eval()
    for start in range(0, num_chunks, batch_size):
        pairs = [corruption(chunks_CL[k : k + 1], sentinels, tok.eos_id, np.random.default_rng([seed, k]))
                 for k in range(start, min(start + batch_size, num_chunks))]
        inputs_BS = torch.from_numpy(np.concatenate([p[0] for p in pairs])).to(device)
        targets_BT = torch.from_numpy(np.concatenate([p[1] for p in pairs])).to(device)
        labels_BT = targets_BT.masked_fill(targets_BT == tok.pad_id, -100)
        with torch.inference_mode():
            logits_BTV = model(inputs_BS, (inputs_BS != tok.pad_id).long(), labels=labels_BT).logits.float()
        scored_BT = labels_BT != -100
        nll_BT = F.cross_entropy(logits_BTV.transpose(1, 2), labels_BT, ignore_index=-100, reduction="none")
        text_BT = scored_BT & (bytes_V.to(device)[targets_BT] > 0)  # not EOS, UNK or a sentinel
        nll_nats += nll_BT.sum().item()
        text_nll_nats += nll_BT[text_BT].sum().item()
        scored += int(scored_BT.sum())
        correct += int(((logits_BTV.argmax(-1) == labels_BT) & scored_BT).sum())
        text_tokens += int(text_BT.sum())
        text_bytes += int(bytes_V[targets_BT[text_BT].cpu()].sum())
    return HeldOutResult(
        loss=nll_nats / scored,
        token_accuracy=100.0 * correct / scored,
        bits_per_byte=text_nll_nats / math.log(2) / max(text_bytes, 1),
        documents=count, chunks=num_chunks, target_tokens=scored, text_tokens=text_tokens, text_bytes=text_bytes,
        inputs_length=inputs_length, targets_length=corruption.targets_length, noise_density=noise_density,
        mean_noise_span_length=mean_noise_span_length, seed=seed,
    )


def format_heldout(result: HeldOutResult) -> str:
    """The numbers with the settings and counts that make them reproducible, as a few lines of text."""
    r = result
    return (
        f"span corruption: noise density {r.noise_density}, mean span {r.mean_noise_span_length}, inputs "
        f"{r.inputs_length} / targets {r.targets_length} tokens, seed {r.seed}\n"
        f"data: {r.documents:,} documents -> {r.chunks:,} chunks, {r.target_tokens:,} target tokens "
        f"({r.text_tokens:,} of text spelling {r.text_bytes:,} bytes)\n"
        f"loss {r.loss:.4f} nats/token | token accuracy {r.token_accuracy:.2f}% | {r.bits_per_byte:.4f} bits/byte"
    )
