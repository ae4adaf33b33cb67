"""Device and precision policy, in one place: which device, which autocast dtype, and the process-wide settings
that go with them (TF32 matmuls on CUDA, glibc keeping freed memory on CPU).

Used by the trainer, the shape lab (`analysis.throughput`) and evaluation, so all three run the arithmetic
training runs. Process-wide settings are never applied on import: `apply_process_settings` applies them on
request and returns what it did, for the run's records.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from typing import Literal

import torch

from t5lab.errors import T5LabError

HostMemory = Literal["auto", "keep", "default"]
HOST_MEMORY: tuple[str, ...] = ("auto", "keep", "default")


def resolve_device(name: str, label: str = "train config field 'device'") -> torch.device:
    """'auto' (CUDA when available), 'cpu', 'cuda' or 'cuda:N'; `label` names the setting in errors.

    Under torchrun, 'auto' and 'cuda' mean this process's own GPU, cuda:LOCAL_RANK.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise T5LabError(f"{label}={name!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise T5LabError(f"{label}={name!r}: no CUDA device is available")
    if device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 matmuls natively, which is where precision 'auto' trains in bf16 autocast:
    CUDA devices with bf16 support, and CPUs with AVX512-BF16 instructions (AMX CPUs have them too).

    On 2 AMD EPYC cores with AVX512-BF16, a training step in bf16 autocast vs fp32 took 793 vs 1384 ms for
    t5-efficient-tiny at batch 8 (inputs 512, targets 114), 1631 vs 2957 ms for t5-efficient-small at batch 4
    and 155 vs 240 ms for tiny at batch 1; `t5lab pretrain`'s quickstart (450 steps) ran at ~14.5k vs ~8k
    tokens/s and ended at a held-out loss of 4.563 vs 4.555. CPUs without the instructions emulate bf16
    (unmeasured here) and keep fp32. Other CPU architectures keep fp32 too (unmeasured).
    """
    if device.type == "cuda":  # compute capability 8 (Ampere) on; torch's own check also counts emulation
        return torch.cuda.is_available() and (bool(torch.version.hip)
                                              or torch.cuda.get_device_properties(device).major >= 8)
    capabilities = getattr(torch.cpu, "get_capabilities", None)  # not in older torch: fp32 there
    return device.type == "cpu" and capabilities is not None and bool(capabilities().get("avx512_bf16", False))


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 for 'bf16', and for 'auto' where the device computes bf16 natively (`native_bf16`); fp16 for 'fp16',
    and for 'auto' on CUDA GPUs without bf16 (compute capability < 8: T4, V100), whose tensor cores run fp16
    (trained with a gradient scaler, `t5lab.train.precision`); None: fp32."""
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    if precision == "fp16" or (precision == "auto" and device.type == "cuda"):
        return torch.float16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`; no autocast for None or fp32."""
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def apply_process_settings(device: torch.device, host_memory: HostMemory = "auto") -> dict[str, str]:
    """Apply the process-wide settings a run on `device` wants and return them (for metrics and meta):

    - CUDA: TF32 matmuls (`torch.set_float32_matmul_precision("high")`), as nanoT5 trains.
    - host_memory 'keep' (and 'auto' on CPU): glibc keeps freed memory for the next step (see
      `keep_freed_memory`); 'default' leaves malloc as it is.
    """
    settings: dict[str, str] = {}
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        settings["float32_matmul_precision"] = "high"
    if host_memory not in HOST_MEMORY:
        raise T5LabError(f"host_memory={host_memory!r}: expected one of {', '.join(HOST_MEMORY)}")
    keep = host_memory == "keep" or (host_memory == "auto" and device.type == "cpu")
    settings["host_memory"] = ("keep" if keep_freed_memory() else "default (not glibc)") if keep else "default"
    return settings


# glibc's malloc, by default, serves every block above its mmap threshold (at most 32 MiB) with a fresh mapping
# and returns the top of the heap to the kernel once more than twice that threshold is free; a training step
# allocates and frees the same few hundred MiB every time, and the next step then faults the same memory back
# in and the kernel zeroes it page by page. On 2 AMD EPYC cores, a training step of t5-efficient-tiny at batch 8
# (inputs 512, targets 114) took 12-50k page faults; with `keep_freed_memory()`, 0-2k from the fourth step on,
# with the same peak resident memory (1.27 GB). `t5lab pretrain --recipe t5-efficient-tiny --batch-size 8`:
# 3,565 vs 3,379 tokens/s (mean of three alternating runs each; the runs' own spread is about as large).
# Process-wide: the process then holds on to the heap it grew until it exits.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# Blocks up to 1 GiB come from the heap (a tied [V, D] gradient of t5-efficient-small alone is 63 MiB, above
# glibc's own ceiling); freed memory at the heap's top is never trimmed.
_MMAP_THRESHOLD = 2**30
_NEVER_TRIM = -1


def keep_freed_memory() -> bool:
    """Configure glibc's malloc as described above; False (and nothing changed) without glibc (macOS, musl,
    Windows) or when glibc refuses a setting."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt, _ = libc.mallopt, libc.gnu_get_libc_version  # the second only exists in glibc
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # The mmap threshold first: setting the trim threshold alone also freezes the dynamic mmap threshold at
    # its 128 KiB start, and every larger block would be mapped afresh (550k faults per step measured).
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(mallopt(_M_TRIM_THRESHOLD, _NEVER_TRIM))


def free_memory(device: torch.device) -> int | None:
    """Free memory on `device` in bytes (None when unknown): CUDA's own count, or the kernel's MemAvailable."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def check_free_memory(need: int, device: torch.device, what: str) -> None:
    """Refuse up front (one line naming both numbers) what needs more bytes than `device` has free."""
    available = free_memory(device)
    if available is not None and need > available:
        raise T5LabError(f"{what} need {need:,} bytes ({need / 2**30:,.1f} GiB), more than the {available:,} "
                         f"bytes ({available / 2**30:,.1f} GiB) available on {device}")
