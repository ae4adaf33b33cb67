"""Reading and writing other frameworks' checkpoints: Hugging Face weights (`t5lab.interop.hf`),
`config.json` (`t5lab.interop.hf_config`, torch-free) and peft LoRA adapters (`t5lab.interop.peft`, imported on
its own since peft is optional). The torch-backed names load on first use."""

from importlib import import_module
from typing import Any

_LAZY = {"load_model": "t5lab.interop.loading", "load_pretrained": "t5lab.interop.hf", "save_pretrained": "t5lab.interop.hf"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 't5lab.interop' has no attribute {name!r}")
