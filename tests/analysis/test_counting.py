"""Parameter and FLOP counts of `t5lab.analysis.counting` against published numbers and built models.

Parameters are checked against both transformers' model (the numerical reference, for every shape it can
express) and t5lab's own. FLOPs are checked against t5lab's model, which is the one the bench and the scale
study run, including the variants transformers cannot build (`-sh`, `-skv`) and Switch `-moeN` shapes.
`torch.utils.flop_counter.FlopCounterMode` counts only matrix products (mm/addmm/bmm/baddbmm and
scaled-dot-product attention) as 2 FLOPs per multiply-add, exactly the part `forward_flops` models: norms,
softmax and activations are in neither.
"""

from __future__ import annotations

import pytest

import t5lab
from t5lab.analysis.counting import (
    count_parameters,
    forward_flops,
    kv_cache_bytes,
    optimizer_state_elements,
    training_flops,
    training_memory,
    weight_tensors,
)
from t5lab.config import ModelConfig
from t5lab.errors import T5LabError
from t5lab.interop.hf_config import to_hf
from t5lab.shapes import from_name

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402


def hf_model(config: ModelConfig) -> torch.nn.Module | None:
    """transformers' model for `config` with the tensors a checkpoint of it stores; None when transformers
    cannot express it (shared heads, tied key/value)."""
    if config.num_kv_heads is not None or config.tie_key_value:
        return None
    data = to_hf(config)
    if config.is_moe:
        model = transformers.SwitchTransformersForConditionalGeneration(
            transformers.SwitchTransformersConfig(**data))
    else:
        hf_config = transformers.T5Config(**data)
        hf_config._attn_implementation = "eager"
        model = transformers.T5ForConditionalGeneration(hf_config)
        if not config.tie_embeddings:
            # transformers 5.x always ties lm_head to shared (T5Config turns tie_word_embeddings=False into
            # scale_decoder_outputs=False and sets it True); a v1.1 checkpoint stores both, as 4.x built it.
            model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight))
    return model.eval()


def t5lab_model(config: ModelConfig, device: str = "meta") -> torch.nn.Module:
    """t5lab's model with eager attention (explicit matmuls, which FlopCounterMode sees as such); on the
    meta device it is shapes only: no memory, no arithmetic, no initialisation."""
    return t5lab.build_model(config, device=device).eval()


PUBLISHED = {
    "t5-efficient-tiny": 15_570_688,
    "t5-efficient-mini": 31_220_480,
    "t5-efficient-small": 60_506_624,
    "t5-efficient-base": 222_903_552,
    "t5-efficient-small-el16-dl8": 100_365_824,
    "t5-efficient-tiny-nl8": 22_915_840,
    "t5-v1_1-base": 247_577_856,
}


def switch_base(num_experts: int) -> ModelConfig:
    return ModelConfig(name=f"switch-base-{num_experts}", d_model=768, d_ff=3072, d_kv=64, num_heads=12,
                       num_encoder_layers=12, num_decoder_layers=12, num_experts=num_experts,
                       encoder_sparse_step=2, decoder_sparse_step=2, expert_capacity=64)


@pytest.mark.parametrize("name,expected", PUBLISHED.items())
def test_published_parameter_counts(name: str, expected: int) -> None:
    assert count_parameters(from_name(name)).total == expected


@pytest.mark.parametrize("num_experts,expected", [(8, 619_339_008), (16, 1_072_397_568)])
def test_switch_parameter_counts(num_experts: int, expected: int) -> None:
    counts = count_parameters(switch_base(num_experts))
    assert counts.total == expected
    # 12 sparse blocks, one expert each per token: active = total - (E - 1) experts per sparse block
    assert counts.active_per_token == expected - 12 * (num_experts - 1) * 2 * 768 * 3072


NAMES = [
    "t5-small", "t5-base", "t5-large", "t5-3b",
    "t5-v1_1-small", "t5-v1_1-base", "t5-v1_1-large", "t5-v1_1-xl",
    "t5-efficient-tiny", "t5-efficient-mini", "t5-efficient-xl",
    "t5-efficient-small-el16-dl8", "t5-efficient-base-dl2", "t5-efficient-base-ff6000",
    "t5-efficient-small-dm1000", "t5-efficient-base-kv16", "t5-efficient-base-nh24",
    "t5-efficient-mini-nl24-ff1000-dm256-kv32-nh4", "t5-efficient-tiny-el8",
]


