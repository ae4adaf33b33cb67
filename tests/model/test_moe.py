"""The Switch layer: routing and capacity, dropped tokens, router losses, batched dispatch, counts."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from t5lab.config import ModelConfig
from t5lab.interop.hf_config import to_hf
from t5lab.model import build_model
from t5lab.model.moe import (
    SwitchFeedForward,
    batched_dispatch,
    expert_capacity,
    load_balancing_loss,
    reference_dispatch,
    router_z_loss,
)
from t5lab.shapes import from_name


@pytest.fixture
def moe_config(tiny_config) -> ModelConfig:
    """The tiny shape with 4 experts in block 1 of both stacks, 3 slots per expert (so tokens get dropped)."""
    return tiny_config.replace(num_experts=4, expert_capacity=3, router_jitter_noise=0.0)


def _layer(config: ModelConfig, seed: int = 0) -> SwitchFeedForward:
    torch.manual_seed(seed)
    layer = SwitchFeedForward(config)
    layer.init_weights(torch.Generator().manual_seed(seed))
    return layer


def _one_hot_tokens(B: int, T: int, D: int) -> torch.Tensor:
    """Token t of every sequence is the unit vector e_t, so router logits[t, e] = router.weight[e, t]."""
    return torch.eye(D)[:T].expand(B, T, D).clone()


def test_capacity_is_enforced_per_sequence_in_token_order(moe_config):
    config = moe_config.replace(router_bias=True, expert_capacity=2)
    layer = _layer(config).eval()
    with torch.no_grad():
        layer.router.weight.zero_()
        layer.router.bias.copy_(torch.tensor([5.0, 0.0, 0.0, 0.0]))  # every token prefers expert 0
    x = torch.randn(2, 5, config.d_model)
    out, stats = layer(x)
    # Each sequence keeps its first two tokens; the rest are dropped and the layer outputs 0 for them.
    assert torch.all(out[:, 2:] == 0)
    assert torch.all(out[:, :2].abs().sum(-1) > 0)
    assert stats.dropped_fraction.item() == pytest.approx(3 / 5)
    torch.testing.assert_close(stats.expert_fraction, torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_top2_serves_all_first_choices_before_second_choices(moe_config):
    config = moe_config.replace(num_experts=3, router_top_k=2, expert_capacity=2)
    layer = _layer(config).eval()
    with torch.no_grad():
        layer.router.weight.zero_()
        # token 0: expert 0 then 1; tokens 1 and 2: expert 1 then 0.
        layer.router.weight[:, :3] = torch.tensor([[2.0, 1.0, 1.0], [1.0, 2.0, 2.0], [0.0, 0.0, 0.0]])
    routing = layer.route(_one_hot_tokens(1, 3, config.d_model))
    kept = set(zip(routing.token_A.tolist(), routing.expert_A.tolist(), strict=True))
    # First choices fill expert 1 with tokens 1 and 2, so token 0's second choice (expert 1) is dropped,
    # while token 1's second choice (expert 0, second slot) is kept and token 2's (third slot) is not.
    assert kept == {(0, 0), (1, 1), (2, 1), (1, 0)}


def test_capacity_from_factors():
    config = ModelConfig(num_experts=4, capacity_factor_train=1.25, capacity_factor_eval=2.0)
    assert expert_capacity(config, 10, training=True) == math.ceil(10 / 4 * 1.25) == 4
    assert expert_capacity(config, 10, training=False) == 5
    assert expert_capacity(config.replace(router_top_k=2), 10, training=False) == 10
    assert expert_capacity(config.replace(expert_capacity=7), 10, training=True) == 7


def test_dropped_tokens_match_installed_transformers(moe_config):
    """transformers 5.x leaves dropped tokens out of every expert: output 0, i.e. the paper's "skip"."""
    transformers = pytest.importorskip("transformers")
    from transformers.models.switch_transformers.modeling_switch_transformers import (
        SwitchTransformersSparseMLP,
    )

    config = moe_config.replace(dropped_tokens="skip")
    ours = _layer(config).eval()
    hf_config = transformers.SwitchTransformersConfig(
        **{k: v for k, v in to_hf(config).items() if not k.startswith("t5lab_")}
    )
    theirs = SwitchTransformersSparseMLP(hf_config).eval()
    with torch.no_grad():
        theirs.router.classifier.weight.copy_(ours.router.weight)
        for e in range(config.num_experts):
            theirs.experts[f"expert_{e}"].wi.weight.copy_(ours.wi[e])
            theirs.experts[f"expert_{e}"].wo.weight.copy_(ours.wo[e])
    x = torch.randn(3, 11, config.d_model)
    out, stats = ours(x)
    assert stats.dropped_fraction > 0.2  # the drop path is exercised
    torch.testing.assert_close(out, theirs(x), atol=1e-6, rtol=1e-5)


