"""CPU training keeps freed memory in the process: the memory a step frees is reused without page faults."""

from __future__ import annotations

import resource

import pytest
import torch

import t5lab.train.loop as loop_module
from t5lab import build_model
from t5lab.train.config import TrainConfig
from t5lab.train.host_memory import keep_freed_memory
from train.synthetic import SyntheticBatches


def test_a_step_that_repeats_reuses_its_memory_without_page_faults():
    if not keep_freed_memory():
        pytest.skip("not glibc: malloc keeps its own defaults")

    def step_faults() -> int:
        """Page faults of a 'step' that allocates 12 x 16 MiB and 64 MiB, touches them and frees them."""
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        blocks = [torch.empty(2**22).fill_(1.0) for _ in range(12)] + [torch.empty(2**24).fill_(1.0)]
        del blocks
        return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

    faults = [step_faults() for _ in range(5)]
    # glibc's defaults map the 64 MiB block afresh every time: 16k faults per step, however long it runs.
    assert max(faults[-2:]) < 1000, faults


def test_the_trainer_sets_it_for_cpu_runs(tiny_config, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(loop_module, "keep_freed_memory", lambda: calls.append("set"))
    config = TrainConfig(steps=1, batch_size=2, eval_batches=0, device="cpu", progress=False)
    loop_module.train(build_model(tiny_config, seed=0), config, SyntheticBatches(tiny_config.vocab_size, 2), tmp_path)
    assert calls == ["set"]
