"""LoRA through peft: adapters in peft's format on Hugging Face names, checked against transformers + peft
(the reference), merged folders, adapters saved by peft itself, freezing and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import t5lab as t5lab_package
from t5lab import T5LabError, load_model, load_pretrained
from t5lab.interop import hf
from t5lab.interop import peft as lora
from t5lab.model import build_model

transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")


# As in tests/recipes/test_finetune.py: T5's vocabulary (the real tokenizer fits), few CPU steps.
SHAPE = "t5-efficient-tiny-nl1-dm32-ff48-kv8-nh2"
SRC = Path(t5lab_package.__file__).resolve().parents[1]


def t5lab(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "t5lab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def _batch(config, B=3, S=9, T=7):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(2, config.vocab_size, (B, S), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    labels = torch.randint(2, config.vocab_size, (B, T), generator=g)
    return ids, mask, labels


def _randomise_adapters(model, seed=3):
    """peft starts B at zero (a no-op adapter); random A and B make the parity checks mean something. Small
    enough (0.1) that stacking adapters on every projection does not saturate attention, where fp32 rounding
    differences between the two implementations grow past 1e-4."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def _logits(model, config, hf_model=False):
    ids, mask, labels = _batch(config)
    with torch.no_grad():
        if hf_model:
            return model(input_ids=ids, attention_mask=mask, labels=labels).logits
        return model(ids, mask, labels=labels).logits


@pytest.fixture
def adapted(tmp_path, tiny_config):
    """A tiny base folder, and the t5lab model of it with random LoRA adapters on `targets`."""

    def make(targets="q,v", **changes):
        config = tiny_config.replace(**changes)
        hf.save_pretrained(build_model(config, seed=0), tmp_path / "base")
        model = lora.add_lora(load_pretrained(tmp_path / "base"), rank=4, alpha=8, targets=targets).eval()
        _randomise_adapters(model)
        return config, model

    return make


@pytest.mark.parametrize(
    ("targets", "changes"),
    [
        ("q,v", {}),
        ("q,k,v,o,wi_0,wi_1,wo", {"feed_forward": "gated-gelu", "tie_embeddings": False}),
    ],
)
def test_transformers_and_peft_load_the_adapter_with_the_same_logits(tmp_path, adapted, targets, changes):
    config, ours = adapted(targets, **changes)
    lora.save_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "base"))
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["task_type"] == "SEQ_2_SEQ_LM" and saved["base_model_name_or_path"] == str(tmp_path / "base")
    assert saved["target_modules"] == sorted(targets.split(","))
    base = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "base")
    theirs = peft.PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    # Every adapter tensor was taken up (a misnamed key would leave peft's zero-initialised B in place).
    loaded = {k for k in theirs.state_dict() if ".lora_" in k}
    assert len(loaded) == len(lora.adapter_state_dict(ours)) > 0
    torch.testing.assert_close(_logits(ours, config), _logits(theirs, config, True), atol=1e-4, rtol=1e-4)


def test_adapter_keys_are_hugging_face_module_names(adapted):
    _, model = adapted()
    keys = lora.adapter_state_dict(model)
    assert "base_model.model.encoder.block.0.layer.0.SelfAttention.q.lora_A.weight" in keys
    assert "base_model.model.decoder.block.2.layer.1.EncDecAttention.v.lora_B.weight" in keys
    assert keys["base_model.model.encoder.block.1.layer.0.SelfAttention.q.lora_A.weight"].shape == (4, 24)


def test_merged_folder_loads_in_transformers_and_matches_the_adapter_model(tmp_path, adapted):
    config, ours = adapted()
    expected = _logits(ours, config)
    lora.save_merged(ours, tmp_path / "merged")
    assert lora.has_lora(ours)  # saving a merged copy leaves the model's adapters alone
    theirs, info = transformers.T5ForConditionalGeneration.from_pretrained(
        tmp_path / "merged", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(_logits(theirs.eval(), config, True), expected, atol=1e-4, rtol=1e-4)
    merged = lora.merge_lora(ours)
    assert not lora.has_lora(merged) and all(p.requires_grad for p in merged.parameters())
    torch.testing.assert_close(_logits(merged, config), expected, atol=1e-4, rtol=1e-4)


def test_load_adapter_reads_what_peft_itself_saved(tmp_path, adapted):
    config, _ = adapted()
    base = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / "base")
    theirs = peft.get_peft_model(
        base, peft.LoraConfig(r=2, lora_alpha=5, target_modules=["k", "o"], task_type="SEQ_2_SEQ_LM")
    )
    _randomise_adapters(theirs, seed=5)
    theirs.save_pretrained(tmp_path / "peft-adapter")
    ours = lora.load_adapter(load_pretrained(tmp_path / "base"), tmp_path / "peft-adapter")
    torch.testing.assert_close(
        _logits(ours, config), _logits(theirs.eval(), config, True), atol=1e-4, rtol=1e-4
    )
    # ...and t5lab's own save round-trips.
    lora.save_adapter(ours, tmp_path / "again", base_model_name_or_path="base")
    again = lora.load_adapter(load_pretrained(tmp_path / "base"), tmp_path / "again")
    torch.testing.assert_close(_logits(again, config), _logits(ours, config))


