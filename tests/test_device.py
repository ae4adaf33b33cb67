"""The device and precision policy: process-wide settings applied on request and recorded."""

from __future__ import annotations

import resource

import pytest
import torch

import t5lab.device as device_module
from t5lab import T5LabError, build_model
from t5lab.device import apply_process_settings, keep_freed_memory
from t5lab.train.config import TrainConfig
from t5lab.train.loop import train


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


@pytest.mark.parametrize(("host_memory", "device", "applied"), [
    ("auto", "cpu", True), ("default", "cpu", False), ("keep", "cpu", True), ("auto", "meta", False)])
def test_host_memory_is_applied_only_when_asked_and_recorded(monkeypatch, host_memory, device, applied):
    calls = []
    monkeypatch.setattr(device_module, "keep_freed_memory", lambda: calls.append("set") or True)
    settings = apply_process_settings(torch.device(device), host_memory)
    assert calls == (["set"] if applied else [])
    assert settings["host_memory"] == ("keep" if applied else "default")


def test_the_trainer_records_its_process_settings_in_the_checkpoint(tiny_config, tmp_path, monkeypatch, one_thread):
    import json

    monkeypatch.setattr(device_module, "keep_freed_memory", lambda: True)
    config = TrainConfig(steps=1, batch_size=2, eval_batches=0, device="cpu", progress=False, host_memory="default")
    result = train(build_model(tiny_config, seed=0), config, _batches(tiny_config), tmp_path)
    meta = json.loads((result.checkpoint / "meta.json").read_text())
    assert meta["process"] == {"host_memory": "default"} and meta["world_size"] == 1


def test_a_bad_host_memory_setting_names_the_field():
    with pytest.raises(T5LabError, match="host_memory"):
        TrainConfig(host_memory="always")


def _batches(tiny_config):
    from train.synthetic import SyntheticBatches

    return SyntheticBatches(tiny_config.vocab_size, 2)
