"""`t5lab generate`: fill masked spans (or answer prompts) with a T5 checkpoint, as in the T5/Switch model cards.

    t5lab generate --model DIR --texts+ "The <extra_id_0> walks in <extra_id_1> park" --texts+ "..."
    t5lab generate --model DIR < inputs.txt          # one text per line

(`--texts '["a", "b"]'` works too; jsonargparse does not take bare words as a list.) It prints, per input, the input with each `<extra_id_N>` replaced by the span the model generated for it in
brackets, and the raw output.
"""

from __future__ import annotations

import re
import sys
from typing import cast

from t5lab.data.tokenizer import Tokenizer
from t5lab.errors import T5LabError

_DTYPES = ("float32", "bfloat16", "float16")
_SENTINEL = re.compile(r"<extra_id_(\d+)>")


def generate(
    texts: list[str] | None = None,
    model: str | None = None,
    max_new_tokens: int = 32,
    num_beams: int = 1,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    device: str = "auto",
    dtype: str = "auto",
    quantize: bool = False,
    tokenizer: str | None = None,
) -> None:
    """Generate text for each input (arguments, or lines of standard input when none are given).

    Args:
        texts: input texts; `<extra_id_N>` marks a span to fill.
        model: a Hugging Face checkpoint folder, or a registered shape name (random weights: needs --tokenizer).
        max_new_tokens: most tokens to generate per input.
        num_beams: beam search with this many beams (1: greedy, or sampling with --do_sample).
        do_sample: sample instead of taking the most probable tokens.
        temperature: sampling temperature.
        top_k: sample among the k most probable tokens (0: all).
        top_p: sample among the most probable tokens holding this much probability (1.0: all).
        seed: random seed for sampling (and for a random-weight model).
        device: "cpu", "cuda", "cuda:N", or "auto" (cuda when available).
        dtype: "float32", "bfloat16", "float16", or "auto" (bfloat16 on a GPU that has it, else float32).
            T5 overflows in float16; prefer bfloat16.
        quantize: int8 dynamic quantisation of the linear layers (CPU only).
        tokenizer: a spiece.model file or a folder holding one (default: the model folder's).
    """
    import torch

    from t5lab.device import resolve_device
    from t5lab.generate import generate as generate_ids
    from t5lab.generate import quantize_int8
    from t5lab.interop.hf import load_model
    from t5lab.kernels import apply
    from t5lab.model import T5
    from t5lab.recipes.sources import model_tokenizer

    if model is None:
        raise T5LabError("generate: give --model (a checkpoint folder or a shape name such as t5-efficient-tiny)")
    texts = list(texts or []) or _stdin_lines()
    if not texts:
        raise T5LabError("generate: no input text (give texts as arguments or one per line on standard input)")
    device = str(resolve_device(device, "--device"))
    torch_dtype = getattr(torch, _pick_dtype(dtype, device))
    if quantize and (device != "cpu" or torch_dtype != torch.float32):
        raise T5LabError("generate: --quantize is for float32 models on the CPU (int8 dynamic quantisation)")

    net = load_model(model, seed=seed, device=device, dtype=torch_dtype)  # first: it names a missing folder
    tok = model_tokenizer(model, tokenizer)
    if tok.vocab_size > net.config.vocab_size:
        raise T5LabError(
            f"tokenizer has {tok.vocab_size} ids but model '{model}' only {net.config.vocab_size} embeddings"
        )
    if quantize:
        # quantize_dynamic returns the same T5 with int8 linear layers swapped in
        net = cast("T5", quantize_int8(net))
    net = apply(net, device=device, training=False)  # after quantising: it converts plain nn.Linear only

    encoded = tok.encode_batch(texts)
    ids = torch.full((len(texts), max(map(len, encoded))), tok.pad_id, dtype=torch.long)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)] = torch.tensor(seq)
    mask = (torch.arange(ids.shape[1]) < torch.tensor([len(s) for s in encoded])[:, None]).long()
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate_ids(
        net, ids.to(device), mask.to(device), max_new_tokens=max_new_tokens, num_beams=num_beams,
        do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator,
    )
    for text, row in zip(texts, out.tolist(), strict=True):
        print(format_result(text, row, tok))


def format_result(text: str, output_ids: list[int], tok: Tokenizer) -> str:
    """Three lines: the input, the input with each sentinel replaced by its generated [span], the raw output."""
    if tok.eos_id in output_ids:
        output_ids = output_ids[: output_ids.index(tok.eos_id)]
    raw = tok.decode(output_ids, skip_special_tokens=False)
    if not _SENTINEL.search(text):
        return f"> {text}\n  {tok.decode(output_ids)}"
    spans = spans_by_sentinel(output_ids, tok)
    filled = _SENTINEL.sub(lambda m: f"[{spans.get(int(m.group(1)), '?')}]", text)
    return f"> {text}\n  {filled}\n  raw: {raw}"


def spans_by_sentinel(output_ids: list[int], tok: Tokenizer) -> dict[int, str]:
    """T5's span-corruption target `<extra_id_0> a <extra_id_1> b ...` as {0: "a", 1: "b"}."""
    spans: dict[int, list[int]] = {}
    current = None
    for i in output_ids:
        if tok.is_sentinel(i):
            current = tok.vocab_size - 1 - i  # sentinels count down from the last id
            spans[current] = []
        elif current is not None:
            spans[current].append(i)
    return {n: tok.decode(span).strip() for n, span in spans.items()}


def _stdin_lines() -> list[str]:
    if sys.stdin is None or sys.stdin.isatty():  # never wait on a terminal nobody is typing into
        return []
    return [line.strip() for line in sys.stdin if line.strip()]


def _pick_dtype(dtype: str, device: str) -> str:
    """The torch dtype's name: `dtype`, or for "auto" bfloat16 on a GPU that computes it, else float32."""
    if dtype == "auto":
        import torch

        on_gpu = device.startswith("cuda")
        return "bfloat16" if on_gpu and torch.cuda.is_bf16_supported() else "float32"
    if dtype not in _DTYPES:
        raise T5LabError(f"generate: --dtype {dtype!r}: expected auto, {', '.join(_DTYPES)}")
    return dtype
