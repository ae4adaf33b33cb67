"""A fused attention kernel for T5's learned relative position bias, forward and backward, in Triton.

FlashAttention-2's tiling (online softmax over key tiles, each query row's max and log-sum kept for the backward,
scores and probabilities recomputed there), with T5's specifics done inside each tile instead of reading a dense
[B, H, T, S] bias:

* the bias of a score is table[bucket(key position - query position), head], the bucket computed in the tile;
* scale 1 (T5 folds 1/sqrt(d) into its initialisation);
* a per-key padding mask, a causal flag and a query offset (KV-cached decoding: the queries sit after the cache);
* K/V heads G dividing the query heads H (G = 1 for the shared-head `-sh` shapes): dK and dV sum over the group
  in one program, without atomics;
* the table's gradient: each (query tile, head) program reduces dS per bucket in its tiles into a
  [num_buckets] partial, the partials are summed afterwards, so 32 cells never see contended atomics.

Memory is linear in length: besides the inputs and gradients only each row's max and log-sum [2, B, H, T] and the bucket
partials [B * H, T / BLOCK_M, num_buckets] are kept. Softmax and all accumulation are fp32 for bf16, fp16 and
fp32 inputs. This is the dropout-0 path: `supports` says no when dropout is asked for, and the caller keeps
the eager attention (nanoT5 pre-trains with dropout 0; fine-tuning at 0.1 stays eager).

Buckets: T5's bucket function takes a float log of the distance, and near bucket edges (distance 16, 32, 64
with the default 32 buckets and max distance 128, where the exact log ratio is an integer) the last float bit
decides the bucket, and a GPU's fast log differs from torch's in that bit. So the kernel takes no log: the
model's own `relative_position_bucket`, run once on the device, gives the distances at which each log bucket
starts, and the kernel counts how many of those a distance reaches. That matches the model's function exactly,
by construction (tests check every distance from -4096 to 4096).

Nothing here runs on import; on CPU the kernel runs only under Triton's interpreter (`TRITON_INTERPRET=1`),
which the tests use to check the algorithm against `reference_attention`.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import triton
import triton.language as tl

from t5lab.model.layers import relative_position_bucket

# Padding keys get this score instead of -inf, as the eager path adds the dtype's minimum: a row whose keys are
# all padding then averages them uniformly, as eager does, instead of dividing 0 by 0.
_PADDED_SCORE: tl.constexpr = tl.constexpr(-1.0e30)  # a kernel may read only constexpr globals
_SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


@triton.jit
def _bucket(
    rel, thresholds_ptr, BIDIRECTIONAL: tl.constexpr, HALF: tl.constexpr, MAX_EXACT: tl.constexpr,
    LOG_BASE: tl.constexpr, NUM_THRESHOLDS: tl.constexpr,
):
    """relative_position_bucket(rel) for an int32 tile, the log buckets counted against the thresholds."""
    if BIDIRECTIONAL:
        sign_offset = tl.where(rel > 0, HALF, 0)
        distance = tl.abs(rel)
    else:
        sign_offset = tl.zeros_like(rel)
        distance = tl.maximum(-rel, 0)
    log_bucket = tl.zeros_like(rel) + LOG_BASE
    for j in tl.static_range(NUM_THRESHOLDS):
        log_bucket += (distance >= tl.load(thresholds_ptr + j)).to(tl.int32)
    return sign_offset + tl.where(distance < MAX_EXACT, distance, log_bucket)


@triton.jit
def _bucket_kernel(
    rel_ptr, out_ptr, n, thresholds_ptr, BIDIRECTIONAL: tl.constexpr, HALF: tl.constexpr, MAX_EXACT: tl.constexpr,
    LOG_BASE: tl.constexpr, NUM_THRESHOLDS: tl.constexpr, BLOCK: tl.constexpr,
):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    rel = tl.load(rel_ptr + offs, mask=offs < n, other=0)
    bucket = _bucket(rel, thresholds_ptr, BIDIRECTIONAL, HALF, MAX_EXACT, LOG_BASE, NUM_THRESHOLDS)
    tl.store(out_ptr + offs, bucket, mask=offs < n)


@triton.jit
def _dot(a, b, DOT_PRECISION: tl.constexpr):
    """a @ b with fp32 accumulation. DOT_PRECISION "upcast" multiplies in fp32 operands that were rounded to
    bf16 already: what a tensor core computes, and the only way Triton 3.6's interpreter gets bf16 dots right
    (it multiplies their raw bits)."""
    if DOT_PRECISION == "upcast":
        return tl.dot(a.to(tl.float32), b.to(tl.float32), input_precision="ieee")
    else:
        return tl.dot(a, b, input_precision=DOT_PRECISION)


@triton.jit
def _biased_scores(
    s, offs_m, offs_n, b, h, H, T, S, query_offset, table_ptr, thresholds_ptr, mask_ptr, stride_mask_b,
    BIDIRECTIONAL: tl.constexpr, HALF: tl.constexpr, MAX_EXACT: tl.constexpr, LOG_BASE: tl.constexpr,
    NUM_THRESHOLDS: tl.constexpr, HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr,
):
    """Scores q.k of one tile plus the relative bias, with masked keys set aside; also the tile's buckets."""
    query_position = query_offset + offs_m
    rel = offs_n[None, :] - query_position[:, None]
    bucket = _bucket(rel, thresholds_ptr, BIDIRECTIONAL, HALF, MAX_EXACT, LOG_BASE, NUM_THRESHOLDS)
    s = s + tl.load(table_ptr + bucket * H + h)
    if HAS_MASK:
        keep = tl.load(mask_ptr + b * stride_mask_b + offs_n, mask=offs_n < S, other=0)
        s = tl.where(keep[None, :] != 0, s, _PADDED_SCORE)
    valid = offs_n[None, :] < S
    if CAUSAL:
        valid = valid & (offs_n[None, :] <= query_position[:, None])
    return tl.where(valid, s, float("-inf")), bucket


