"""Hugging Face transformers checkpoints ⇄ t5lab models: the only module that knows HF weight names.

`HF_KEYS` is one declarative map, t5lab state_dict name → transformers name, with `{}` standing for a layer
index (torchtitan style); loading reads it right-to-left, saving left-to-right. Any tensor the map does not
account for, any tensor the model needs but the checkpoint lacks, and any shape mismatch is a `T5LabError`
naming the tensor and the file: nothing is silently dropped or left at its initial value.

Tensors deliberately ignored when reading (`IGNORED_HF_KEYS`): `encoder.embed_tokens.weight` and
`decoder.embed_tokens.weight` (transformers' copies of `shared.weight`) and the
`decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight` of old checkpoints (cross-attention
has no position bias; transformers ignores it too).

Output embedding and the d_model**-0.5 rescale. Mesh-TF T5 ties the output projection to `shared` *and*
rescales the decoder output by d_model**-0.5 (v1.0, T5-efficient, Switch); v1.1 has its own `lm_head` and no
rescale. t5lab keeps those two facts together (`ModelConfig.tie_embeddings`); transformers 5.x splits them:
`scale_decoder_outputs` (read from the config, 4.x's `tie_word_embeddings`) decides the rescale, and the
head is untied only when the checkpoint stores `lm_head.weight` with values different from `shared.weight`.
So on loading, the config decides the rescale, and hence t5lab's tying; the weights must agree with it:
- rescale on, head absent or equal to `shared`: tied (v1.0 style);
- rescale off, head stored and different: untied (v1.1 style);
- rescale off, head absent (a v1.1 model saved by transformers 5.x, which ties it): untied, with `lm_head`
  a copy of `shared` — the same logits, though the two no longer move together when fine-tuned;
- rescale on, head stored and different: refused, t5lab has no such model.
On saving, a tied model writes `shared.weight` only (as transformers 5.x does; both 4.x and 5.x tie the
head on loading), an untied one writes both tensors and `tie_word_embeddings: false`, which 4.x reads as
untied and 5.x as "no rescale" while keeping the distinct stored head untied.

Variants transformers cannot run (`-skv` tied key/value, `-sh` fewer key/value heads) round-trip through
t5lab only: config.json carries `t5lab_tie_key_value` / `t5lab_num_kv_heads`, and their key/value tensors
are stored as `...Attention.t5lab_kv.weight` (one projection for both) or `t5lab_k` / `t5lab_v` (G*K rows), so
that transformers reports them as unexpected instead of loading mis-shaped or half-used tensors.
"""

from __future__ import annotations

import difflib
import json
import os
import pickle
import re
import shutil
import uuid
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from t5lab.config import ModelConfig
from t5lab.errors import T5LabError
from t5lab.files import (
    file_mode,
    make_folder,
    os_errors,
    process_alive,
    remove_dead_leftovers,
    replace_dir_atomic,
)
from t5lab.interop.hf_config import from_hf, to_hf
from t5lab.interop.hub import resolve_checkpoint
from t5lab.kernels import set_attention
from t5lab.model import T5, build_model

