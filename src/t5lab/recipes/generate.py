"""`t5lab generate`: fill masked spans (or answer prompts) with a T5 checkpoint, as in the T5/Switch model cards.

    t5lab generate --model DIR "The <extra_id_0> walks in <extra_id_1> park" "..."
    t5lab generate --model google/t5-v1_1-base - < inputs.txt      # one text per line ("-": standard input)
    t5lab generate --model DIR --prompts inputs.txt --stream       # print tokens as they are produced

It prints, per input, the input with each `<extra_id_N>` replaced by the span the model generated for it in
brackets, and the raw output. With `--stream` each input is generated alone (batch 1, greedy or sampling)
and its output is printed token by token as the decoder produces it.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, TextIO, cast

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
    prompts: str | None = None,
    stream: bool = False,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    max_input_length: int = 4096,
) -> None:
    """Generate text for each input (arguments, lines of --prompts FILE, or of standard input for `-` or when
    nothing else is given).

    Args:
        texts: input texts; `<extra_id_N>` marks a span to fill; `-` reads one per line from standard input.
        model: a Hugging Face checkpoint folder, a hub id (org/name, through the Hugging Face cache), or a
            registered shape name (random weights: needs --tokenizer).
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
        prompts: a text file with one input per line (blank lines skipped).
        stream: print each output token by token as it is produced (one input at a time; not with beams).
        repetition_penalty: > 1 discourages tokens already generated (transformers' definition; 1.0: off).
        no_repeat_ngram_size: never repeat an n-gram of this length in the output (0: off).
        max_input_length: longest input in tokens; a longer one is refused (never silently truncated).
    """
    import torch

    from t5lab.device import resolve_device
    from t5lab.generate import generate as generate_ids
    from t5lab.generate import quantize_int8
    from t5lab.interop.hub import resolve_checkpoint
    from t5lab.interop.loading import load_model
    from t5lab.kernels import apply
    from t5lab.model import T5
    from t5lab.recipes.sources import model_tokenizer

    if model is None:
        raise T5LabError("generate: give --model (a checkpoint folder, an org/name hub id or a shape name)")
    texts = _inputs(list(texts or []), prompts)
    if not texts:
        raise T5LabError("generate: no input text (give texts as arguments, --prompts FILE, or lines on standard input)")
    if stream and num_beams > 1:
        raise T5LabError("generate: --stream prints tokens as greedy decoding or sampling picks them; not with --num-beams")
    device = str(resolve_device(device, "--device"))
    torch_dtype = getattr(torch, _pick_dtype(dtype, device))
    if quantize and (device != "cpu" or torch_dtype != torch.float32):
        raise T5LabError("generate: --quantize is for float32 models on the CPU (int8 dynamic quantisation)")

    source = resolve_checkpoint(model) or model  # a hub id is looked up once
    net = load_model(source, seed=seed, device=device, dtype=torch_dtype)  # first: it names a missing folder
    tok = model_tokenizer(source, tokenizer)
    tok.check_fits(net.config.vocab_size, str(model))
    if quantize:
        # quantize_dynamic returns the same T5 with int8 linear layers swapped in
        net = cast("T5", quantize_int8(net))
    net = apply(net, device=device, training=False)  # after quantising: it converts plain nn.Linear only

    options: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=do_sample, temperature=temperature,
        top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
        max_input_length=max_input_length,
    )
    generator = torch.Generator(device=device).manual_seed(seed)
    if stream:
        for text in texts:
            print(f"> {text}\n  ", end="", flush=True)
            printer = TokenPrinter(tok)
            ids = torch.tensor([tok.encode(text)], device=device)
            out = generate_ids(net, ids, generator=generator, streamer=printer, **options)
            print()
            if _SENTINEL.search(text):  # the filled-in text needs the whole output
                print(format_result(text, out[0].tolist(), tok).splitlines()[1])
        return
    encoded = tok.encode_batch(texts)
    ids = torch.full((len(texts), max(map(len, encoded))), tok.pad_id, dtype=torch.long)
    for row, seq in enumerate(encoded):
        ids[row, : len(seq)] = torch.tensor(seq)
    mask = (torch.arange(ids.shape[1]) < torch.tensor([len(s) for s in encoded])[:, None]).long()
    out = generate_ids(net, ids.to(device), mask.to(device), generator=generator, **options)
    for text, row in zip(texts, out.tolist(), strict=True):
        print(format_result(text, row, tok))


class TokenPrinter:
    """A `generate` streamer for one row: prints the text each new token adds, as soon as it is produced.

    SentencePiece decodes a token differently by context (the word-start `▁` becomes a space only after
    other text), so the whole output so far is decoded each step and only its new suffix printed, as
    transformers' TextStreamer does. Sentinels are printed; EOS ends the output.
    """

    def __init__(self, tok: Tokenizer, file: TextIO | None = None) -> None:
        self.tok, self.file = tok, file
        self.ids: list[int] = []
        self.printed = ""
        self.ended = False

    def __call__(self, tokens_B: Any) -> None:  # a torch tensor [B] (torch is not imported at module level)
        token = int(tokens_B[0])
        if self.ended or token == self.tok.eos_id:
            self.ended = True
            return
        self.ids.append(token)
        text = self.tok.decode(self.ids, skip_special_tokens=False)
        if text.startswith(self.printed):
            print(text[len(self.printed):], end="", flush=True, file=self.file or sys.stdout)
            self.printed = text


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


def _inputs(texts: list[str], prompts: str | None) -> list[str]:
    """Arguments (`-` standing for the lines of standard input), then the lines of --prompts; standard input
    alone when neither is given and it is not a terminal."""
    if prompts is not None:
        path = Path(prompts)
        if not path.is_file():
            raise T5LabError(f"{path}: no such --prompts file (expected a text file, one input per line)")
        from_file = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    else:
        from_file = []
    if not texts and not from_file:
        return _stdin_lines(wait=False)
    expanded = [line for text in texts for line in (_stdin_lines(wait=True) if text == "-" else [text])]
    return expanded + from_file


def _stdin_lines(wait: bool) -> list[str]:
    if sys.stdin is None or (sys.stdin.isatty() and not wait):  # never wait on a terminal nobody was told to type into
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