@triton.jit
def _forward_kernel(
    q_ptr, k_ptr, v_ptr, o_ptr, stats_ptr, table_ptr, thresholds_ptr, mask_ptr,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kg, stride_ks, stride_vb, stride_vg, stride_vs,
    stride_ob, stride_oh, stride_ot, stride_mask_b,
    H, T, S, K, query_offset, HEADS_PER_GROUP, stats_stride,
    BIDIRECTIONAL: tl.constexpr, HALF: tl.constexpr, MAX_EXACT: tl.constexpr, LOG_BASE: tl.constexpr,
    NUM_THRESHOLDS: tl.constexpr, HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    start_m = tl.program_id(0) * BLOCK_M
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    g = h // HEADS_PER_GROUP
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    q = tl.load(
        q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
        mask=(offs_m[:, None] < T) & (offs_d[None, :] < K), other=0.0,
    )
    k_base = k_ptr + b * stride_kb + g * stride_kg
    v_base = v_ptr + b * stride_vb + g * stride_vg
    # -1e30, not -inf: a row whose first tiles are all padding keys must not compute exp(-inf - -inf).
    m_i = tl.zeros([BLOCK_M], dtype=tl.float32) + _PADDED_SCORE
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    end_n = S
    if CAUSAL:
        end_n = tl.minimum(S, query_offset + start_m + BLOCK_M)
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n[:, None] < S) & (offs_d[None, :] < K)
        k = tl.load(k_base + offs_n[:, None] * stride_ks + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vs + offs_d[None, :], mask=kv_mask, other=0.0)
        s = _dot(q, tl.trans(k), DOT_PRECISION)
        s, _ = _biased_scores(
            s, offs_m, offs_n, b, h, H, T, S, query_offset, table_ptr, thresholds_ptr, mask_ptr, stride_mask_b,
            BIDIRECTIONAL, HALF, MAX_EXACT, LOG_BASE, NUM_THRESHOLDS, HAS_MASK, CAUSAL,
        )
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, axis=1)
        acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v, DOT_PRECISION)
        m_i = m_new
    acc = acc / l_i[:, None]
    tl.store(
        o_ptr + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_ot + offs_d[None, :],
        acc.to(o_ptr.dtype.element_ty), mask=(offs_m[:, None] < T) & (offs_d[None, :] < K),
    )
    # The row's max and log-sum apart, not their sum: for a row of padding only, -1e30 + log(l) would be -1e30.
    tl.store(stats_ptr + bh * T + offs_m, m_i, mask=offs_m < T)
    tl.store(stats_ptr + stats_stride + bh * T + offs_m, tl.log(l_i), mask=offs_m < T)


