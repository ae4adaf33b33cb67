from __future__ import annotations

import pytest

from t5lab import T5LabError
from t5lab.interop.hf_config import from_hf, to_hf
from t5lab.shapes import from_name


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("t5-efficient-tiny", dict(d_model=256, d_ff=1024, d_kv=64, num_heads=4, num_encoder_layers=4)),
        ("t5-efficient-small-el16-dl8", dict(num_encoder_layers=16, num_decoder_layers=8, d_model=512)),
        ("t5-efficient-small-dl8-el16", dict(num_encoder_layers=16, num_decoder_layers=8)),
        ("t5-efficient-base-ff6000", dict(d_ff=6144)),
        ("t5-efficient-base-dm1000", dict(d_model=1024)),
        ("t5-efficient-base-dm256", dict(d_model=256)),
        ("t5-efficient-large-nh32", dict(num_heads=32)),
        ("t5-efficient-tiny-nl8", dict(num_encoder_layers=8, num_decoder_layers=8)),
        ("t5-efficient-mini-kv128", dict(d_kv=128)),
        ("t5-efficient-tiny-skv", dict(tie_key_value=True)),
        ("t5-efficient-tiny-sh", dict(num_kv_heads=1)),
        ("t5-v1_1-base", dict(feed_forward="gated-gelu", tie_embeddings=False, d_ff=2048)),
        ("t5-small", dict(feed_forward="relu", tie_embeddings=True, d_model=512)),
        ("google/t5-efficient-tiny", dict(d_model=256)),
    ],
)
def test_named_shapes(name, fields):
    config = from_name(name)
    for key, value in fields.items():
        assert getattr(config, key) == value, key


def test_canonical_name_orders_modifiers():
    assert from_name("t5-efficient-small-dl8-el16").name == "t5-efficient-small-el16-dl8"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("t5-efficient-tinyy", "did you mean t5-efficient-tiny"),
        ("t5-efficient-tiny-xx3", "unknown modifier 'xx3'"),
        ("t5-efficient-tiny-el4-el6", "given twice"),
        ("t5-efficient-tiny-nl4-el6", "'nl' sets both stacks"),
        ("t5-base-el4", "modifiers apply to t5-efficient"),
        ("bert-base", "unknown shape name"),
    ],
)
def test_bad_names_raise_clear_errors(name, message):
    with pytest.raises(T5LabError, match=message):
        from_name(name)


def test_hf_config_round_trip_and_conventions():
    for name in ("t5-efficient-tiny", "t5-v1_1-small", "t5-efficient-mini-el6-skv"):
        config = from_name(name)
        back = from_hf(to_hf(config))
        assert back.replace(name=config.name) == config
    # transformers 5.x convention: tie_word_embeddings true, scale_decoder_outputs false → v1.1 untied.
    data = to_hf(from_name("t5-v1_1-small"))
    data.update(tie_word_embeddings=True, scale_decoder_outputs=False)
    assert from_hf(data).tie_embeddings is False


def test_hf_config_errors(tmp_path):
    with pytest.raises(T5LabError, match="no such file"):
        from_hf(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(T5LabError, match="not valid JSON"):
        from_hf(tmp_path)
    data = to_hf(from_name("t5-efficient-tiny"))
    data["feed_forward_proj"] = "gated-swish"
    with pytest.raises(T5LabError, match="feed_forward_proj"):
        from_hf(data)
    del data["d_model"]
    data["feed_forward_proj"] = "relu"
    with pytest.raises(T5LabError, match="missing field 'd_model'"):
        from_hf(data)


@pytest.mark.parametrize(
    ("name", "fields"),
    [
        ("switch-base-8", dict(num_experts=8, d_model=768, d_ff=3072, num_heads=12, encoder_sparse_step=2)),
        ("google/switch-base-256", dict(num_experts=256, feed_forward="relu", tie_embeddings=True)),
        ("switch-large-128", dict(num_experts=128, d_model=1024, d_ff=4096, num_heads=16, num_encoder_layers=24)),
        ("switch-xxl-128", dict(d_model=4096, d_ff=10240, feed_forward="gated-gelu", tie_embeddings=False)),
        ("switch-c-2048", dict(num_experts=2048, d_model=2080, num_heads=30, num_decoder_layers=15,
                               encoder_sparse_step=1, decoder_sparse_step=1)),
        ("t5-efficient-tiny-moe8", dict(num_experts=8, d_model=256, encoder_sparse_step=2, decoder_sparse_step=2)),
    ],
)
def test_switch_shapes(name, fields):
    config = from_name(name)
    for key, value in fields.items():
        assert getattr(config, key) == value, key
    # New models get the papers' routing settings.
    assert (config.router_aux_loss_coef, config.router_z_loss_coef) == (0.01, 0.001)
    assert (config.expert_capacity, config.capacity_factor_train, config.capacity_factor_eval) == (64, 1.25, 2.0)
    assert config.init_scale == pytest.approx(0.1**0.5) and config.expert_dropout == config.dropout


def test_moe_suffix_keeps_the_dense_canonical_name():
    config = from_name("t5-efficient-small-dl8-el16-moe4")
    assert config.name == "t5-efficient-small-el16-dl8-moe4"
    assert config.replace(num_experts=0, expert_capacity=None, name="x") == from_name(
        "t5-efficient-small-el16-dl8").replace(
        **{k: getattr(config, k) for k in ("router_aux_loss_coef", "init_scale", "dropped_tokens",
                                           "expert_dropout")}, name="x"
    )
    with pytest.raises(T5LabError, match="-moeN"):
        from_name("switch-base-8-moe4")
    with pytest.raises(T5LabError, match="did you mean switch-base-8"):
        from_name("switch-base-9")
