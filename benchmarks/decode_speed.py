"""Greedy decoding speed: t5lab vs transformers on the same random-weight model, side by side.

Both generate exactly `--new-tokens` tokens (min_new_tokens = max_new_tokens: no early EOS) from the same
random inputs; the script checks that they produce the same tokens, then reports the median over
`--repeats` timed runs (after one warm-up) as ms per generated position and new tokens/s, and the ratio.
Runs alternate between the two libraries so that CPU drift hits both alike.

    PYTHONPATH=src python benchmarks/decode_speed.py --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch

from t5lab.generate import generate
from t5lab.kernels import apply
from t5lab.model import build_model
from t5lab.shapes import from_name


def hf_twin(model):
    """transformers' T5 with the same weights, through t5lab's own checkpoint writer."""
    from transformers import T5ForConditionalGeneration

    from t5lab.interop.hf import save_pretrained

    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        return T5ForConditionalGeneration.from_pretrained(tmp).eval()


def time_pair(model, hf, ids: torch.Tensor, n: int, repeats: int) -> tuple[bool, float, float]:
    """Median seconds of t5lab's and transformers' greedy generation of exactly n tokens, and whether they agree."""
    mask = torch.ones_like(ids)

    def ours():
        return generate(model, ids, mask, max_new_tokens=n, min_new_tokens=n)

    def theirs():
        with torch.inference_mode():
            out = hf.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                              do_sample=False, num_beams=1, decoder_start_token_id=0, pad_token_id=0,
                              eos_token_id=model.config.eos_token_id)
        return out[:, 1:]

    same = torch.equal(ours(), theirs())  # also the warm-up
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    for _ in range(repeats):
        for name, fn in (("ours", ours), ("theirs", theirs)):
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return same, statistics.median(times["ours"]), statistics.median(times["theirs"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=["t5-efficient-tiny", "t5-efficient-small"])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--input-length", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {args.threads} threads, "
          f"{args.input_length} input / {args.new_tokens} new tokens, median of {args.repeats}")
    print(f"{'shape':<32} {'batch':>5} {'t5lab ms/tok':>12} {'hf ms/tok':>10} {'t5lab tok/s':>11} "
          f"{'hf tok/s':>9} {'ratio':>6} same")
    n = args.new_tokens
    for shape in args.shapes:
        model = build_model(from_name(shape, dropout=0.0), seed=0)
        model = apply(model, device="cpu", training=False).eval()
        hf = hf_twin(model)
        for batch in args.batch_sizes:
            ids = torch.randint(2, model.config.vocab_size, (batch, args.input_length),
                                generator=torch.Generator().manual_seed(batch))
            same, t_ours, t_hf = time_pair(model, hf, ids, n, args.repeats)
            print(f"{shape:<32} {batch:>5} {t_ours / n * 1e3:>12.2f} {t_hf / n * 1e3:>10.2f} "
                  f"{batch * n / t_ours:>11.0f} {batch * n / t_hf:>9.0f} {t_hf / t_ours:>6.2f} "
                  f"{'yes' if same else 'NO'}", flush=True)


if __name__ == "__main__":
    main()