@triton.jit
def _backward_dkdv_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, stats_ptr, delta_ptr, dk_ptr, dv_ptr, table_ptr, thresholds_ptr, mask_ptr,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kg, stride_ks, stride_vb, stride_vg, stride_vs,
    stride_dob, stride_doh, stride_dot, stride_mask_b,
    H, G, T, S, K, query_offset, HEADS_PER_GROUP, stats_stride,
    BIDIRECTIONAL: tl.constexpr, HALF: tl.constexpr, MAX_EXACT: tl.constexpr, LOG_BASE: tl.constexpr,
    NUM_THRESHOLDS: tl.constexpr, HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dK, dV of one key tile of one K/V head: sums over every query tile of every query head in its group."""
    start_n = tl.program_id(0) * BLOCK_N
    bg = tl.program_id(1)
    b = bg // G
    g = bg % G
    offs_n = start_n + tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    kv_mask = (offs_n[:, None] < S) & (offs_d[None, :] < K)
    k = tl.load(k_ptr + b * stride_kb + g * stride_kg + offs_n[:, None] * stride_ks + offs_d[None, :],
                mask=kv_mask, other=0.0)
    v = tl.load(v_ptr + b * stride_vb + g * stride_vg + offs_n[:, None] * stride_vs + offs_d[None, :],
                mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    start_m0 = 0
    if CAUSAL:  # queries before this key tile cannot see it
        start_m0 = (tl.maximum(start_n - query_offset, 0) // BLOCK_M) * BLOCK_M
    for head_in_group in range(0, HEADS_PER_GROUP):
        h = g * HEADS_PER_GROUP + head_in_group
        bh = b * H + h
        for start_m in range(start_m0, T, BLOCK_M):
            offs_m = start_m + tl.arange(0, BLOCK_M)
            row_mask = (offs_m[:, None] < T) & (offs_d[None, :] < K)
            q = tl.load(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                        mask=row_mask, other=0.0)
            do = tl.load(do_ptr + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                         mask=row_mask, other=0.0)
            # +inf for rows past T: their probabilities come out 0 rather than exp(bias)
            row_max = tl.load(stats_ptr + bh * T + offs_m, mask=offs_m < T, other=float("inf"))
            row_log_sum = tl.load(stats_ptr + stats_stride + bh * T + offs_m, mask=offs_m < T, other=0.0)
            delta = tl.load(delta_ptr + bh * T + offs_m, mask=offs_m < T, other=0.0)
            s = _dot(q, tl.trans(k), DOT_PRECISION)
            s, _ = _biased_scores(
                s, offs_m, offs_n, b, h, H, T, S, query_offset, table_ptr, thresholds_ptr, mask_ptr,
                stride_mask_b, BIDIRECTIONAL, HALF, MAX_EXACT, LOG_BASE, NUM_THRESHOLDS, HAS_MASK, CAUSAL,
            )
            p = tl.exp(s - row_max[:, None] - row_log_sum[:, None])
            dv += _dot(tl.trans(p.to(do.dtype)), do, DOT_PRECISION)
            dp = _dot(do, tl.trans(v), DOT_PRECISION)
            ds = p * (dp - delta[:, None])
            dk += _dot(tl.trans(ds.to(q.dtype)), q, DOT_PRECISION)
    out_offsets = b * stride_kb + g * stride_kg + offs_n[:, None] * stride_ks + offs_d[None, :]
    tl.store(dk_ptr + out_offsets, dk.to(dk_ptr.dtype.element_ty), mask=kv_mask)
    tl.store(dv_ptr + b * stride_vb + g * stride_vg + offs_n[:, None] * stride_vs + offs_d[None, :],
             dv.to(dv_ptr.dtype.element_ty), mask=kv_mask)


@triton.jit
def _backward_dq_kernel(
    q_ptr, k_ptr, v_ptr, do_ptr, stats_ptr, delta_ptr, dq_ptr, partials_ptr, table_ptr, thresholds_ptr, mask_ptr,
    stride_qb, stride_qh, stride_qt, stride_kb, stride_kg, stride_ks, stride_vb, stride_vg, stride_vs,
    stride_dob, stride_doh, stride_dot, stride_mask_b,
    H, T, S, K, query_offset, HEADS_PER_GROUP, stats_stride, NUM_BUCKETS,
    BIDIRECTIONAL: tl.constexpr, HALF: tl.constexpr, MAX_EXACT: tl.constexpr, LOG_BASE: tl.constexpr,
    NUM_THRESHOLDS: tl.constexpr, HAS_MASK: tl.constexpr, CAUSAL: tl.constexpr, DOT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_BUCKETS: tl.constexpr,
):
    """dQ of one query tile of one head, and that tile's dS summed per bucket (its share of the table's grad)."""
    pid_m = tl.program_id(0)
    start_m = pid_m * BLOCK_M
    bh = tl.program_id(1)
    b = bh // H
    h = bh % H
    g = h // HEADS_PER_GROUP
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_mask = (offs_m[:, None] < T) & (offs_d[None, :] < K)
    q = tl.load(q_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
                mask=row_mask, other=0.0)
    do = tl.load(do_ptr + b * stride_dob + h * stride_doh + offs_m[:, None] * stride_dot + offs_d[None, :],
                 mask=row_mask, other=0.0)
    row_max = tl.load(stats_ptr + bh * T + offs_m, mask=offs_m < T, other=float("inf"))
    row_log_sum = tl.load(stats_ptr + stats_stride + bh * T + offs_m, mask=offs_m < T, other=0.0)
    delta = tl.load(delta_ptr + bh * T + offs_m, mask=offs_m < T, other=0.0)
    k_base = k_ptr + b * stride_kb + g * stride_kg
    v_base = v_ptr + b * stride_vb + g * stride_vg
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    offs_r = tl.arange(0, BLOCK_BUCKETS)
    table_grad = tl.zeros([BLOCK_BUCKETS], dtype=tl.float32)
    end_n = S
    if CAUSAL:
        end_n = tl.minimum(S, query_offset + start_m + BLOCK_M)
    for start_n in range(0, end_n, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        kv_mask = (offs_n[:, None] < S) & (offs_d[None, :] < K)
        k = tl.load(k_base + offs_n[:, None] * stride_ks + offs_d[None, :], mask=kv_mask, other=0.0)
        v = tl.load(v_base + offs_n[:, None] * stride_vs + offs_d[None, :], mask=kv_mask, other=0.0)
        s = _dot(q, tl.trans(k), DOT_PRECISION)
        s, bucket = _biased_scores(
            s, offs_m, offs_n, b, h, H, T, S, query_offset, table_ptr, thresholds_ptr, mask_ptr, stride_mask_b,
            BIDIRECTIONAL, HALF, MAX_EXACT, LOG_BASE, NUM_THRESHOLDS, HAS_MASK, CAUSAL,
        )
        p = tl.exp(s - row_max[:, None] - row_log_sum[:, None])
        dp = _dot(do, tl.trans(v), DOT_PRECISION)
        ds = p * (dp - delta[:, None])  # 0 outside the valid (row, key) pairs, as p is
        dq += _dot(ds.to(k.dtype), k, DOT_PRECISION)
        # Buckets only grow with the distance (per sign), so a tile holds a contiguous range of them, and a
        # tile far from the diagonal a single one: one masked reduction per bucket present.
        first = tl.min(tl.min(bucket, axis=1), axis=0)
        last = tl.max(tl.max(bucket, axis=1), axis=0)
        for r in range(first, last + 1):
            in_bucket = tl.sum(tl.sum(tl.where(bucket == r, ds, 0.0), axis=1), axis=0)
            table_grad += tl.where(offs_r == r, in_bucket, 0.0)
    tl.store(dq_ptr + b * stride_qb + h * stride_qh + offs_m[:, None] * stride_qt + offs_d[None, :],
             dq.to(dq_ptr.dtype.element_ty), mask=row_mask)
    num_m_tiles = tl.num_programs(0)
    tl.store(partials_ptr + (bh * num_m_tiles + pid_m) * NUM_BUCKETS + offs_r, table_grad,
             mask=offs_r < NUM_BUCKETS)


@functools.lru_cache(maxsize=32)
def _bucket_thresholds(
    bidirectional: bool, num_buckets: int, max_distance: int, device: torch.device
) -> tuple[torch.Tensor, int, int, int]:
    """(thresholds, half, max_exact, log_base): the distances at which each log bucket starts, from the model's
    own function on this device (so a GPU matches the model on that GPU), and the constants around them."""
    half = num_buckets // 2 if bidirectional else 0
    buckets_per_sign = num_buckets // 2 if bidirectional else num_buckets
    max_exact = buckets_per_sign // 2
    # Past max_distance every distance shares the last bucket; twice the span shows that the table has settled.
    distance = torch.arange(2 * max(max_distance, buckets_per_sign) + 2, device=device)
    by_distance = relative_position_bucket(-distance, bidirectional, num_buckets, max_distance).cpu()
    steps = by_distance[max_exact:].diff()
    if bool((steps < 0).any()) or int(by_distance[-1]) != int(by_distance[len(by_distance) // 2]):
        raise ValueError(f"relative_position_bucket is not monotone for {num_buckets} buckets, max distance "
                         f"{max_distance}; the fused kernel cannot count its buckets")
    log_base = int(by_distance[max_exact])
    # One threshold per bucket step: a bucket skipped over (a step of 2) repeats its threshold.
    thresholds = [
        max_exact + i + 1 for i, step in enumerate(steps.tolist()) for _ in range(step)
    ]
    return torch.tensor(thresholds, dtype=torch.int32, device=device), half, max_exact, log_base


def bucket_ids(relative_position: torch.Tensor, *, bidirectional: bool, num_buckets: int,
               max_distance: int) -> torch.Tensor:
    """The kernel's bucket function over an int tensor of (key - query) positions: what it computes inside its
    tiles, exposed so that tests compare it with the model's `relative_position_bucket` at every distance."""
    thresholds, half, max_exact, log_base = _bucket_thresholds(
        bidirectional, num_buckets, max_distance, relative_position.device)
    rel = relative_position.to(torch.int32).contiguous().view(-1)
    out = torch.empty_like(rel)
    block = 1024
    _bucket_kernel[(triton.cdiv(rel.numel(), block),)](
        rel, out, rel.numel(), thresholds, bidirectional, half, max_exact, log_base, len(thresholds), block)
    return out.view(relative_position.shape).long()