def test_scaled_input_passes_dropped_tokens_through_as_transformers_4(moe_config):
    """transformers 4.x: a dropped token's output is its input times its first-choice router probability."""
    skip = _layer(moe_config.replace(dropped_tokens="skip")).eval()
    scaled = _layer(moe_config.replace(dropped_tokens="scaled_input")).eval()
    scaled.load_state_dict(skip.state_dict())
    x = torch.randn(3, 11, moe_config.d_model)
    routing = skip.route(x)
    dropped = routing.unserved_gate_N > 0
    assert dropped.any() and not dropped.all()
    gate = torch.softmax(x @ skip.router.weight.T, -1).amax(-1).flatten()
    expected = skip(x)[0].flatten(0, 1) + x.flatten(0, 1) * torch.where(dropped, gate, 0.0)[:, None]
    torch.testing.assert_close(scaled(x)[0].flatten(0, 1), expected)
    torch.testing.assert_close(skip(x)[0].flatten(0, 1)[dropped], torch.zeros_like(x.flatten(0, 1)[dropped]))


def test_router_losses_on_a_hand_made_example():
    # Two experts; token 0: logits (0, ln 3) -> p = (1/4, 3/4); token 1: (0, ln 2) -> p = (1/3, 2/3).
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(2.0)]]])
    probs = logits.softmax(-1)
    chosen = probs.argmax(-1, keepdim=True)
    # Both tokens choose expert 1: f = (0, 1), P = (7/24, 17/24); aux = E * sum f P = 2 * 17/24.
    assert load_balancing_loss(probs, chosen).item() == pytest.approx(17 / 12)
    assert router_z_loss(logits).item() == pytest.approx((math.log(4.0) ** 2 + math.log(3.0) ** 2) / 2)


