"""Measured speed of a model on a device: training and inference tokens/s, peak memory and MFU.

Method (what a reader of a result row needs to trust it):
- Every measurement runs `warmup` untimed repeats first (allocator growth, lazy initialisation, CPU
  caches, cuDNN/cuBLAS heuristics), then `repeats` timed ones; a row reports the median and the spread
  ((max - min) / median). CPU speed drifts by up to a third between runs on a shared machine: compare
  shapes measured side by side, never a number from another day.
- Training: one step = forward + backward + `torch.optim.AdamW` step on a random batch of `batch_size`
  examples of `input_length` encoder and `target_length` decoder tokens; tokens/s counts encoder input
  tokens, as the training loop's `tokens_per_s` does.
- Inference: encode, then greedy decoding of exactly `target_length` tokens with the KV cache (random
  weights would emit EOS at random, so decoding never stops early); tokens/s counts generated tokens.
- Peak memory: CUDA: `torch.cuda.max_memory_allocated` after resetting the peak (tensors only; the caching
  allocator's reserve and the CUDA context are not in it). CPU: the growth of the process's peak resident
  set (VmHWM in /proc/self/status) across the measurement, after resetting that peak by writing "5" to
  /proc/self/clear_refs (Linux >= 4.0). Without that file (non-Linux) it falls back to the growth of
  `resource.getrusage().ru_maxrss`, which cannot be reset and so is a lower bound (0 when an earlier,
  larger peak hides it). RSS includes the weights, allocator caches and anything else the process touched.
- MFU (model FLOPs utilisation, PaLM appendix B): achieved FLOPs/s / peak FLOPs/s, where achieved counts
  the analytic training FLOPs (`counting.training_flops`: 3 x the forward matrix products) and the peak is
  MEASURED once per (device, dtype) by timing a large square matmul, not taken from a data sheet. On CPU that
  makes MFU the share of the machine's own best matmul speed; on a GPU the measured peak is below the data
  sheet's (e.g. ~750 of 989 dense bf16 TFLOP/s on an H100), so MFU reads higher than against the sheet.

GPU path: CUDA timings synchronise before starting and before stopping the clock. `precision="auto"` runs
bf16 autocast where training would (CUDA devices with bf16, CPUs with AVX512-BF16; fp32 master weights, as
the training loop does) and the peak is then the bf16 matmul peak. The CUDA path is written for the GPU but
has only been run on CPU here.
"""

from __future__ import annotations

import contextlib
import functools
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from t5lab.analysis.counting import count_parameters, forward_flops, training_flops
from t5lab.config import ModelConfig
from t5lab.device import autocast, autocast_dtype
from t5lab.device import resolve_device as train_device
from t5lab.errors import T5LabError
from t5lab.kernels import apply
from t5lab.model import T5, KVCache, build_model

Precision = Literal["auto", "fp32", "bf16"]


@dataclass(frozen=True)
class Timing:
    """Seconds per repeat: median, fastest, slowest."""

    median_s: float
    min_s: float
    max_s: float

    @property
    def spread(self) -> float:
        """(slowest - fastest) / median: how much to trust a difference between two rows."""
        return (self.max_s - self.min_s) / self.median_s if self.median_s > 0 else 0.0