def _launch_config(head_dim_padded: int, device: torch.device) -> dict[str, int]:
    """Tile sizes. On CPU (the interpreter) small tiles, so that tiny test shapes still span several tiles.
    On CUDA FlashAttention-2's usual sizes; UNMEASURED: no GPU was at hand to tune them."""
    if device.type != "cuda":
        return {"BLOCK_M": 16, "BLOCK_N": 16}
    if head_dim_padded <= 64:
        return {"BLOCK_M": 64, "BLOCK_N": 64, "num_warps": 4, "num_stages": 2}
    return {"BLOCK_M": 64, "BLOCK_N": 32, "num_warps": 4, "num_stages": 1}


def _dot_precision(dtype: torch.dtype) -> str | None:
    """fp32 inputs multiply in full fp32, as eager does (not TF32); bf16 under the interpreter upcasts."""
    if dtype == torch.float32:
        return "ieee"
    if dtype == torch.bfloat16 and triton.knobs.runtime.interpret:
        return "upcast"
    return None


class _T5Attention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, table, bidirectional, num_buckets, max_distance, query_offset, key_padding_mask,
                causal):
        B, H, T, K = q.shape
        G, S = k.shape[1], k.shape[2]
        thresholds, half, max_exact, log_base = _bucket_thresholds(
            bidirectional, num_buckets, max_distance, q.device)
        # The kernels take strides, and the gradients are allocated like the inputs: keep the two layouts the model
        # makes ([B, H, T, K] and [B, T, H, K] transposed), copy anything else.
        q, k, v = (x if x.is_contiguous() or x.transpose(1, 2).is_contiguous() else x.contiguous() for x in (q, k, v))
        table_f32 = table.float().contiguous()
        mask = key_padding_mask.to(torch.int8).contiguous() if key_padding_mask is not None else None
        out = torch.empty_like(q)
        stats = torch.empty(2, B, H, T, device=q.device, dtype=torch.float32)  # row max, log row sum
        block_d = max(16, triton.next_power_of_2(K))
        config = _launch_config(block_d, q.device)
        constants = {
            "BIDIRECTIONAL": bidirectional, "HALF": half, "MAX_EXACT": max_exact, "LOG_BASE": log_base,
            "NUM_THRESHOLDS": len(thresholds), "HAS_MASK": mask is not None, "CAUSAL": causal,
            "DOT_PRECISION": _dot_precision(q.dtype), "BLOCK_D": block_d, **config,
        }
        mask_arg = mask if mask is not None else stats  # any pointer: never read without HAS_MASK
        mask_stride = mask.stride(0) if mask is not None else 0
        grid = (triton.cdiv(T, config["BLOCK_M"]), B * H)
        _forward_kernel[grid](
            q, k, v, out, stats, table_f32, thresholds, mask_arg,
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2), mask_stride,
            H, T, S, K, query_offset, H // G, B * H * T, **constants,
        )
        ctx.save_for_backward(q, k, v, out, stats, table_f32, thresholds, mask)
        ctx.constants = constants
        ctx.query_offset = query_offset
        ctx.num_buckets = num_buckets
        ctx.table_dtype = table.dtype
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, stats, table_f32, thresholds, mask = ctx.saved_tensors
        B, H, T, K = q.shape
        G, S = k.shape[1], k.shape[2]
        constants = ctx.constants
        do = grad_out if grad_out.stride(-1) == 1 else grad_out.contiguous()
        # D_i = rowsum(dO * O), as FlashAttention-2: dS = P * (dP - D) without a [T, S] pass.
        delta = (do.float() * out.float()).sum(-1).contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        mask_arg = mask if mask is not None else stats
        mask_stride = mask.stride(0) if mask is not None else 0
        strides = (
            q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
            v.stride(0), v.stride(1), v.stride(2), do.stride(0), do.stride(1), do.stride(2), mask_stride,
        )
        _backward_dkdv_kernel[(triton.cdiv(S, constants["BLOCK_N"]), B * G)](
            q, k, v, do, stats, delta, dk, dv, table_f32, thresholds, mask_arg, *strides,
            H, G, T, S, K, ctx.query_offset, H // G, B * H * T, **constants,
        )
        num_m_tiles = triton.cdiv(T, constants["BLOCK_M"])
        partials = torch.empty(B * H, num_m_tiles, ctx.num_buckets, device=q.device, dtype=torch.float32)
        _backward_dq_kernel[(num_m_tiles, B * H)](
            q, k, v, do, stats, delta, dq, partials, table_f32, thresholds, mask_arg, *strides,
            H, T, S, K, ctx.query_offset, H // G, B * H * T, ctx.num_buckets, **constants,
            BLOCK_BUCKETS=triton.next_power_of_2(ctx.num_buckets),
        )
        grad_table = partials.view(B, H, num_m_tiles, ctx.num_buckets).sum((0, 2)).t().to(ctx.table_dtype)
        return dq, dk, dv, grad_table, None, None, None, None, None, None