def test_layer_reports_its_losses_with_their_coefficients(moe_config):
    config = moe_config.replace(router_aux_loss_coef=0.5, router_z_loss_coef=0.25)
    layer = _layer(config)
    _, stats = layer(torch.randn(2, 7, config.d_model))
    probs = stats.logits.softmax(-1)
    torch.testing.assert_close(stats.aux_loss, load_balancing_loss(probs, probs.argmax(-1, keepdim=True)))
    torch.testing.assert_close(stats.z_loss, router_z_loss(stats.logits))
    torch.testing.assert_close(stats.loss, 0.5 * stats.aux_loss + 0.25 * stats.z_loss)
    assert stats.expert_fraction.sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize(
    "changes",
    [
        dict(),
        dict(router_top_k=2),
        dict(feed_forward="gated-gelu", router_bias=True),
        dict(expert_capacity=None),
        dict(num_experts=16, expert_capacity=1),  # experts without tokens
    ],
)
@pytest.mark.parametrize("grouped", [True, False], ids=["grouped_mm", "padded_bmm"])
def test_batched_dispatch_equals_reference_loop(moe_config, changes, grouped, monkeypatch):
    calls = []
    if grouped:
        if not hasattr(F, "grouped_mm"):
            pytest.skip("this torch has no F.grouped_mm")
        grouped_mm = F.grouped_mm
        monkeypatch.setattr(F, "grouped_mm", lambda *a, **k: calls.append(1) or grouped_mm(*a, **k))
    else:
        monkeypatch.delattr(F, "grouped_mm", raising=False)
    config = moe_config.replace(d_ff=40, **changes)  # grouped_mm needs 16-byte strides: d_model 24, d_ff 40
    layer = _layer(config).train()
    x = torch.randn(3, 9, config.d_model)
    results = []
    for dispatch in (batched_dispatch, reference_dispatch):
        layer.dispatch = dispatch
        layer.zero_grad()
        x_ = x.clone().requires_grad_()
        out, stats = layer(x_)
        (out.pow(2).sum() + stats.loss).backward()
        results.append((out, x_.grad, [p.grad.clone() for p in layer.parameters()]))
    (out_b, gx_b, gp_b), (out_r, gx_r, gp_r) = results
    torch.testing.assert_close(out_b, out_r, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(gx_b, gx_r, atol=1e-6, rtol=1e-5)
    for a, b in zip(gp_b, gp_r, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert layer.router.weight.grad.abs().sum() > 0  # the router learns through the gate
    assert bool(calls) == grouped


def test_model_loss_includes_router_losses(moe_config):
    model = build_model(moe_config, seed=0).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(2, moe_config.vocab_size, (2, 9), generator=g)
    labels = torch.randint(2, moe_config.vocab_size, (2, 5), generator=g)
    out = model(ids, labels=labels)
    assert len(out.router) == 2  # block 1 of the encoder and of the decoder
    ce = F.cross_entropy(out.logits.flatten(0, 1), labels.flatten())
    router = sum(r.loss for r in out.router)
    assert router.item() > 0
    torch.testing.assert_close(out.loss, ce + router)


def test_jitter_only_in_training(moe_config):
    layer = _layer(moe_config.replace(router_jitter_noise=0.3))
    x = torch.randn(2, 8, moe_config.d_model)
    layer.eval()
    torch.testing.assert_close(layer(x)[1].logits, F.linear(x, layer.router.weight))
    layer.train()
    a, b = layer(x)[1].logits, layer(x)[1].logits
    assert not torch.allclose(a, b)
    assert not torch.allclose(a, F.linear(x, layer.router.weight))


def test_router_runs_in_float32_for_bfloat16_models(moe_config):
    layer = _layer(moe_config).to(torch.bfloat16)
    out, stats = layer(torch.randn(2, 8, moe_config.d_model, dtype=torch.bfloat16))
    assert stats.logits.dtype == torch.float32 and out.dtype == torch.bfloat16


def test_init_scale_and_fan_in(moe_config):
    config = moe_config.replace(num_experts=64, expert_capacity=None, init_scale=0.5)
    layer = _layer(config)
    assert layer.wi.std().item() == pytest.approx(0.5 * config.d_model**-0.5, rel=0.05)
    assert layer.wo.std().item() == pytest.approx(0.5 * config.d_ff**-0.5, rel=0.05)


@pytest.mark.parametrize(("name", "total"), [("switch-base-8", 619_339_008), ("switch-base-16", 1_072_397_568)])
def test_parameter_counts_of_published_models(name, total):
    model = build_model(from_name(name), device="meta")
    assert model.num_parameters() == total
    # One token uses the dense model plus one expert and the router of each of the 12 sparse layers.
    assert model.num_active_parameters() == 222_903_552 + 12 * 768 * int(name.split("-")[-1])


def test_parameter_count_equals_transformers(tiny_config):
    transformers = pytest.importorskip("transformers")
    config = from_name("t5-efficient-tiny-moe8")
    with torch.device("meta"):
        hf = transformers.SwitchTransformersForConditionalGeneration(
            transformers.SwitchTransformersConfig(**{k: v for k, v in to_hf(config).items() if not k.startswith("t5lab_")})
        )
    assert build_model(config, device="meta").num_parameters() == hf.num_parameters()