@pytest.mark.parametrize("name", NAMES)
def test_parameters_match_transformers_model(name: str) -> None:
    config = from_name(name)
    with torch.device("meta"):
        model = hf_model(config)
    assert count_parameters(config).total == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("num_experts", [8, 16])
def test_switch_parameters_match_transformers_model(num_experts: int) -> None:
    config = switch_base(num_experts)
    with torch.device("meta"):
        model = hf_model(config)
    assert count_parameters(config).total == model.num_parameters()


T5LAB_ONLY = ["t5-efficient-base-sh", "t5-efficient-base-skv", "t5-efficient-small-nl16-sh",
              "t5-efficient-tiny-moe8", "switch-base-8", "switch-base-16"]


@pytest.mark.parametrize("name", NAMES[:8] + T5LAB_ONLY)
def test_parameters_match_t5lab_model(name: str) -> None:
    config = from_name(name)
    model = t5lab_model(config)
    assert count_parameters(config).total == model.num_parameters()


def test_weight_shapes_match_built_model(tiny_config: ModelConfig) -> None:
    """The multiset of shapes agrees, so that Adafactor's factored state is right too."""
    untied = tiny_config.replace(tie_embeddings=False, feed_forward="gated-gelu")
    with torch.device("meta"):
        model = hf_model(untied)
    ours = sorted(t.shape for t in weight_tensors(untied))
    theirs = sorted(tuple(p.shape) for p in model.parameters())
    assert ours == theirs


def test_kv_variants_shrink_key_value_projections() -> None:
    base = from_name("t5-efficient-base")
    per_projection = 768 * 768
    attention_layers = 12 + 2 * 12  # encoder self, decoder self + cross
    shared_heads = from_name("t5-efficient-base-sh")
    tied_kv = from_name("t5-efficient-base-skv")
    assert count_parameters(base).total - count_parameters(shared_heads).total == (
        attention_layers * 2 * (per_projection - 768 * 64))
    assert count_parameters(base).total - count_parameters(tied_kv).total == attention_layers * per_projection
    assert forward_flops(shared_heads, 64, 16).projections < forward_flops(base, 64, 16).projections
    assert forward_flops(tied_kv, 64, 16).attention == forward_flops(base, 64, 16).attention


def count_flops(model: torch.nn.Module, batch: int, input_length: int, target_length: int, device: str) -> int:
    with torch.device(device):
        inputs = torch.randint(0, 8, (batch, input_length))
        targets = torch.randint(0, 8, (batch, target_length))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(input_ids=inputs, decoder_input_ids=targets)
    return counter.get_total_flops()


FLOP_NAMES = [
    "t5-small", "t5-v1_1-small", "t5-v1_1-base", "t5-efficient-tiny", "t5-efficient-mini-el8-dl2",
    "t5-efficient-small-el16-dl8", "t5-efficient-base-kv16", "t5-efficient-base-nh24-ff1000",
    "t5-efficient-small-dm1000", "t5-efficient-tiny-dl2", "t5-efficient-base-sh", "t5-efficient-base-skv",
    "t5-efficient-small-nl16-sh", "t5-efficient-mini-skv", "t5-efficient-tiny-nl8-kv32-nh8-sh",
]


@pytest.mark.parametrize("name", FLOP_NAMES)
def test_forward_flops_match_flop_counter(name: str) -> None:
    """Dense shapes as named, on the meta device (shapes only, no arithmetic): exact agreement expected."""
    config = from_name(name)
    model = t5lab_model(config)
    batch, input_length, target_length = 2, 37, 11
    measured = count_flops(model, batch, input_length, target_length, "meta")
    expected = batch * forward_flops(config, input_length, target_length).total
    assert measured == pytest.approx(expected, rel=0.02)