def t5_attention(
    q_BHTK: torch.Tensor, k_BGSK: torch.Tensor, v_BGSK: torch.Tensor, table_RH: torch.Tensor, *,
    bidirectional: bool, num_buckets: int, max_distance: int, query_offset: int = 0,
    key_padding_mask_BS: torch.Tensor | None = None, causal: bool = False,
) -> torch.Tensor:
    """Attention with T5's relative position bias computed in the kernel; differentiable in q, k, v, table.

    `table_RH` is the stack's [num_buckets, H] bias table; queries sit at positions query_offset.. and keys
    at 0..S-1; `key_padding_mask_BS` is 1 for keys to keep, 0 for padding. Check `supports` first.
    """
    return _T5Attention.apply(q_BHTK, k_BGSK, v_BGSK, table_RH, bidirectional, num_buckets, max_distance,
                              query_offset, key_padding_mask_BS, causal)


def supports(
    q_BHTK: torch.Tensor, k_BGSK: torch.Tensor, bias: Any = None, dropout_p: float = 0.0, *,
    head_dim: int | None = None, table_RH: torch.Tensor | None = None, num_buckets: int = 32,
    max_distance: int = 128,
) -> bool:
    """Whether `t5_attention` covers this call; False means the caller keeps the eager path.

    `bias` is the model's `AttentionBias` (its table and bucket settings are read from it), or None with the
    table and settings given by keyword."""
    return unsupported_reason(
        q_BHTK, k_BGSK, bias, dropout_p, head_dim=head_dim, table_RH=table_RH, num_buckets=num_buckets,
        max_distance=max_distance,
    ) is None


