"""`t5lab.analysis.throughput`: row fields and units, timing bookkeeping, cached greedy decoding.

Timings themselves are never asserted (the machine is shared); their relations to the other fields are.
"""

from __future__ import annotations

import pytest

from t5lab.analysis.counting import count_parameters, forward_flops, training_flops
from t5lab.config import ModelConfig
from t5lab.errors import T5LabError

torch = pytest.importorskip("torch")
from t5lab.analysis.throughput import (  # noqa: E402
    Timing,
    bench_shape,
    greedy_decode,
    matmul_peak_flops,
    peak_memory,
    time_repeats,
)
from t5lab.model import build_model  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


def test_time_repeats_runs_warmup_then_repeats() -> None:
    calls = []
    timing = time_repeats(lambda: calls.append(1), torch.device("cpu"), repeats=3, warmup=2)
    assert len(calls) == 5
    assert 0 <= timing.min_s <= timing.median_s <= timing.max_s
    assert Timing(2.0, 1.0, 3.0).spread == 1.0
    with pytest.raises(T5LabError, match="repeats"):
        time_repeats(lambda: None, torch.device("cpu"), repeats=0)


def test_matmul_peak_is_measured_once() -> None:
    first = matmul_peak_flops("cpu", torch.float32, 128)
    assert first > 1e6  # any CPU multiplies faster than a megaflop per second
    assert matmul_peak_flops("cpu", torch.float32, 128) == first  # cached for the run


def test_peak_memory_sees_a_large_allocation() -> None:
    import mmap

    with peak_memory(torch.device("cpu")) as memory:
        # Fresh pages from the kernel, touched: memory an allocator cache could not have made resident already.
        block = mmap.mmap(-1, 64 * 2**20)
        block.write(b"\1" * len(block))
        block.close()
    assert memory["peak_memory_method"]
    if memory["peak_memory_method"].startswith("rss"):  # Linux: the peak is reset, so the growth is seen
        assert memory["peak_memory_bytes"] >= 32 * 2**20


def test_greedy_decode_matches_uncached_argmax(tiny_config: ModelConfig) -> None:
    """The cached loop emits what teacher-forcing its own output through the full decoder predicts."""
    model = build_model(tiny_config, seed=0).eval()
    inputs = torch.randint(2, tiny_config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    tokens = greedy_decode(model, inputs, 6)
    assert tokens.shape == (2, 6)
    start = torch.zeros(2, 1, dtype=torch.long)
    with torch.no_grad():
        logits = model(input_ids=inputs, decoder_input_ids=torch.cat([start, tokens[:, :-1]], 1)).logits
    assert torch.equal(logits.argmax(-1), tokens)


def test_bench_row_fields_and_units(tiny_config: ModelConfig) -> None:
    B, S, T = 2, 12, 5
    row = bench_shape(tiny_config, batch_size=B, input_length=S, target_length=T, repeats=2, warmup=1,
                      precision="fp32")
    assert row["name"] == "tiny-test" and row["device"].startswith("cpu") and row["dtype"] == "float32"
    assert row["inference_dtype"] == "float32"
    assert row["params"] == count_parameters(tiny_config).total
    assert row["flops"] == forward_flops(tiny_config, S, T).total
    assert row["train_flops_per_example"] == training_flops(tiny_config, S, T)
    assert row["tokens_per_s"] == pytest.approx(B * S / row["train_step_s"])
    assert row["inference_tokens_per_s"] == pytest.approx(B * T / row["inference_s"])
    assert row["ms_per_token"] == pytest.approx(1000 * row["inference_s"] / T)
    assert row["mfu"] == pytest.approx(row["train_flops_per_example"] * B / row["train_step_s"]
                                       / row["matmul_peak_flops"])
    assert row["mfu"] > 0 and row["train_step_spread"] >= 0
    assert isinstance(row["peak_memory_bytes"], int) and row["peak_memory_bytes"] >= 0
    assert (row["batch_size"], row["input_length"], row["target_length"], row["repeats"]) == (B, S, T, 2)


def test_bench_moe_shape(tiny_config: ModelConfig) -> None:
    moe = tiny_config.replace(num_experts=4, expert_capacity=None)
    row = bench_shape(moe, batch_size=2, input_length=8, target_length=3, repeats=1, warmup=0)
    assert row["params"] > row["active_params"] == count_parameters(moe).active_per_token


def test_bench_rejects_bad_settings(tiny_config: ModelConfig) -> None:
    with pytest.raises(T5LabError, match="batch_size=0"):
        bench_shape(tiny_config, batch_size=0)
    with pytest.raises(T5LabError, match="device"):
        bench_shape(tiny_config, device="tpu")


def test_bench_in_bf16_decodes_in_fp32_on_cpu(tiny_config: ModelConfig) -> None:
    """Training in bf16 autocast; decoding as `t5lab generate` runs on CPU, in fp32."""
    row = bench_shape(tiny_config, batch_size=1, input_length=8, target_length=3, repeats=1, warmup=0,
                      precision="bf16")
    assert (row["dtype"], row["inference_dtype"]) == ("bfloat16", "float32")
