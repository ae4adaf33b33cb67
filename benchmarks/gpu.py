"""GPU benchmarks of issue 17 in one run: t5lab vs transformers (eager and + torch.compile) on one CUDA device.

Rows (each a JSON line, printed as soon as measured, then the ratios):
  train/t5-v1_1-base      batch 64, inputs 512 / targets 114: transformers eager, transformers + compile,
                          t5lab, t5lab + compile (input tokens/s, peak GB)
  train/switch-base-8     batch 32: transformers eager, t5lab
  decode/t5-v1_1-base     greedy, bf16 weights, batch 1 and 32, 64 new tokens: transformers, t5lab (ms/token)
  train/t5-efficient-small-nl16 vs train/t5-efficient-base   batch 64, t5lab (the ratio the paper puts at ~1.4x)
All random weights, bf16 autocast for training, fused AdamW (t5lab: its trainer's `build_optimizer`), dropout 0.
t5lab models get `t5lab.kernels.apply(model, device=...)` when that exists (the fused attention kernel on CUDA),
else the "fused" attention backend. Sized to finish in about 8 minutes on one H200; `--quick` for a smoke run.

    PYTHONPATH=src python benchmarks/gpu.py [--quick] [--only train decode ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch

from t5lab.config import ModelConfig
from t5lab.generate import GenerationConfig, generate
from t5lab.model import build_model
from t5lab.train.config import TrainConfig
from t5lab.train.optim import build_optimizer

DEVICE = torch.device("cuda")
SMOKE = False  # --smoke: tiny shapes on CPU, no compile, to check that the script runs end to end


def shape(name: str) -> ModelConfig:
    config = ModelConfig.from_name(name).replace(dropout=0.0)
    if SMOKE:
        return config.replace(vocab_size=512, d_model=64, d_ff=128, d_kv=16, num_heads=4, num_encoder_layers=2,
                              num_decoder_layers=2)
    return config


def synchronize() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def peak_gb() -> float | None:
    return round(torch.cuda.max_memory_allocated() / 1e9, 1) if DEVICE.type == "cuda" else None


def t5lab_model(config: ModelConfig, dtype: torch.dtype | None = None):
    """The plain model with t5lab's speed paths: `t5lab.kernels.apply` (the fused attention kernel on CUDA) where
    it exists, else the model's own "fused" attention backend."""
    model = build_model(config, seed=0, device=DEVICE, dtype=dtype)
    try:
        from t5lab.kernels import apply
    except ImportError:
        return model.set_attention_backend("fused"), "fused backend"
    return apply(model, device=DEVICE), "kernels.apply"


def hf_model(config: ModelConfig, attention: str, dtype: torch.dtype | None = None):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(**config.to_hf(), attn_implementation=attention))
    return model.to(DEVICE, dtype=dtype)


def train_row(name: str, model, hf: bool, batch: int, input_length: int, target_length: int, steps: int,
              warmup: int, compile_model: bool) -> dict:
    vocab = model.config.vocab_size
    g = torch.Generator(device=DEVICE).manual_seed(0)
    ids = torch.randint(2, vocab, (batch, input_length), device=DEVICE, generator=g)
    labels = torch.randint(2, vocab, (batch, target_length), device=DEVICE, generator=g)
    optimizer = (torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True) if hf
                 else build_optimizer(model, TrainConfig(optimizer="adamw", lr=1e-4), DEVICE))
    model.train()
    forward = torch.compile(model) if compile_model else model

    def step() -> None:
        with torch.autocast(DEVICE.type, dtype=torch.bfloat16):
            out = forward(input_ids=ids, labels=labels) if hf else forward(ids, labels=labels)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for _ in range(warmup):
        step()
    synchronize()
    warmup_s = time.perf_counter() - start
    if DEVICE.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        begin = time.perf_counter()
        step()
        synchronize()
        times.append(time.perf_counter() - begin)
    median = statistics.median(times)
    return {"row": name, "input_tokens_per_s": round(batch * input_length / median),
            "ms_per_step": round(median * 1000, 1), "peak_gb": peak_gb(), "warmup_s": round(warmup_s, 1)}