def unsupported_reason(
    q_BHTK: torch.Tensor, k_BGSK: torch.Tensor, bias: Any = None, dropout_p: float = 0.0, *,
    head_dim: int | None = None, table_RH: torch.Tensor | None = None, num_buckets: int = 32,
    max_distance: int = 128,
) -> str | None:
    """Why `t5_attention` does not cover this call, or None when it does.

    Covered: dropout 0 (the kernel has no dropout), a position bias table (cross-attention has none; SDPA
    serves it), bf16/fp16/fp32, head dims 16-128 (padded to a power of two inside), K/V heads dividing the
    query heads, a bucket function the kernel can count, and CUDA tensors (on CPU the kernel runs only under
    Triton's interpreter, for tests).
    """
    if bias is not None:
        table_RH, num_buckets, max_distance = bias.table_RH, bias.num_buckets, bias.max_distance
    head_dim = q_BHTK.shape[-1] if head_dim is None else head_dim
    if dropout_p > 0:
        return f"dropout {dropout_p} (the kernel is the dropout-0 path)"
    if table_RH is None:
        return "no position bias table (cross-attention: SDPA)"
    if q_BHTK.dtype not in _SUPPORTED_DTYPES or k_BGSK.dtype != q_BHTK.dtype:
        return f"dtypes {q_BHTK.dtype}/{k_BGSK.dtype} (supported: bf16, fp16, fp32, the same for q and k)"
    if not 16 <= head_dim <= 128:
        return f"head dim {head_dim} (supported: 16-128)"
    if q_BHTK.dim() != 4 or k_BGSK.dim() != 4 or q_BHTK.shape[1] % k_BGSK.shape[1] != 0:
        return f"shapes {tuple(q_BHTK.shape)}/{tuple(k_BGSK.shape)} (expected [B,H,T,K]/[B,G,S,K], G dividing H)"
    try:
        for bidirectional in (True, False):
            _bucket_thresholds(bidirectional, num_buckets, max_distance, q_BHTK.device)
    except ValueError as error:
        return str(error)
    if not (q_BHTK.is_cuda and k_BGSK.is_cuda):
        return f"device {q_BHTK.device.type} (the kernel runs on CUDA)"
    return None


