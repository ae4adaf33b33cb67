"""Hub ids through huggingface_hub's cache: a cache folder built on the fly, HF_HUB_OFFLINE=1, no network."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from t5lab import T5LabError, load_model, load_pretrained
from t5lab.cli import main
from t5lab.data.tokenizer import Tokenizer
from t5lab.interop import hub
from t5lab.interop.hf import save_pretrained, to_hf_state_dict
from t5lab.model import build_model

pytest.importorskip("huggingface_hub")
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty hub cache under tmp_path, the environment pointed at it, and the hub offline."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "hf" / "hub"


def _cache_repo(cache, repo_id, write) -> None:
    """The layout huggingface_hub writes: models--org--name/snapshots/<sha>/<files> and refs/main = <sha>."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / SHA
    write(snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(SHA)


def test_hub_id_loads_from_the_offline_cache(hub_cache, tiny_config):
    model = build_model(tiny_config, seed=3)
    _cache_repo(hub_cache, "acme/tiny-t5", lambda folder: save_pretrained(model, folder))
    for loaded in (load_pretrained("acme/tiny-t5"), load_model("acme/tiny-t5")):
        assert not loaded.training
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(loaded.state_dict()[name], tensor, rtol=0, atol=0)


def test_pytorch_bin_only_repository_loads(hub_cache, tiny_config):
    """Older repositories (google/t5-v1_1-*) publish pytorch_model.bin and no safetensors."""
    model = build_model(tiny_config, seed=4)

    def write(folder):
        save_pretrained(model, folder)
        torch.save(load_file(str(folder / "model.safetensors")), folder / "pytorch_model.bin")
        (folder / "model.safetensors").unlink()

    _cache_repo(hub_cache, "acme/old-t5", write)
    loaded = load_pretrained("acme/old-t5")
    assert torch.equal(to_hf_state_dict(loaded)["shared.weight"], to_hf_state_dict(model)["shared.weight"])


def test_uncached_hub_id_offline_is_one_line_error(hub_cache):
    with pytest.raises(T5LabError) as error:
        load_model("google/t5-v1_1-base")
    message = str(error.value)
    assert "\n" not in message
    assert "google/t5-v1_1-base" in message and str(hub_cache) in message and "HF_HUB_OFFLINE" in message


def test_local_folder_wins_and_shape_names_stay_random(hub_cache, tiny_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = build_model(tiny_config, seed=5)
    save_pretrained(model, tmp_path / "acme" / "local-t5")  # named like a hub id; the cache is empty
    assert torch.equal(load_model("acme/local-t5").state_dict()["shared.weight"], model.state_dict()["shared.weight"])
    assert hub.resolve_checkpoint("t5-efficient-tiny") is None
    assert not hub.is_hub_id("t5-efficient-tiny") and not hub.is_hub_id("runs/pretrain/final")
    assert hub.is_hub_id("google/t5-v1_1-base")


def test_cli_generate_takes_a_hub_id(hub_cache, tiny_config, spiece_model, capsys):
    model = build_model(tiny_config.replace(vocab_size=32128), seed=0)
    _cache_repo(hub_cache, "acme/tiny-t5", lambda f: save_pretrained(model, f, tokenizer=Tokenizer.from_file(spiece_model)))
    assert main(["generate", "--model", "acme/tiny-t5", "--max_new_tokens", "3", "--texts+", "Hello"]) == 0
    assert capsys.readouterr().out.startswith("> Hello\n")
    assert main(["generate", "--model", "acme/missing", "--texts+", "Hello"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "acme/missing" in err and "Hugging Face cache" in err


def test_pretrain_continues_from_a_hub_id(hub_cache, tiny_config, tmp_path):
    """`t5lab pretrain --model org/name` continues from the cached checkpoint, with its own tokenizer."""
    from t5lab.recipes.pretrain import pretrain

    lines = [f"line {i} of a small corpus about rivers and stones" for i in range(200)]
    tok = Tokenizer.train(lines, 40, tmp_path / "tok")
    (tmp_path / "corpus.txt").write_text("\n".join(lines) + "\n")
    model = build_model(tiny_config.replace(vocab_size=tok.vocab_size), seed=1)
    _cache_repo(hub_cache, "acme/tiny-t5", lambda f: save_pretrained(model, f, tokenizer=tok))
    final = pretrain(model="acme/tiny-t5", data=str(tmp_path / "corpus.txt"), out=str(tmp_path / "run"), steps=1,
                     batch_size=2, inputs_length=16, eval_every=0, save_every=0, progress=False, precision="fp32")
    assert load_pretrained(final).config.d_model == tiny_config.d_model
    assert (final / "spiece.model").read_bytes() == (tmp_path / "tok" / "spiece.model").read_bytes()
