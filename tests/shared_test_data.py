"""What tests import by name (conftest.py turns them into fixtures): the real data folder beside the checkout,
and a tiny model shape with odd, distinct dimensions."""

from __future__ import annotations

import os
from pathlib import Path

from t5lab.config import ModelConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout (as in CI), or $T5LAB_DATA."""
    return Path(os.environ.get("T5LAB_DATA", REPO_ROOT.parent / "shared" / "data"))


# Odd, distinct dims so that a swapped or transposed weight fails loudly instead of passing by accident:
# d_model 24, 3 heads of d_kv 10 (inner 30 != d_model), d_ff 37, 2 encoder and 3 decoder layers.
TINY = ModelConfig(
    name="tiny-test",
    vocab_size=101,
    d_model=24,
    d_ff=37,
    d_kv=10,
    num_heads=3,
    num_encoder_layers=2,
    num_decoder_layers=3,
    relative_attention_num_buckets=8,
    relative_attention_max_distance=20,
    dropout=0.0,
)