def reference_attention(
    q_BHTK: torch.Tensor, k_BGSK: torch.Tensor, v_BGSK: torch.Tensor, table_RH: torch.Tensor, *,
    bidirectional: bool, num_buckets: int, max_distance: int, query_offset: int = 0,
    key_padding_mask_BS: torch.Tensor | None = None, causal: bool = False,
) -> torch.Tensor:
    """The same computation in plain torch with a dense [B|1, H, T, S] bias, fp32 softmax: what tests compare
    the kernel with."""
    B, H, T, _ = q_BHTK.shape
    S = k_BGSK.shape[2]
    device = q_BHTK.device
    query_position = torch.arange(query_offset, query_offset + T, device=device)
    rel_TS = torch.arange(S, device=device)[None, :] - query_position[:, None]
    bucket_TS = relative_position_bucket(rel_TS, bidirectional, num_buckets, max_distance)
    bias = table_RH.float()[bucket_TS].permute(2, 0, 1)[None]  # [1, H, T, S]
    minimum = torch.finfo(torch.float32).min
    if key_padding_mask_BS is not None:  # added, as the model adds its mask: the table still gets a gradient there
        bias = bias + torch.where(key_padding_mask_BS[:, None, None, :] == 0, minimum, 0.0)
    if causal:
        bias = bias.masked_fill(rel_TS > 0, minimum)
    k = k_BGSK.repeat_interleave(H // k_BGSK.shape[1], dim=1)
    v = v_BGSK.repeat_interleave(H // v_BGSK.shape[1], dim=1)
    scores = torch.matmul(q_BHTK.float(), k.float().transpose(-1, -2)) + bias
    return torch.matmul(torch.softmax(scores, dim=-1), v.float()).to(q_BHTK.dtype)
