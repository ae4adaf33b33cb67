"""ModelConfig: validation of the mixture-of-experts fields and their transformers config.json translation."""

from __future__ import annotations

import json

import pytest

from t5lab import ModelConfig, T5LabError
from t5lab.config import CONFIG_FORMAT_VERSION
from t5lab.interop.hf_config import config_from_meta, from_hf, to_hf
from t5lab.shapes import from_name

# google/switch-base-8's config.json as published on the hub (the fields t5lab reads).
SWITCH_BASE_8 = {
    "architectures": ["SwitchTransformersForConditionalGeneration"], "d_ff": 3072, "d_kv": 64, "d_model": 768,
    "decoder_sparse_step": 2, "dense_act_fn": "relu", "dropout_rate": 0.1, "encoder_sparse_step": 2,
    "eos_token_id": 1, "expert_capacity": 64, "feed_forward_proj": "relu", "initializer_factor": 1.0,
    "is_encoder_decoder": True, "is_gated_act": False, "decoder_start_token_id": 0, "layer_norm_epsilon": 1e-06,
    "model_type": "switch_transformers", "num_decoder_layers": 12, "num_experts": 8, "num_heads": 12,
    "num_layers": 12, "num_selected_experts": 1, "num_sparse_decoder_layers": 6, "num_sparse_encoder_layers": 6,
    "pad_token_id": 0, "relative_attention_max_distance": 128, "relative_attention_num_buckets": 32,
    "router_aux_loss_coef": 0.001, "router_bias": False, "router_dtype": "float32",
    "router_ignore_padding_tokens": False, "router_jitter_noise": 0.01, "router_z_loss_coef": 0.001,
    "vocab_size": 32128,
}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        (dict(num_experts=4, expert_capacity=0), "expert_capacity"),
        (dict(num_experts=-1), "num_experts"),
        (dict(expert_capacity=8), "expert_capacity"),  # capacity without experts
        (dict(num_experts=4, num_encoder_layers=1), "encoder_sparse_step"),  # step 2, one block: none sparse
        (dict(num_experts=4, encoder_sparse_step=0, decoder_sparse_step=0), "encoder_sparse_step"),
        (dict(num_experts=1, router_top_k=2), "router_top_k"),
        (dict(num_experts=4, router_top_k=3), "router_top_k"),
        (dict(num_experts=4, capacity_factor_train=0.0), "capacity_factor_train"),
        (dict(num_experts=4, router_z_loss_coef=-1.0), "router_z_loss_coef"),
        (dict(num_experts=4, dropped_tokens="drop"), "dropped_tokens"),
    ],
)
def test_bad_moe_configs_name_the_field(tiny_config, changes, field):
    with pytest.raises(T5LabError, match=f"'{field}'"):
        tiny_config.replace(**changes)


def test_published_switch_config_keeps_its_stored_values():
    config = from_hf(SWITCH_BASE_8)
    assert config == from_name("switch-base-8").replace(
        name="custom", expert_capacity=64, router_aux_loss_coef=0.001, router_jitter_noise=0.01, init_scale=1.0,
    )


def test_sparse_steps_derived_as_installed_transformers_does():
    # switch-c-2048's config.json: 12 decoder blocks but 15 sparse ones -> step 12 // 15 = 0: no sparse block.
    data = dict(SWITCH_BASE_8, num_layers=15, num_sparse_encoder_layers=15, num_decoder_layers=12,
                num_sparse_decoder_layers=15)
    config = from_hf(data)
    assert (config.encoder_sparse_step, config.decoder_sparse_step) == (1, 0)
    # 0 sparse layers: transformers uses step = num_layers, which still makes block 1 sparse.
    config = from_hf(dict(SWITCH_BASE_8, num_sparse_decoder_layers=0))
    assert [config.is_sparse_layer(i, True) for i in range(4)] == [False, True, False, False]


@pytest.mark.parametrize("name", ["switch-base-8", "t5-efficient-tiny-moe8", "switch-c-2048"])
def test_switch_config_round_trip(name):
    config = from_name(name)
    assert from_hf(to_hf(config)).replace(name=config.name) == config
    other = config.replace(expert_capacity=5, expert_dropout=0.4, router_top_k=2, dropped_tokens="scaled_input")
    assert from_hf(to_hf(other)).replace(name=config.name) == other


def test_to_hf_refuses_placements_transformers_cannot_build(tiny_config):
    # 5 encoder blocks, step 3: blocks 1 and 4; transformers would use step 5 // 2 = 2 (blocks 1 and 3).
    config = tiny_config.replace(num_encoder_layers=5, num_experts=4, encoder_sparse_step=3)
    with pytest.raises(T5LabError, match="'encoder_sparse_step'"):
        to_hf(config)


def test_switch_config_errors():
    with pytest.raises(T5LabError, match="'num_experts'"):
        from_hf(dict(SWITCH_BASE_8, num_experts=0))
    data = {k: v for k, v in SWITCH_BASE_8.items() if k != "feed_forward_proj"}
    assert from_hf(dict(data, dense_act_fn="gelu")).feed_forward == "gelu"
    with pytest.raises(T5LabError, match="dense_act_fn"):
        from_hf(dict(data, dense_act_fn="swish"))


def test_native_form_round_trips_with_its_format_version(tiny_config):
    data = json.loads(json.dumps(from_name("switch-base-8").to_dict()))
    assert data["format_version"] == CONFIG_FORMAT_VERSION
    assert ModelConfig.from_dict(data) == from_name("switch-base-8")
    with pytest.raises(T5LabError, match=r"meta.json: field 'format_version'=1: expected 2"):
        ModelConfig.from_dict(dict(data, format_version=1), "meta.json")
    with pytest.raises(T5LabError, match="meta.json: unknown model config field 'colour'"):
        ModelConfig.from_dict(dict(data, colour="red"), "meta.json")


def test_checkpoint_meta_reads_native_and_older_hf_dicts():
    config = from_name("t5-efficient-tiny")
    assert config_from_meta({"model_config": config.to_dict()}, "meta.json") == config
    older = {"model": to_hf(config) | {"_name_or_path": config.name}}  # pretrain meta before format 2
    assert config_from_meta(older, "meta.json") == config
    with pytest.raises(T5LabError, match="meta.json: no model config recorded"):
        config_from_meta({"step": 3}, "meta.json")
    with pytest.raises(T5LabError, match="meta.json: missing field 'vocab_size'"):
        config_from_meta({"model_config": {"model_type": "t5", "num_layers": 2}}, "meta.json")


def test_from_name_overrides_name_an_unknown_field():
    assert from_name("t5-efficient-tiny", dropout=0.0).dropout == 0.0
    with pytest.raises(T5LabError, match="model config has no field 'bogus'"):
        from_name("t5-efficient-tiny", bogus=1)
