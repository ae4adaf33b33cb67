"""One T5 self-attention layer's attention, forward + backward: the fused Triton kernel vs eager, SDPA and
FlexAttention (issue 17's micro-benchmark). Needs CUDA.

Default shape: batch 64, 512 tokens, 12 heads, head dim 64, bf16, encoder (bidirectional) buckets 32 / 128.
Every variant computes d(q, k, v) and, where the bias is learned, d(table):
  eager           explicit scores + dense [1, H, T, S] bias gathered from the table, fp32 softmax (the model's
                  reference path);
  sdpa-no-bias    PyTorch's flash kernel without any bias: the floor, not T5;
  sdpa-dense-bias SDPA with the dense bias as a mask (PyTorch's fused kernels return no bias gradient, so it
                  falls back to the efficient/math path);
  flex-table      FlexAttention whose score_mod reads the [buckets, heads] table (atomics into its gradient);
  triton          t5lab.kernels.triton_attention.t5_attention.
Prints one JSON row per variant (ms per forward + backward, median of --iters after --warmup) and the
ratio to eager. Run:  python benchmarks/attention.py [--batch 64 --length 512 --heads 12 --head-dim 64]
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

from t5lab.model.layers import relative_position_bucket


def _dense_bias(table_RH: torch.Tensor, length: int, num_buckets: int, max_distance: int) -> torch.Tensor:
    position = torch.arange(length, device=table_RH.device)
    bucket = relative_position_bucket(position[None, :] - position[:, None], True, num_buckets, max_distance)
    return table_RH[bucket].permute(2, 0, 1)[None]  # [1, H, T, S], differentiable in the table


def variants(num_buckets: int, max_distance: int) -> dict[str, Callable]:
    def eager(q, k, v, table):
        scores = torch.matmul(q, k.transpose(-1, -2)).float() + _dense_bias(table, q.shape[2], num_buckets, max_distance)
        return torch.matmul(torch.softmax(scores, dim=-1).to(q.dtype), v)

    def sdpa_no_bias(q, k, v, table):
        return F.scaled_dot_product_attention(q, k, v, scale=1.0)

    def sdpa_dense_bias(q, k, v, table):
        bias = _dense_bias(table, q.shape[2], num_buckets, max_distance).to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=1.0)

    def flex_table(q, k, v, table):
        length = q.shape[2]
        position = torch.arange(length, device=q.device)
        bucket_of = relative_position_bucket(position - (length - 1), True, num_buckets, max_distance)  # by k - q
        bucket_of = torch.cat([bucket_of, relative_position_bucket(position[1:], True, num_buckets, max_distance)])

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + table[bucket_of[kv_idx - q_idx + length - 1], h]

        return _compiled_flex()(q, k, v, score_mod=score_mod, scale=1.0)

    def triton(q, k, v, table):
        from t5lab.kernels.triton_attention import t5_attention

        return t5_attention(q, k, v, table, bidirectional=True, num_buckets=num_buckets, max_distance=max_distance)

    return {"eager": eager, "sdpa-no-bias": sdpa_no_bias, "sdpa-dense-bias": sdpa_dense_bias,
            "flex-table": flex_table, "triton": triton}


@functools.cache
def _compiled_flex() -> Callable:
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention)


def time_ms(fn: Callable, inputs: list[torch.Tensor], warmup: int, iters: int) -> float:
    grad_out = None
    times = []
    for i in range(warmup + iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        out = fn(*inputs)
        grad_out = torch.ones_like(out) if grad_out is None else grad_out
        torch.autograd.grad(out, [x for x in inputs if x.requires_grad], grad_out)
        end.record()
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--only", nargs="*", help="variant names to run (default: all)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("benchmarks/attention.py needs a CUDA device (the kernel is Triton on GPU); none found.")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    torch.manual_seed(0)
    shape = (args.batch, args.heads, args.length, args.head_dim)
    inputs = [torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True) for _ in range(3)]
    inputs.append(torch.randn(32, args.heads, device="cuda", requires_grad=True))
    rows = {}
    for name, fn in variants(32, 128).items():
        if args.only and name not in args.only:
            continue
        try:
            torch.cuda.reset_peak_memory_stats()
            ms = time_ms(fn, inputs, args.warmup, args.iters)
            rows[name] = {"variant": name, "ms_fwd_bwd": round(ms, 3),
                          "peak_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2)}
        except Exception as error:  # one variant failing (e.g. FlexAttention's compile) must not hide the rest
            rows[name] = {"variant": name, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:200]}"}
        if "eager" in rows and "ms_fwd_bwd" in rows[name] and "ms_fwd_bwd" in rows["eager"]:
            rows[name]["vs_eager"] = round(rows["eager"]["ms_fwd_bwd"] / rows[name]["ms_fwd_bwd"], 2)
        print(json.dumps({**rows[name], "shape": list(shape), "dtype": args.dtype}), flush=True)


if __name__ == "__main__":
    main()
