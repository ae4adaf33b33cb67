"""Shared fixtures: the real data folder and a tiny model shape with odd, distinct dimensions."""

from __future__ import annotations

from pathlib import Path

import pytest

# Named, not `conftest`: a test module that imports these would otherwise get whichever conftest pytest
# loaded last (tests/kernels has its own), i.e. depend on the order the tests run in.
from shared_test_data import REPO_ROOT, TINY, shared_data_dir  # noqa: F401

from t5lab.config import ModelConfig


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


@pytest.fixture
def tiny_config() -> ModelConfig:
    return TINY