def routed_model(config: ModelConfig) -> torch.nn.Module:
    """t5lab's Switch model on the CPU with real (random) weights, since routing is data-dependent, room for
    every token and the per-expert dispatch.

    `forward_flops` counts the routed work: top-k experts per token. The default batched dispatch multiplies
    a zero-padded [E, M, D] buffer (M = the busiest expert's tokens), i.e. E·M rather than k·tokens rows;
    the per-expert loop does exactly the routed work, so it is the one compared here.
    """
    from t5lab.model.moe import SwitchFeedForward, reference_dispatch

    config = config.replace(expert_capacity=10_000, dropout=0.0, expert_dropout=0.0)
    model = t5lab.build_model(config, seed=0).eval()
    layers = [m for m in model.modules() if isinstance(m, SwitchFeedForward)]
    assert layers, "expected sparse layers"
    for layer in layers:
        layer.dispatch = reference_dispatch
    return model


@pytest.mark.parametrize("name", ["t5-efficient-tiny-moe8", "t5-efficient-mini-nl2-moe8"])
def test_moe_shape_forward_flops_match_flop_counter(name: str) -> None:
    config = from_name(name)
    batch, input_length, target_length = 2, 37, 11
    measured = count_flops(routed_model(config), batch, input_length, target_length, "cpu")
    expected = batch * forward_flops(config, input_length, target_length).total
    assert measured == pytest.approx(expected, rel=0.02)


@pytest.mark.parametrize("steps", [(2, 2), (1, 3)])
def test_switch_forward_flops_match_flop_counter(steps: tuple[int, int]) -> None:
    """Sparse in every second block, or in every encoder block and every third decoder block; top-2."""
    config = ModelConfig(vocab_size=50, d_model=24, d_ff=40, d_kv=8, num_heads=3, num_encoder_layers=3,
                         num_decoder_layers=3, num_experts=4, encoder_sparse_step=steps[0],
                         decoder_sparse_step=steps[1], router_top_k=2, dropout=0.0)
    batch, input_length, target_length = 2, 13, 7
    measured = count_flops(routed_model(config), batch, input_length, target_length, "cpu")
    expected = batch * forward_flops(config, input_length, target_length).total
    assert measured == pytest.approx(expected, rel=0.02)


def test_training_flops_are_three_forwards(tiny_config: ModelConfig) -> None:
    assert training_flops(tiny_config, 20, 9) == 3 * forward_flops(tiny_config, 20, 9).total


def test_flops_grow_quadratically_in_attention_only(tiny_config: ModelConfig) -> None:
    short, long = forward_flops(tiny_config, 10, 5), forward_flops(tiny_config, 20, 10)
    assert long.projections == 2 * short.projections and long.feed_forward == 2 * short.feed_forward
    assert long.attention == 4 * short.attention


def test_memory_by_dtype_and_optimizer(tiny_config: ModelConfig) -> None:
    n = count_parameters(tiny_config).total
    fp32 = training_memory(tiny_config, "fp32", "adamw")
    assert (fp32.weights, fp32.gradients, fp32.optimizer_state) == (4 * n, 4 * n, 8 * n)
    bf16 = training_memory(tiny_config, "bf16", "adafactor")
    assert bf16.weights == 2 * n
    # embedding [101, 24] factored into 101 + 24 instead of 2424 elements
    assert optimizer_state_elements(tiny_config, "adafactor") < n / 5
    with pytest.raises(T5LabError, match="dtype"):
        training_memory(tiny_config, "int3")  # type: ignore[arg-type]


def test_kv_cache_bytes() -> None:
    base = from_name("t5-efficient-base")
    cache = kv_cache_bytes(base, "bf16")
    assert cache.self_per_token == 12 * 2 * 12 * 64 * 2 == cache.cross_per_input_token
    assert kv_cache_bytes(from_name("t5-efficient-base-sh"), "bf16").self_per_token == 12 * 2 * 64 * 2
    assert kv_cache_bytes(from_name("t5-efficient-base-skv"), "bf16").self_per_token == 12 * 12 * 64 * 2


def test_lengths_must_be_positive(tiny_config: ModelConfig) -> None:
    with pytest.raises(T5LabError, match="at least one token"):
        forward_flops(tiny_config, 0, 4)