# t5lab name → transformers name. `{}` is the block index. The feed-forward and norms sit at sublayer 1 in the
# encoder and 2 in the decoder (the decoder's sublayer 1 is cross-attention). Switch models rename the
# feed-forward `mlp` and add their router/expert entries in `key_map` (`SWITCH_KEYS`).
HF_KEYS: dict[str, str] = {
    "shared.weight": "shared.weight",
    "lm_head.weight": "lm_head.weight",
    # encoder
    "encoder.relative_bias.embedding.weight": "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    "encoder.layers.{}.self_attn_norm.weight": "encoder.block.{}.layer.0.layer_norm.weight",
    "encoder.layers.{}.self_attn.q.weight": "encoder.block.{}.layer.0.SelfAttention.q.weight",
    "encoder.layers.{}.self_attn.k.weight": "encoder.block.{}.layer.0.SelfAttention.k.weight",
    "encoder.layers.{}.self_attn.v.weight": "encoder.block.{}.layer.0.SelfAttention.v.weight",
    "encoder.layers.{}.self_attn.o.weight": "encoder.block.{}.layer.0.SelfAttention.o.weight",
    "encoder.layers.{}.ffn_norm.weight": "encoder.block.{}.layer.1.layer_norm.weight",
    "encoder.layers.{}.ffn.wi.weight": "encoder.block.{}.layer.1.DenseReluDense.wi.weight",
    "encoder.layers.{}.ffn.wi_0.weight": "encoder.block.{}.layer.1.DenseReluDense.wi_0.weight",
    "encoder.layers.{}.ffn.wi_1.weight": "encoder.block.{}.layer.1.DenseReluDense.wi_1.weight",
    "encoder.layers.{}.ffn.wo.weight": "encoder.block.{}.layer.1.DenseReluDense.wo.weight",
    "encoder.final_norm.weight": "encoder.final_layer_norm.weight",
    # decoder
    "decoder.relative_bias.embedding.weight": "decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight",
    "decoder.layers.{}.self_attn_norm.weight": "decoder.block.{}.layer.0.layer_norm.weight",
    "decoder.layers.{}.self_attn.q.weight": "decoder.block.{}.layer.0.SelfAttention.q.weight",
    "decoder.layers.{}.self_attn.k.weight": "decoder.block.{}.layer.0.SelfAttention.k.weight",
    "decoder.layers.{}.self_attn.v.weight": "decoder.block.{}.layer.0.SelfAttention.v.weight",
    "decoder.layers.{}.self_attn.o.weight": "decoder.block.{}.layer.0.SelfAttention.o.weight",
    "decoder.layers.{}.cross_attn_norm.weight": "decoder.block.{}.layer.1.layer_norm.weight",
    "decoder.layers.{}.cross_attn.q.weight": "decoder.block.{}.layer.1.EncDecAttention.q.weight",
    "decoder.layers.{}.cross_attn.k.weight": "decoder.block.{}.layer.1.EncDecAttention.k.weight",
    "decoder.layers.{}.cross_attn.v.weight": "decoder.block.{}.layer.1.EncDecAttention.v.weight",
    "decoder.layers.{}.cross_attn.o.weight": "decoder.block.{}.layer.1.EncDecAttention.o.weight",
    "decoder.layers.{}.ffn_norm.weight": "decoder.block.{}.layer.2.layer_norm.weight",
    "decoder.layers.{}.ffn.wi.weight": "decoder.block.{}.layer.2.DenseReluDense.wi.weight",
    "decoder.layers.{}.ffn.wi_0.weight": "decoder.block.{}.layer.2.DenseReluDense.wi_0.weight",
    "decoder.layers.{}.ffn.wi_1.weight": "decoder.block.{}.layer.2.DenseReluDense.wi_1.weight",
    "decoder.layers.{}.ffn.wo.weight": "decoder.block.{}.layer.2.DenseReluDense.wo.weight",
    "decoder.final_norm.weight": "decoder.final_layer_norm.weight",
}

# Switch (model_type switch_transformers): a sparse block's router and experts. t5lab stacks the experts'
# weights ([E, F, D] / [E, D, F]); in this map each appears split per expert as `ffn.wi.{e}` (see
# `_split_experts`), the second `{}` being the expert index.
SWITCH_KEYS: dict[str, str] = {
    f"{stack}.layers.{{}}.ffn.{ours}": f"{stack}.block.{{}}.layer.{sub}.mlp.{theirs}"
    for stack, sub in (("encoder", 1), ("decoder", 2))
    for ours, theirs in {
        "router.weight": "router.classifier.weight",
        "router.bias": "router.classifier.bias",
        **{f"{w}.{{}}": f"experts.expert_{{}}.{w}.weight" for w in ("wi", "wi_0", "wi_1", "wo")},
    }.items()
}
_STACKED_EXPERTS = re.compile(r"^(.*\.ffn\.(?:wi|wi_0|wi_1|wo))$")
_ONE_EXPERT = re.compile(r"^(.*\.ffn\.(?:wi|wi_0|wi_1|wo))\.(\d+)$")