def decode_row(name: str, run: Callable[[], torch.Tensor], new_tokens: int, repeats: int) -> tuple[dict, torch.Tensor]:
    tokens = run()  # warm-up (and the tokens, to compare the libraries)
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        run()
        synchronize()
        times.append(time.perf_counter() - start)
    return {"row": name, "ms_per_token": round(statistics.median(times) / new_tokens * 1000, 2)}, tokens


def emit(rows: list[dict], row: dict, **extra) -> None:
    row = {**row, **extra}
    rows.append(row)
    print(json.dumps(row), flush=True)


def run_training(rows: list[dict], args, free: Callable[[], None]) -> None:
    base = shape("t5-v1_1-base")
    lengths = (args.input_length, args.target_length)
    for label, hf, compile_model, attention in [
        ("transformers eager", True, False, "eager"),
        ("transformers + compile", True, True, "sdpa"),
        ("t5lab", False, False, None),
        ("t5lab + compile", False, True, None),
    ]:
        if compile_model and SMOKE:
            continue
        model, path = (hf_model(base, attention), attention) if hf else t5lab_model(base)
        emit(rows, train_row(f"train/t5-v1_1-base/{label}", model, hf, args.batch, *lengths, args.steps,
                             args.warmup, compile_model), attention=path)
        del model
        free()
    switch = shape("switch-base-8")
    for label, hf in [("transformers eager", True), ("t5lab", False)]:
        model, path = (hf_model(switch, "eager"), "eager") if hf else t5lab_model(switch)
        emit(rows, train_row(f"train/switch-base-8/{label}", model, hf, args.batch // 2, *lengths, args.steps,
                             args.warmup, False), attention=path)
        del model
        free()
    for name in ("t5-efficient-small-nl16", "t5-efficient-base"):
        model, path = t5lab_model(shape(name))
        emit(rows, train_row(f"train/{name}/t5lab", model, False, args.batch, *lengths, args.steps, args.warmup,
                             False), attention=path)
        del model
        free()


def run_decoding(rows: list[dict], args, free: Callable[[], None]) -> None:
    config = shape("t5-v1_1-base")
    ours, path = t5lab_model(config, dtype=torch.bfloat16)
    ours.eval()
    theirs = hf_twin(ours)
    n = args.new_tokens
    for batch in (1, 32):
        g = torch.Generator(device=DEVICE).manual_seed(0)
        ids = torch.randint(2, config.vocab_size, (batch, args.input_length), device=DEVICE, generator=g)
        mask = torch.ones_like(ids)
        greedy = GenerationConfig(max_new_tokens=n, min_new_tokens=n)

        def run_ours(ids=ids, mask=mask, greedy=greedy):
            return generate(ours, ids, mask, config=greedy)

        def run_theirs(ids=ids, mask=mask):
            with torch.inference_mode():
                return theirs.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                                       do_sample=False, num_beams=1)

        row_theirs, tokens_theirs = decode_row(f"decode/t5-v1_1-base/batch{batch}/transformers", run_theirs, n,
                                               args.repeats)
        emit(rows, row_theirs)
        row_ours, tokens_ours = decode_row(f"decode/t5-v1_1-base/batch{batch}/t5lab", run_ours, n, args.repeats)
        same = _same_tokens(tokens_ours, tokens_theirs, n)
        emit(rows, row_ours, attention=path, same_tokens_as_transformers=same)


def hf_twin(model):
    """transformers' T5 with the same (bf16) weights, through t5lab's own checkpoint writer; SDPA attention."""
    import tempfile

    from transformers import T5ForConditionalGeneration

    from t5lab.interop.hf import save_pretrained

    with tempfile.TemporaryDirectory() as tmp:
        save_pretrained(model, tmp)
        twin = T5ForConditionalGeneration.from_pretrained(tmp, attn_implementation="sdpa", dtype=torch.bfloat16)
    return twin.to(DEVICE).eval()


