"""Hugging Face interop: both directions against transformers (the numerical reference), every checkpoint
layout it writes, tying conventions of 4.x and 5.x, t5lab-only variants, bad input and atomic saves."""

from __future__ import annotations

import errno
import fractions
import json

import pytest
import torch

from t5lab import ModelConfig, T5LabError, load_model, load_pretrained, save_pretrained
from t5lab.interop import hf
from t5lab.interop.hf_config import to_hf
from t5lab.model import build_model

transformers = pytest.importorskip("transformers")

VARIANTS = {
    "v1_0-relu-tied": {},
    "v1_1-gated-gelu-untied": {"feed_forward": "gated-gelu", "tie_embeddings": False},
    # T5-efficient style (relu, tied) with other odd dims and a deeper encoder than decoder.
    "efficient-odd": {
        "d_model": 22,
        "d_ff": 29,
        "num_heads": 5,
        "d_kv": 7,
        "num_encoder_layers": 4,
        "num_decoder_layers": 2,
    },
    "gated-silu-untied": {"feed_forward": "gated-silu", "tie_embeddings": False},
}


def _batch(config, B=3, S=9, T=7):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, config.vocab_size, (B, S), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0  # padding in the batch
    mask[2, 7:] = 0
    labels = torch.randint(2, config.vocab_size, (B, T), generator=g)
    labels[1, 5:] = -100
    return ids, mask, labels


def _hf_model(config, seed=0):
    torch.manual_seed(seed)
    return transformers.T5ForConditionalGeneration(transformers.T5Config(**to_hf(config))).eval()


