"""Shared fixtures: the real data folder and a tiny model shape with odd, distinct dimensions."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from t5lab.config import ModelConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """`../shared/data` beside the checkout (as in CI), or $T5LAB_DATA."""
    return Path(os.environ.get("T5LAB_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def one_thread():
    """torch on one intra-op thread during the test: on a small shared CPU, threads contend and slow tiny
    models by an order of magnitude, and one thread keeps results independent of the core count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data folder {path} is absent (set T5LAB_DATA to the shared/data folder)")
    return path


@pytest.fixture
def spiece_model(shared_data: Path) -> Path:
    path = shared_data / "t5_spiece" / "spiece.model"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


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


@pytest.fixture
def tiny_config() -> ModelConfig:
    return TINY