IGNORED_HF_KEYS = frozenset(
    {
        "encoder.embed_tokens.weight",
        "decoder.embed_tokens.weight",
        "decoder.block.0.layer.1.EncDecAttention.relative_attention_bias.weight",
    }
)

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_GENERATED_FILES = (
    "config.json",
    "generation_config.json",
)  # with WEIGHT_FILES and shards: what a save replaces


def key_map(config: ModelConfig) -> dict[str, str]:
    """`HF_KEYS` adjusted for `config`: t5lab-only names for the attention variants transformers lacks.

    Templates may hold several `{}` (a Switch expert is `...layer.{}.mlp.experts.expert_{}.wi.weight`); Switch
    models add their router/expert entries here, and rename dense layers' `DenseReluDense` to `mlp`.
    """
    keys = dict(HF_KEYS)
    if config.tie_key_value or config.num_kv_heads is not None:
        for ours, theirs in HF_KEYS.items():
            for proj in ("k", "v"):
                if not ours.endswith(f"attn.{proj}.weight"):
                    continue
                if config.tie_key_value and proj == "v":  # the model has no `v`: `k` serves both
                    del keys[ours]
                else:
                    name = "t5lab_kv" if config.tie_key_value else f"t5lab_{proj}"
                    keys[ours] = theirs.removesuffix(f".{proj}.weight") + f".{name}.weight"
    if config.is_moe:
        # Dense blocks of a Switch model name their feed-forward `mlp` (not `DenseReluDense`).
        keys = {ours: theirs.replace(".DenseReluDense.", ".mlp.") for ours, theirs in keys.items()}
        keys.update(SWITCH_KEYS)
    return keys


def _split_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Stacked expert weights `...ffn.wi` [E, ...] → one entry per expert, `...ffn.wi.{e}`, for the key map."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if _STACKED_EXPERTS.match(name) and tensor.dim() == 3:
            out.update({f"{name}.{e}": tensor[e] for e in range(tensor.shape[0])})  # views; see to_hf_state_dict
        else:
            out[name] = tensor
    return out