def _assert_same_outputs(ours, theirs, config):
    ids, mask, labels = _batch(config)
    with torch.no_grad():
        a = ours(ids, mask, labels=labels)
        b = theirs(input_ids=ids, attention_mask=mask, labels=labels)
    torch.testing.assert_close(a.logits, b.logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(a.loss, b.loss, atol=1e-4, rtol=1e-4)


def test_key_map_is_one_to_one_and_takes_several_placeholders(tiny_config):
    for config in (tiny_config, tiny_config.replace(tie_key_value=True), tiny_config.replace(num_kv_heads=1)):
        names = hf.key_map(config).values()
        assert len(set(names)) == len(names)
    mapping = {
        "encoder.layers.{}.ffn.experts.{}.wi.weight": "encoder.block.{}.layer.1.mlp.experts.expert_{}.wi.weight"
    }
    assert hf._rename(["encoder.layers.11.ffn.experts.3.wi.weight", "shared.weight"], mapping) == {
        "encoder.layers.11.ffn.experts.3.wi.weight": "encoder.block.11.layer.1.mlp.experts.expert_3.wi.weight",
        "shared.weight": None,
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_t5lab_to_transformers(tmp_path, tiny_config, variant):
    config = tiny_config.replace(**VARIANTS[variant])
    model = build_model(config, seed=0).eval()
    save_pretrained(model, tmp_path / "ckpt")
    theirs, info = transformers.T5ForConditionalGeneration.from_pretrained(
        tmp_path / "ckpt", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert (theirs.lm_head.weight is theirs.shared.weight) == config.tie_embeddings
    assert theirs.num_parameters() == model.num_parameters()
    _assert_same_outputs(model, theirs.eval(), config)


@pytest.mark.parametrize("variant", VARIANTS)
def test_transformers_to_t5lab(tmp_path, tiny_config, variant):
    config = tiny_config.replace(**VARIANTS[variant])
    theirs = _hf_model(config)
    if not config.tie_embeddings:  # 5.x ties on init; give the head its own values, as a v1.1 checkpoint has
        theirs.lm_head.weight = torch.nn.Parameter(torch.randn_like(theirs.shared.weight) * 0.2)
    theirs.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    assert not model.training
    assert model.config.tie_embeddings == config.tie_embeddings
    assert model.config.replace(name="x") == config.replace(name="x")
    assert all(p.requires_grad for p in model.parameters())
    _assert_same_outputs(model, theirs, config)


def test_round_trip_through_t5lab_keeps_every_tensor_and_the_name(tmp_path, tiny_config):
    model = build_model(tiny_config.replace(tie_embeddings=False, feed_forward="gated-gelu"), seed=3)
    save_pretrained(model, tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.config == model.config
    a, b = model.state_dict(), loaded.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_v1_1_saved_by_transformers_5_is_untied_without_rescale(tmp_path, tiny_config):
    # transformers 5.x ties every T5 head and records v1.1's missing rescale as scale_decoder_outputs: false.
    config = tiny_config.replace(feed_forward="gated-gelu", tie_embeddings=False)
    theirs = _hf_model(config)
    theirs.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["scale_decoder_outputs"] is False
    model = load_pretrained(tmp_path)
    assert model.lm_head is not None
    assert torch.equal(model.lm_head.weight, model.shared.weight)
    assert model.lm_head.weight.data_ptr() != model.shared.weight.data_ptr()
    _assert_same_outputs(model, theirs, config)


@pytest.mark.parametrize("tie", [True, False])
def test_transformers_4_style_folder(tmp_path, tiny_config, tie):
    """4.x config.json (tie_word_embeddings, no scale_decoder_outputs) with every tensor 4.x stored."""
    config = tiny_config.replace(tie_embeddings=tie)
    model = build_model(config, seed=5).eval()
    state = hf.to_hf_state_dict(model)
    if tie:
        state["lm_head.weight"] = state["shared.weight"].clone()
    state["encoder.embed_tokens.weight"] = state["shared.weight"].clone()
    state["decoder.embed_tokens.weight"] = state["shared.weight"].clone()
    state["decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight"] = torch.zeros(8, 3)
    torch.save(state, tmp_path / "pytorch_model.bin")
    hf_config = to_hf(config)
    assert "scale_decoder_outputs" not in hf_config and hf_config["tie_word_embeddings"] is tie
    (tmp_path / "config.json").write_text(json.dumps(hf_config))
    loaded = load_pretrained(tmp_path)
    assert (loaded.lm_head is None) == tie
    ids, mask, labels = _batch(config)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(ids, mask, labels=labels).logits, model(ids, mask, labels=labels).logits
        )


def test_sharded_safetensors(tmp_path, tiny_config):
    theirs = _hf_model(tiny_config)
    theirs.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    assert len(list(tmp_path.glob("model-*-of-*.safetensors"))) > 1
    _assert_same_outputs(load_pretrained(tmp_path), theirs, tiny_config)


def test_pytorch_model_bin(tmp_path, tiny_config):
    # transformers 5.x dropped safe_serialization=False: write the .bin as 4.x did, from its state dict.
    theirs = _hf_model(tiny_config)
    theirs.config.save_pretrained(tmp_path)
    torch.save(theirs.state_dict(), tmp_path / "pytorch_model.bin")
    model = load_pretrained(tmp_path, dtype=torch.float32)
    _assert_same_outputs(model, theirs, tiny_config)


def test_dtype_and_attention_options(tmp_path, tiny_config):
    save_pretrained(build_model(tiny_config, seed=0), tmp_path)
    model = load_pretrained(tmp_path, dtype=torch.bfloat16, attention="sdpa")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.encoder.layers[0].self_attn.kernel is model.decoder.layers[0].self_attn.kernel


@pytest.mark.parametrize(
    "changes", [{"tie_key_value": True}, {"num_kv_heads": 1}, {"tie_key_value": True, "num_kv_heads": 1}]
)
def test_t5lab_only_variants_round_trip(tmp_path, tiny_config, changes):
    model = build_model(tiny_config.replace(**changes), seed=2).eval()
    save_pretrained(model, tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.config == model.config
    ids, mask, labels = _batch(tiny_config)
    with torch.no_grad():
        torch.testing.assert_close(
            loaded(ids, mask, labels=labels).logits, model(ids, mask, labels=labels).logits
        )
    # transformers cannot run them, and says so instead of loading mis-shaped or half-used tensors.
    _, info = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path, output_loading_info=True)
    assert any("t5lab_k" in k for k in info["unexpected_keys"])


def test_tokenizer_is_saved_with_the_checkpoint(tmp_path, tiny_config):
    class Tok:
        def save(self, folder):
            (folder / "spiece.model").write_bytes(b"pieces")

    save_pretrained(build_model(tiny_config), tmp_path / "c", tokenizer=Tok())
    assert (tmp_path / "c" / "spiece.model").read_bytes() == b"pieces"


def test_save_to_the_current_folder(tmp_path, tiny_config, monkeypatch):
    (tmp_path / "run").mkdir()
    monkeypatch.chdir(tmp_path / "run")
    save_pretrained(build_model(tiny_config), ".")
    assert load_pretrained(tmp_path / "run").config.d_ff == tiny_config.d_ff


def test_load_model_by_name_or_folder(tmp_path, tiny_config, monkeypatch):
    model = load_model("t5-efficient-tiny-nl2", device="meta")
    assert model.config.num_encoder_layers == 2 and not model.training
    save_pretrained(build_model(tiny_config, seed=0), tmp_path)
    assert load_model(tmp_path).config.d_model == tiny_config.d_model
    with pytest.raises(T5LabError, match="neither an existing folder nor a known shape name.*did you mean"):
        load_model("t5-efficent-tiny")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id is looked up (tests/interop/test_hub.py), never random
    with pytest.raises(T5LabError, match="not in the Hugging Face cache"):
        load_model("google/t5-v1_1-base")


# --------------------------------------------------------------------------------------------------------
# Bad input
@pytest.fixture
def saved(tmp_path, tiny_config):
    save_pretrained(build_model(tiny_config, seed=0), tmp_path / "ckpt")
    return tmp_path / "ckpt"


def _rewrite_weights(folder, edit):
    from safetensors.torch import load_file, save_file

    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors")


def test_missing_folder_config_or_weights(tmp_path, saved):
    with pytest.raises(T5LabError, match="nope: no such folder"):
        load_pretrained(tmp_path / "nope")
    (saved / "model.safetensors").rename(tmp_path / "w.safetensors")
    with pytest.raises(T5LabError, match=r"ckpt: no weights file \(expected one of model.safetensors"):
        load_pretrained(saved)
    (saved / "config.json").unlink()
    with pytest.raises(T5LabError, match="config.json: no such file"):
        load_pretrained(saved)


def test_malformed_config(saved):
    (saved / "config.json").write_text('{"d_model": 24,')
    with pytest.raises(T5LabError, match="config.json: not valid JSON"):
        load_pretrained(saved)
    data = to_hf(ModelConfig()) | {"feed_forward_proj": "gated-swish"}
    (saved / "config.json").write_text(json.dumps(data))
    with pytest.raises(T5LabError, match="config.json: field 'feed_forward_proj'='gated-swish'"):
        load_pretrained(saved)


def test_missing_extra_and_misshaped_tensors(saved):
    name = "decoder.block.2.layer.2.DenseReluDense.wo.weight"
    _rewrite_weights(saved, lambda s: s.pop(name))
    with pytest.raises(T5LabError, match=f"model.safetensors: missing tensor '{name}'"):
        load_pretrained(saved)
    _rewrite_weights(saved, lambda s: s.update({name: torch.zeros(24, 37)}))
    load_pretrained(saved)
    extra = "decoder.block.3.layer.0.SelfAttention.q.weight"
    _rewrite_weights(saved, lambda s: s.update({extra: torch.zeros(30, 24)}))
    with pytest.raises(T5LabError, match=f"model.safetensors: unexpected tensor '{extra}'"):
        load_pretrained(saved)
    _rewrite_weights(saved, lambda s: (s.pop(extra), s.update({name: torch.zeros(37, 24)})))
    with pytest.raises(T5LabError, match=rf"'{name}' has shape \[37, 24\], expected \[24, 37\]"):
        load_pretrained(saved)


def test_distinct_head_with_rescale_is_refused(saved):
    _rewrite_weights(saved, lambda s: s.update({"lm_head.weight": torch.randn(101, 24)}))
    with pytest.raises(T5LabError, match="'lm_head.weight' differs from 'shared.weight'"):
        load_pretrained(saved)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors(saved, damage):
    path = saved / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncate" else b"\x07" * 64)
    with pytest.raises(T5LabError, match="model.safetensors: not a readable safetensors file"):
        load_pretrained(saved)


def test_sharded_index_errors(tmp_path, tiny_config):
    _hf_model(tiny_config).save_pretrained(tmp_path, max_shard_size="20KB")
    index = tmp_path / "model.safetensors.index.json"
    next(tmp_path.glob("model-00002-of-*.safetensors")).unlink()
    with pytest.raises(T5LabError, match="index.json: shard file .*model-00002-of-.* does not exist"):
        load_pretrained(tmp_path)
    index.write_text("[1, 2]")
    with pytest.raises(T5LabError, match="index.json: expected a JSON object with a 'weight_map' field"):
        load_pretrained(tmp_path)


def test_bin_that_is_not_a_plain_tensor_dict(saved):
    (saved / "model.safetensors").unlink()
    torch.save({"shared.weight": fractions.Fraction(1, 3)}, saved / "pytorch_model.bin")
    with pytest.raises(
        T5LabError, match="pytorch_model.bin: not a plain tensor state dict.*GLOBAL fractions.Fraction"
    ):
        load_pretrained(saved)
    torch.save([torch.zeros(2)], saved / "pytorch_model.bin")
    with pytest.raises(T5LabError, match="pytorch_model.bin: expected a dict of tensor names to tensors"):
        load_pretrained(saved)
    torch.save({"shared.weight": torch.zeros(1000)}, saved / "pytorch_model.bin")
    data = (saved / "pytorch_model.bin").read_bytes()
    (saved / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(T5LabError, match="pytorch_model.bin: not a readable PyTorch weights file"):
        load_pretrained(saved)


def test_save_onto_a_file_is_refused(tmp_path, tiny_config):
    (tmp_path / "f").write_text("x")
    with pytest.raises(T5LabError, match="f: exists and is not a folder"):
        save_pretrained(build_model(tiny_config), tmp_path / "f")


# --------------------------------------------------------------------------------------------------------
# Atomic saves
def test_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, tiny_config, monkeypatch):
    folder = tmp_path / "ckpt"
    good = build_model(tiny_config, seed=0)
    save_pretrained(good, folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", filename)

    monkeypatch.setattr(hf, "save_file", crash)
    with pytest.raises(T5LabError, match="model.safetensors: no space left on device$"):
        save_pretrained(build_model(tiny_config.replace(d_ff=41), seed=1), folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary folder left behind
    assert load_pretrained(folder).config.d_ff == tiny_config.d_ff


def test_resave_replaces_weights_and_keeps_other_files(tmp_path, tiny_config):
    _hf_model(tiny_config).save_pretrained(tmp_path / "ckpt", max_shard_size="20KB")
    (tmp_path / "ckpt" / "notes.txt").write_text("keep me")
    save_pretrained(build_model(tiny_config.replace(d_ff=41), seed=1), tmp_path / "ckpt")
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["config.json", "generation_config.json", "model.safetensors", "notes.txt"]
    assert load_pretrained(tmp_path / "ckpt").config.d_ff == 41
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_sharded_save_is_what_transformers_loads(tmp_path, tiny_config):
    from transformers import T5ForConditionalGeneration

    model = build_model(tiny_config, seed=3).eval()
    folder = save_pretrained(model, tmp_path / "ckpt", max_shard_size=20_000)
    shards = sorted(p.name for p in folder.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and not (folder / "model.safetensors").exists()
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == set(shards)
    ids = torch.randint(2, tiny_config.vocab_size, (2, 9))
    ours = model(ids, decoder_input_ids=ids[:, :5]).logits
    theirs = T5ForConditionalGeneration.from_pretrained(folder).eval()(input_ids=ids, decoder_input_ids=ids[:, :5]).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(load_pretrained(folder)(ids, decoder_input_ids=ids[:, :5]).logits, ours)
    with pytest.raises(T5LabError, match="max_shard_size=0"):
        save_pretrained(model, tmp_path / "bad", max_shard_size=0)