def test_only_adapters_train_and_a_fresh_adapter_changes_nothing(tiny_config):
    model = build_model(tiny_config, seed=0).eval()
    before = _logits(model, tiny_config)
    lora.add_lora(model, rank=2, targets=("q", "v"), dropout=0.1)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_A." in n or ".lora_B." in n for n in trainable)
    assert lora.lora_config(model).lora_alpha == 4  # 2 * rank by default
    torch.testing.assert_close(_logits(model, tiny_config), before)  # B starts at zero
    ids, mask, labels = _batch(tiny_config)
    model.train()
    model(ids, mask, labels=labels).loss.backward()
    assert all(p.grad is None for n, p in model.named_parameters() if ".lora_" not in n)
    # With B zero, A's gradient is zero too; B's is not.
    assert all(p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_bad_settings_are_one_line_errors(tiny_config, tmp_path, monkeypatch):
    model = build_model(tiny_config, seed=0)
    with pytest.raises(
        T5LabError, match="lora_targets=q,query: expected a comma-separated subset of q,k,v,o"
    ):
        lora.add_lora(model, targets="q,query")
    with pytest.raises(T5LabError, match="lora_rank=0: expected a positive integer"):
        lora.add_lora(model, rank=0)
    with pytest.raises(T5LabError, match="no LoRA adapters"):
        lora.save_adapter(model, tmp_path / "a", base_model_name_or_path="x")
    with pytest.raises(T5LabError, match="no adapter_config.json"):
        lora.load_adapter(model, tmp_path)
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(T5LabError, match=r"pip install 't5lab\[lora\]'"):
        lora.add_lora(model)


def test_finetune_with_lora_saves_adapters_and_a_merged_folder(shared_data, spiece_model, tmp_path):
    """`t5lab finetune --lora-rank`: adapters in best/, the shape's random base in OUT/base, and best/merged/ a
    plain folder computing what the adapters on their base compute."""
    out = tmp_path / "run"
    run = t5lab(
        *("finetune", "--task", "glue/rte", "--model", SHAPE, "--tokenizer", str(spiece_model)),
        *("--data-dir", str(shared_data), "--out", str(out), "--max-input-length", "32"),
        *("--steps", "2", "--batch-size", "2", "--eval-every", "2", "--eval-limit", "2"),
        *("--lora-rank", "2", "--lora-targets", "q,v,wo", "--lora-merge", "true"),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr
    best = out / "best"
    saved = json.loads((best / "adapter_config.json").read_text())
    assert saved["r"] == 2 and saved["lora_alpha"] == 4 and saved["target_modules"] == ["q", "v", "wo"]
    assert saved["base_model_name_or_path"] == str((out / "base").resolve())
    assert (out / "base" / "model.safetensors").is_file() and not (best / "model.safetensors").exists()
    assert (best / "predictions.jsonl").is_file() and (best / "spiece.model").is_file()
    assert "- optimizer: adamw" in (best / "README.md").read_text()  # LoRA's default: Adafactor barely moves B = 0
    base = load_pretrained(out / "base")
    ours = lora.load_adapter(load_pretrained(out / "base"), best)
    assert any((p != 0).any() for n, p in ours.named_parameters() if "lora_B" in n)  # the adapters trained
    # merged/ holds the trained weights merged; equal to OUT/base + adapters only if the base stayed frozen.
    merged = load_pretrained(best / "merged")
    torch.testing.assert_close(_logits(merged, base.config), _logits(ours, base.config), atol=1e-5, rtol=1e-5)


def test_finetune_lora_merge_needs_a_rank():
    from t5lab.recipes.finetune import finetune

    with pytest.raises(T5LabError, match="lora_merge: expected lora_rank too"):
        finetune("glue/rte", "t5-efficient-tiny", lora_merge=True)


def test_an_adapter_folder_loads_as_a_model_with_its_adapters_merged(tmp_path, adapted):
    config, ours = adapted()
    lora.save_adapter(ours, tmp_path / "adapter", base_model_name_or_path=str(tmp_path / "base"))
    loaded = load_model(tmp_path / "adapter")  # what `t5lab generate/evaluate --model ADAPTER_DIR` do
    assert not lora.has_lora(loaded)
    torch.testing.assert_close(_logits(loaded, config), _logits(ours, config), atol=1e-5, rtol=1e-5)