def _stack_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `_split_experts`."""
    out: dict[str, torch.Tensor] = {}
    experts: dict[str, dict[int, torch.Tensor]] = {}
    for name, tensor in state.items():
        match = _ONE_EXPERT.match(name)
        if match:
            experts.setdefault(match.group(1), {})[int(match.group(2))] = tensor
        else:
            out[name] = tensor
    for name, per_expert in experts.items():
        out[name] = torch.stack([per_expert[e] for e in range(len(per_expert))])
    return out


def _rename(names: list[str], mapping: dict[str, str]) -> dict[str, str | None]:
    """Each name → its image under the `{}`-template `mapping` (None when no template matches)."""
    patterns = [
        (re.compile("^" + re.escape(src).replace(r"\{\}", r"(\d+)") + "$"), dst)
        for src, dst in mapping.items()
    ]
    out: dict[str, str | None] = {}
    for name in names:
        out[name] = None
        for pattern, dst in patterns:
            match = pattern.match(name)
            if match:
                out[name] = dst.format(*match.groups())
                break
    return out


# --------------------------------------------------------------------------------------------------------
# Saving
def to_hf_state_dict(model: T5) -> dict[str, torch.Tensor]:
    """The model's tensors under transformers' names (on CPU, contiguous, no two sharing memory)."""
    state = _split_experts(model.state_dict())
    names = _rename(list(state), key_map(model.config))
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for ours, theirs in names.items():
        if theirs is None:
            raise T5LabError(f"tensor '{ours}': no Hugging Face name for it in t5lab.interop.hf.key_map")
        tensor = state[ours].detach().to("cpu").contiguous()
        # safetensors refuses to store shared memory twice; per-expert slices share their stack's storage.
        if tensor.data_ptr() in seen or _ONE_EXPERT.match(ours):
            tensor = tensor.clone()
        seen.add(tensor.data_ptr())
        out[theirs] = tensor
    return out


def save_pretrained(model: T5, path: str | Path, tokenizer: Any = None, max_shard_size: int | None = None) -> Path:
    """Write a transformers checkpoint folder: config.json, model.safetensors, generation_config.json, and
    the tokenizer's files when one is given (anything with a `save(folder)` method).

    With `max_shard_size` (bytes), weights larger than that are split as transformers splits them:
    model-00001-of-0000N.safetensors ... and model.safetensors.index.json mapping each tensor to its file.

    The folder is written beside `path` and swapped in only once complete, so a failure never leaves a
    half-written checkpoint where a good one was. Files of an earlier checkpoint at `path` that this one does
    not write (logs, a tokenizer) are kept; its weights and configs are replaced.
    """
    path = Path(os.path.abspath(path))  # "." or "ckpt/" still name a sibling for the temporary folder
    if path.exists() and not path.is_dir():
        raise T5LabError(f"{path}: exists and is not a folder (expected a checkpoint folder to write)")
    config = model.config
    if config.is_moe and config.expert_capacity is None:
        warnings.warn(
            f"{path}: this Switch model routes with capacity factors (ceil(T/E x {config.capacity_factor_train}) "
            f"slots per expert in training, x {config.capacity_factor_eval} in evaluation) but transformers only "
            "knows a fixed expert_capacity, written as 64: where capacity binds, transformers' outputs differ "
            "from t5lab's (t5lab reloads the factors). Set expert_capacity to make them agree.",
            stacklevel=2,
        )
    tensors = to_hf_state_dict(model)
    hf_config = to_hf(config)
    if config.name != "custom":
        hf_config["_name_or_path"] = config.name  # from_hf reads the shape's name back from here
    generation = {
        "decoder_start_token_id": config.decoder_start_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
    }

    def write(folder: Path) -> None:
        (folder / "config.json").write_text(json.dumps(hf_config, indent=2) + "\n")
        (folder / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
        shards = _shards(tensors, max_shard_size)
        if len(shards) == 1:
            save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
        else:
            names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
            weight_map = {key: name for name, shard in zip(names, shards, strict=True) for key in shard}
            for name, shard in zip(names, shards, strict=True):
                save_file(shard, str(folder / name), metadata={"format": "pt"})
            size = sum(t.numel() * t.element_size() for t in tensors.values())
            index = {"metadata": {"total_size": size}, "weight_map": weight_map}
            (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
        if tokenizer is not None:
            tokenizer.save(folder)

    _write_folder_atomically(path, write)
    return path


def _shards(tensors: dict[str, torch.Tensor], max_bytes: int | None) -> list[dict[str, torch.Tensor]]:
    """Tensors in order, in groups of at most `max_bytes` (a larger tensor alone), as transformers shards."""
    if max_bytes is None:
        return [tensors]
    if max_bytes <= 0:
        raise T5LabError(f"max_shard_size={max_bytes}: expected a positive number of bytes")
    shards: list[dict[str, torch.Tensor]] = [{}]
    used = 0
    for key, tensor in tensors.items():
        size = tensor.numel() * tensor.element_size()
        if shards[-1] and used + size > max_bytes:
            shards.append({})
            used = 0
        shards[-1][key] = tensor
        used += size
    return shards


def _is_generated(name: str) -> bool:
    return (
        name in _GENERATED_FILES
        or name in WEIGHT_FILES
        or re.fullmatch(r"(model|pytorch_model)-\d+-of-\d+\.(safetensors|bin)", name) is not None
    )


def _write_folder_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """Run `write` on a fresh sibling folder, then put it in place of `path` by renames. Leftovers of a write
    killed earlier (`.NAME.tmp-PID-*`, `.NAME.old-PID-*` whose PID has died) are cleaned first; an OS failure
    (disk full, permission, read-only) is a one-line `T5LabError` naming the path."""
    make_folder(path.parent)
    _clean_killed_writes(path)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp = path.with_name(f".{path.name}.tmp-{tag}")
    with os_errors(path):
        tmp.mkdir()
        try:
            write(tmp)
            for file in tmp.iterdir():  # safetensors creates its file 0600
                file.chmod(file_mode())
            # Files the new checkpoint does not supersede (logs, a tokenizer) carry over from the old folder.
            replace_dir_atomic(tmp, path, keep=lambda name: not _is_generated(name))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _clean_killed_writes(path: Path) -> None:
    name = re.escape(path.name)
    if not path.exists():  # killed between moving the old folder aside and moving the new one in
        for old in sorted(path.parent.glob(f".{path.name}.old-*")):
            match = re.match(rf"^\.{name}\.old-(\d+)-", old.name)
            if match and not process_alive(int(match.group(1))):
                os.replace(old, path)
                break
    remove_dead_leftovers(path.parent, re.compile(rf"^\.{name}\.(?:tmp|old)-(?P<pid>\d+)-"))


# --------------------------------------------------------------------------------------------------------
# Loading
def load_pretrained(
    path: str | Path,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    attention: str = "eager",
) -> T5:
    """A t5lab model from a transformers T5 checkpoint folder (config.json + safetensors, sharded safetensors
    or pytorch_model.bin), in eval mode like `from_pretrained`. `dtype` None gives torch's default float
    dtype (fp32), whatever the checkpoint stores. `path` may also be a hub id (`google/t5-v1_1-base`), read
    through huggingface_hub's cache (`interop.hub`).
    """
    check_device(device)
    folder = resolve_checkpoint(path)
    if folder is None:
        raise T5LabError(f"{path}: no such folder (expected a Hugging Face checkpoint folder or an org/name hub id)")
    config = from_hf(folder)  # decides the rescale, hence tying (see the module docstring)
    tensors, origin, weights_file = _read_weights(folder)
    for name in IGNORED_HF_KEYS:
        tensors.pop(name, None)

    shared, head = tensors.get("shared.weight"), tensors.get("lm_head.weight")
    distinct_head = (
        head is not None
        and shared is not None
        and (head.shape != shared.shape or not torch.equal(head, shared))
    )
    if config.tie_embeddings:
        if distinct_head:
            raise T5LabError(
                f"{origin['lm_head.weight']}: tensor 'lm_head.weight' differs from 'shared.weight' but "
                f"{folder / 'config.json'} asks for the tied output rescale (tie_word_embeddings/scale_decoder_"
                "outputs true); an untied head with the rescale is not a T5 model t5lab can build"
            )
        tensors.pop("lm_head.weight", None)
    elif head is None and shared is not None:
        tensors["lm_head.weight"] = shared.clone()  # a v1.1 model saved by transformers 5.x, which ties it
        origin["lm_head.weight"] = origin["shared.weight"]

    # Built on the meta device and assigned the checkpoint's tensors: nothing is initialised to be overwritten.
    model = build_model(config, device="meta", init=False)
    expected = {name: tuple(t.shape) for name, t in _split_experts(model.state_dict()).items()}
    hf_names = _rename(list(expected), key_map(config))
    missing = [theirs or ours for ours, theirs in hf_names.items() if theirs not in tensors]
    if missing:
        raise T5LabError(
            f"{weights_file}: missing tensor '{missing[0]}'"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + " needed by the model config.json describes"
        )
    unexpected = sorted(set(tensors) - set(hf_names.values()))
    if unexpected:
        close = difflib.get_close_matches(unexpected[0], [n for n in hf_names.values() if n], n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise T5LabError(
            f"{origin[unexpected[0]]}: unexpected tensor '{unexpected[0]}'"
            + (f" (and {len(unexpected) - 1} more)" if len(unexpected) > 1 else "")
            + f" that the model config.json describes has no place for{hint}"
        )
    state: dict[str, torch.Tensor] = {}
    for ours, theirs in hf_names.items():
        assert theirs is not None  # a name without a checkpoint counterpart was reported missing above
        tensor = tensors[theirs]
        if tuple(tensor.shape) != expected[ours]:
            raise T5LabError(
                f"{origin[theirs]}: tensor '{theirs}' has shape {list(tensor.shape)}, expected "
                f"{list(expected[ours])} from config.json"
            )
        if tensor.is_floating_point():
            tensor = tensor.to(dtype or torch.get_default_dtype())
        state[ours] = tensor.to(device or "cpu")
    model.load_state_dict(_stack_experts(state), strict=True, assign=True)
    return with_attention(model, attention).eval()


def _read_weights(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Path], Path]:
    """All tensors of the folder's weights (first of WEIGHT_FILES present), each tensor's file, and the
    weights file (or index) that was read."""
    for name in WEIGHT_FILES:
        path = folder / name
        if path.is_file():
            break
    else:
        raise T5LabError(f"{folder}: no weights file (expected one of {', '.join(WEIGHT_FILES)})")
    files = _shard_files(path) if name.endswith(".index.json") else [path]
    tensors: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for file in files:
        for key, tensor in _read_tensor_file(file).items():
            if key in tensors:
                raise T5LabError(f"{file}: tensor '{key}' is also stored in {origin[key]}")
            tensors[key] = tensor
            origin[key] = file
    return tensors, origin, path


def _shard_files(index: Path) -> list[Path]:
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise T5LabError(f"{index}: not valid JSON ({e})") from None
    except (KeyError, TypeError):
        raise T5LabError(f"{index}: expected a JSON object with a 'weight_map' field") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise T5LabError(f"{index}: field 'weight_map' must map tensor names to shard file names")
    shards = [index.parent / name for name in sorted(set(weight_map.values()))]
    for shard in shards:
        if not shard.is_file():
            raise T5LabError(f"{index}: shard file {shard} does not exist")
    return shards


def _read_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise T5LabError(f"{path}: not a readable safetensors file (truncated or corrupt? {e})") from None
    try:
        # weights_only: a checkpoint is untrusted input; anything but tensors and plain containers is refused.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a page of advice to disable weights_only; keep only the reason.
        match = re.search(r"WeightsUnpickler error:\s*(.*?)(?:\. |\n|$)", str(e), re.S)
        reason = match.group(1) if match else str(e).strip().splitlines()[0]
        raise T5LabError(
            f"{path}: not a plain tensor state dict, refused by torch.load(weights_only=True) ({reason})"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise T5LabError(f"{path}: not a readable PyTorch weights file (truncated or corrupt? {e})") from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise T5LabError(f"{path}: expected a dict of tensor names to tensors")
    return state


# --------------------------------------------------------------------------------------------------------
def with_attention(model: T5, attention: str) -> T5:
    """The plain model's reference kernel for "eager"; another named kernel from t5lab.kernels."""
    return model if attention == "eager" else set_attention(model, attention)


def check_device(device: torch.device | str | None) -> None:
    """A device the user named, checked before any weight is read: a typo or a missing GPU is one line."""
    if device is None or isinstance(device, torch.device) and device.type != "cuda":
        return
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        raise T5LabError(f"device {device!r}: expected 'cpu', 'cuda' or 'cuda:N'") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise T5LabError(f"device {device!r}: no CUDA device is available (use 'cpu')")