def _same_tokens(ours, theirs, new_tokens: int) -> bool | None:
    """Whether both produced the same new tokens (bf16 may differ at near-ties; transformers' output also holds
    the decoder start token); None when they cannot be compared."""
    ours = getattr(ours, "sequences", ours)
    theirs = getattr(theirs, "sequences", theirs)
    if not (isinstance(ours, torch.Tensor) and isinstance(theirs, torch.Tensor)):
        return None
    ours, theirs = ours[:, -new_tokens:], theirs[:, -new_tokens:]
    return bool((ours == theirs).all()) if ours.shape == theirs.shape else None


def ratios(rows: list[dict]) -> dict[str, float]:
    def value(name: str, key: str) -> float | None:
        return next((row[key] for row in rows if row["row"] == name and key in row), None)

    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 2) if a and b else None

    train = "train/t5-v1_1-base/"
    speed = "input_tokens_per_s"
    return {
        "t5lab / transformers eager (train base)": ratio(value(train + "t5lab", speed), value(train + "transformers eager", speed)),
        "t5lab + compile / transformers + compile (train base, target >= 2.0)": ratio(
            value(train + "t5lab + compile", speed), value(train + "transformers + compile", speed)),
        "t5lab peak / transformers eager peak (target <= 0.6)": ratio(
            value(train + "t5lab + compile", "peak_gb"), value(train + "transformers eager", "peak_gb")),
        "switch-base-8 t5lab / transformers eager (target >= 3)": ratio(
            value("train/switch-base-8/t5lab", speed), value("train/switch-base-8/transformers eager", speed)),
        "small-nl16 / efficient-base (paper ~1.4)": ratio(
            value("train/t5-efficient-small-nl16/t5lab", speed), value("train/t5-efficient-base/t5lab", speed)),
        "decode batch 1 transformers / t5lab ms per token": ratio(
            value("decode/t5-v1_1-base/batch1/transformers", "ms_per_token"),
            value("decode/t5-v1_1-base/batch1/t5lab", "ms_per_token")),
        "decode batch 32 transformers / t5lab ms per token (target >= 10)": ratio(
            value("decode/t5-v1_1-base/batch32/transformers", "ms_per_token"),
            value("decode/t5-v1_1-base/batch32/t5lab", "ms_per_token")),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", choices=["train", "decode"], default=["train", "decode"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--input-length", type=int, default=512)
    parser.add_argument("--target-length", type=int, default=114)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="batch 8, 3 steps, 1 warm-up, 16 tokens")
    parser.add_argument("--smoke", action="store_true", help="--quick with tiny shapes on CPU, no compile rows")
    args = parser.parse_args()
    global DEVICE, SMOKE
    if args.smoke:
        DEVICE, SMOKE, args.quick, args.input_length, args.target_length = torch.device("cpu"), True, True, 64, 16
    elif not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py needs a CUDA device; none found (the CPU benchmarks are train_speed.py, "
                 "decode_speed.py, switch_train_speed.py).")
    if args.quick:
        args.batch, args.steps, args.warmup, args.new_tokens, args.repeats = 8, 3, 1, 16, 1
    torch.backends.cuda.matmul.allow_tf32 = True

    def free() -> None:
        synchronize()
        if DEVICE.type == "cuda":
            torch.cuda.empty_cache()
        torch._dynamo.reset()

    device_name = torch.cuda.get_device_name() if DEVICE.type == "cuda" else "cpu (smoke run)"
    print(json.dumps({"device": device_name, "torch": torch.__version__,
                      "transformers": __import__("transformers").__version__}), flush=True)
    rows: list[dict] = []
    start = time.perf_counter()
    if "train" in args.only:
        run_training(rows, args, free)
    if "decode" in args.only:
        run_decoding(rows, args, free)
    print(json.dumps({"ratios": ratios(rows), "seconds": round(time.perf_counter() - start)}), flush=True)


if __name__ == "__main__":
    main()
