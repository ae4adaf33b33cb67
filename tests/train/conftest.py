"""Training tests run single-threaded: on a small shared CPU, intra-op threads contend and slow tiny models
by an order of magnitude (and one thread keeps results independent of the core count)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _single_threaded(one_thread):
    """Every test here runs under the shared `one_thread` fixture."""
