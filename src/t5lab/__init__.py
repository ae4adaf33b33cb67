"""t5lab: the T5 family in one PyTorch toolkit.

    from t5lab import build_model, from_name, load_pretrained
    model = build_model(from_name("t5-efficient-tiny"), seed=0)
    model = load_pretrained("path/to/hf-checkpoint-folder")   # transformers T5 weights

Names that need torch are imported on first use, so that the config, shape and metric layers (and the
CLI's `--help`) stay light.
"""

from importlib import import_module
from typing import Any

from t5lab.config import ModelConfig
from t5lab.errors import T5LabError
from t5lab.shapes import from_name

_LAZY = {
    "build_model": "t5lab.model",
    "T5": "t5lab.model",
    "load_pretrained": "t5lab.interop.hf",
    "load_model": "t5lab.interop.loading",
    "save_pretrained": "t5lab.interop.hf",
    "Tokenizer": "t5lab.data.tokenizer",
}

__all__ = ["ModelConfig", "T5LabError", "from_name", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 't5lab' has no attribute {name!r}")
