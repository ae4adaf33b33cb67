"""`load_model`: whatever a user names as a model — a checkpoint folder, a LoRA adapter folder (`finetune
--lora-rank`'s export), a Hugging Face Hub id, or a registered shape name (random weights)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from t5lab.errors import T5LabError
from t5lab.interop.hf import check_device, load_pretrained, with_attention
from t5lab.interop.hub import resolve_checkpoint
from t5lab.interop.peft import ADAPTER_CONFIG
from t5lab.model import T5, build_model
from t5lab.shapes import from_name


def load_model(
    name_or_path: str | Path,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    attention: str = "eager",
) -> T5:
    """A checkpoint folder (`load_pretrained`), a LoRA adapter folder (its base with the adapters merged in)
    or a registered shape name (random init with `seed`), in eval mode. A hub id such as
    `google/t5-v1_1-base` is read through huggingface_hub's cache (`interop.hub`), never silently taken for its
    shape's random initialisation."""
    check_device(device)
    folder = resolve_checkpoint(name_or_path)
    if folder is not None:
        if (folder / ADAPTER_CONFIG).is_file() and not (folder / "config.json").is_file():
            return _adapted(folder, device=device, dtype=dtype, attention=attention)
        return load_pretrained(folder, device=device, dtype=dtype, attention=attention)
    text = str(name_or_path)
    if "/" in text or os.sep in text:
        raise T5LabError(
            f"{text}: no such checkpoint folder (a hub id is org/name; a bare shape name such as "
            "'t5-efficient-tiny' gives a randomly initialised model)"
        )
    try:
        config = from_name(text)
    except T5LabError as e:
        raise T5LabError(f"'{text}' is neither an existing folder nor a known shape name: {e}") from None
    return with_attention(build_model(config, seed=seed, device=device, dtype=dtype), attention).eval()


def _adapted(folder: Path, **load) -> T5:
    """The adapters' base checkpoint (a folder, a hub id, or a path relative to the adapters) with them merged
    in: a plain model every command can use."""
    from t5lab.interop.peft import load_adapter, merge_lora

    try:
        base = json.loads((folder / ADAPTER_CONFIG).read_text()).get("base_model_name_or_path")
    except (OSError, ValueError) as e:
        raise T5LabError(f"{folder / ADAPTER_CONFIG}: unreadable ({e})") from None
    if not base:
        raise T5LabError(f"{folder / ADAPTER_CONFIG}: no base_model_name_or_path (the adapters' base model)")
    base_folder = resolve_checkpoint(base) or folder / base
    return merge_lora(load_adapter(load_pretrained(base_folder, **load), folder)).eval()