def resolve_device(name: str) -> torch.device:
    """The training loop's device rule, for `--device`, limited to the devices bench can time."""
    device = train_device(name, label="--device")
    if device.type not in ("cpu", "cuda"):
        raise T5LabError(f"--device={name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return device


def compute_dtype(precision: Precision, device: torch.device) -> torch.dtype:
    """The dtype training runs in for `precision` (`t5lab.device.autocast_dtype`), fp32 for no autocast."""
    return autocast_dtype(precision, device) or torch.float32


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_repeats(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 1) -> Timing:
    """Run `fn` `warmup` times untimed, then `repeats` times timed (device work included)."""
    if repeats < 1 or warmup < 0:
        raise T5LabError(f"repeats={repeats}, warmup={warmup}: expected repeats >= 1 and warmup >= 0")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return Timing(statistics.median(times), min(times), max(times))


def matmul_peak_flops(device: str, dtype: torch.dtype, size: int | None = None, repeats: int = 5) -> float:
    """The device's measured matmul speed in FLOP/s: the fastest of `repeats` timed size x size products.

    Measured once per (device, dtype, size, CPU threads) for the life of the process. Sizes: 8192 on CUDA
    (large enough to saturate the tensor cores), 1024 on CPU (2 GFLOP, a few hundredths of a second per
    core). On a CPU shared with other jobs the peak is measured while they run, like everything else: an
    MFU from such a machine is a rough figure (it can even exceed 1 when the peak was taken at a busy moment).
    """
    dev = torch.device(device)
    return _matmul_peak(str(dev), dtype, size or (8192 if dev.type == "cuda" else 1024), repeats,
                        torch.get_num_threads())


@functools.cache
def _matmul_peak(device: str, dtype: torch.dtype, n: int, repeats: int, threads: int) -> float:
    dev = torch.device(device)
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    timing = time_repeats(lambda: torch.mm(a, b), dev, repeats=repeats, warmup=2)
    return 2 * n**3 / timing.min_s


# --------------------------------------------------------------------------------------------------------
# Peak memory
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_rss_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@contextlib.contextmanager
def peak_memory(device: torch.device):
    """Yields a dict that holds, on exit, `peak_memory_bytes` and `peak_memory_method` (see module doc)."""
    result: dict[str, int | str] = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        yield result
        result.update(peak_memory_bytes=torch.cuda.max_memory_allocated(device),
                      peak_memory_method="cuda.max_memory_allocated")
        return
    if _reset_rss_peak() and _status_kib("VmRSS") is not None:
        before = _status_kib("VmRSS") or 0
        yield result
        result.update(peak_memory_bytes=max(0, (_status_kib("VmHWM") or 0) - before) * 1024,
                      peak_memory_method="rss peak growth (VmHWM reset via clear_refs)")
        return
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield result
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    result.update(peak_memory_bytes=grown * scale, peak_memory_method="ru_maxrss growth (lower bound)")


# --------------------------------------------------------------------------------------------------------
# Measurements
def random_batch(config: ModelConfig, batch_size: int, input_length: int, target_length: int,
                 device: torch.device, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    # Token 0 is pad and 1 is EOS: draw from the rest so the batch looks like text to the model.
    low = min(2, config.vocab_size - 1)
    inputs = torch.randint(low, config.vocab_size, (batch_size, input_length), generator=generator)
    labels = torch.randint(low, config.vocab_size, (batch_size, target_length), generator=generator)
    return {"input_ids": inputs.to(device), "labels": labels.to(device)}


def measure_training(model: nn.Module, batch: dict[str, torch.Tensor], device: torch.device, dtype: torch.dtype,
                     repeats: int, warmup: int = 1) -> Timing:
    """Seconds per training step: forward + backward + AdamW step (the optimizer state is created in
    warm-up, so a timed step never allocates it)."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        with autocast(device, dtype):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return time_repeats(step, device, repeats, max(warmup, 1))


@torch.no_grad()
def greedy_decode(model: T5, input_ids_BS: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """Encode once, then exactly `num_tokens` greedy steps with the KV cache (no early stop at EOS)."""
    hidden_BSD, _ = model.encode(input_ids_BS)
    cache = KVCache.empty(model.config.num_decoder_layers, num_tokens)
    token_B1 = torch.full((input_ids_BS.shape[0], 1), model.config.decoder_start_token_id,
                          dtype=torch.long, device=input_ids_BS.device)
    out = []
    for _ in range(num_tokens):
        logits_B1V, _ = model.decode(token_B1, hidden_BSD, cache=cache)
        token_B1 = logits_B1V[:, -1].argmax(-1, keepdim=True)
        out.append(token_B1)
    return torch.cat(out, dim=1)


def measure_inference(model: T5, input_ids_BS: torch.Tensor, target_length: int, device: torch.device,
                      dtype: torch.dtype, repeats: int, warmup: int = 1) -> Timing:
    """Seconds to encode a batch and greedily decode `target_length` tokens for every example."""
    model.eval()

    def run() -> None:
        with autocast(device, dtype):
            greedy_decode(model, input_ids_BS, target_length)

    return time_repeats(run, device, repeats, warmup)


def bench_shape(
    config: ModelConfig,
    *,
    device: str = "cpu",
    batch_size: int = 8,
    input_length: int = 512,
    target_length: int = 114,
    repeats: int = 5,
    warmup: int = 1,
    precision: Precision = "auto",
    attention: str = "eager",
    seed: int = 0,
) -> dict:
    """One result row for `config`: training and inference speed, peak training memory and MFU.

    Fields (units in the names): name, params, active_params, flops (forward FLOPs per example, the x axis
    `t5lab pareto --x flops` reads), train_flops_per_example, tokens_per_s (training input tokens/s, the
    axis `--x throughput` reads), train_step_s and its spread, inference_tokens_per_s, inference_s and its
    spread, ms_per_token (decode wall time per step of the whole batch), peak_memory_bytes and its method,
    matmul_peak_flops, mfu, and the settings the row was measured with (dtype: training's; inference_dtype:
    decoding's, fp32 on CPU as `t5lab generate` runs).
    """
    if batch_size < 1 or input_length < 1 or target_length < 1:
        raise T5LabError(f"batch_size={batch_size}, input_length={input_length}, target_length={target_length}: "
                         "expected >= 1 each")
    dev = resolve_device(device)
    dtype = compute_dtype(precision, dev)
    config = config.replace(dropout=0.0, expert_dropout=0.0)  # speed does not depend on it; noise-free
    model = apply(build_model(config, seed=seed, device=dev), device=dev, attention=attention)
    batch = random_batch(config, batch_size, input_length, target_length, dev, seed)
    with peak_memory(dev) as memory:
        train = measure_training(model, batch, dev, dtype, repeats, warmup)
    # Decoding as `t5lab generate` runs it by default: fp32 on CPU, where bf16 autocast would cast the weights
    # again at every step (t5-efficient-tiny at batch 1: ~11-12 vs ~5-6 ms per token).
    infer_dtype = dtype if dev.type == "cuda" else torch.float32
    infer = measure_inference(model, batch["input_ids"], target_length, dev, infer_dtype, repeats, warmup)
    peak = matmul_peak_flops(str(dev), dtype)
    per_example = training_flops(config, input_length, target_length)
    params = count_parameters(config)
    del model, batch
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return {
        "name": config.name,
        "params": params.total,
        "active_params": params.active_per_token,
        "flops": forward_flops(config, input_length, target_length).total,
        "train_flops_per_example": per_example,
        "tokens_per_s": batch_size * input_length / train.median_s,
        "train_step_s": train.median_s,
        "train_step_spread": round(train.spread, 4),
        "inference_tokens_per_s": batch_size * target_length / infer.median_s,
        "inference_s": infer.median_s,
        "inference_spread": round(infer.spread, 4),
        "ms_per_token": 1000 * infer.median_s / target_length,
        **memory,
        "matmul_peak_flops": peak,
        "mfu": per_example * batch_size / train.median_s / peak,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu x{torch.get_num_threads()}",
        "dtype": str(dtype).removeprefix("torch."),
        "inference_dtype": str(infer_dtype).removeprefix("torch."),
        "attention": attention,
        "batch_size": batch_size,
        "input_length": input_length,
        "target_length": target_length,
        "repeats": repeats,
        "torch": torch.__version__,
    }
