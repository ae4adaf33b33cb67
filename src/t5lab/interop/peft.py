"""LoRA fine-tuning with peft on t5lab's own T5, saved in peft's format under Hugging Face names.

peft's `inject_adapter_in_model` works on any `nn.Module`: it wraps the `nn.Linear` projections whose names
end in the targets (t5lab names them as transformers does: attention `q`, `k`, `v`, `o`; feed-forward `wi`,
`wi_0`, `wi_1`, `wo`) with `lora.Linear` layers and freezes everything else, so the training loop, which
optimises the parameters that require gradients, trains the adapters only. The model stays a `T5`.

`save_adapter` writes what `PeftModel.save_pretrained` writes for transformers' `T5ForConditionalGeneration`:
`adapter_config.json` (task_type SEQ_2_SEQ_LM, base_model_name_or_path) and `adapter_model.safetensors`
whose keys are the Hugging Face module names (`base_model.model.encoder.block.0.layer.0.SelfAttention.q.
lora_A.weight`), translated through `hf.key_map`. So transformers + peft load the adapter onto the HF model of
the same base folder and compute the same outputs; `save_merged` folds the adapters into the weights
(W += alpha/r * B @ A, peft's own `merge`) and writes a plain checkpoint folder.

peft is an optional extra (`pip install 't5lab[lora]'`), imported only when LoRA is used.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from t5lab.errors import T5LabError
from t5lab.files import write_atomic
from t5lab.interop.hf import _rename, key_map, save_pretrained
from t5lab.model import T5

DEFAULT_TARGETS = ("q", "v")  # the LoRA paper's choice, and peft's default for T5
ATTENTION_TARGETS = ("q", "k", "v", "o")
FEED_FORWARD_TARGETS = ("wi", "wi_0", "wi_1", "wo")
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
_HF_PREFIX = "base_model.model."  # PeftModelForSeq2SeqLM's name for the wrapped transformers model


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise T5LabError("LoRA needs peft: pip install 't5lab[lora]'") from None
    return peft


def has_lora(model: torch.nn.Module) -> bool:
    """Whether peft adapter layers are injected in `model`."""
    tuner_layer = _peft().tuners.tuners_utils.BaseTunerLayer
    return any(isinstance(m, tuner_layer) for m in model.modules())


def parse_targets(text: str | Sequence[str]) -> tuple[str, ...]:
    """Target module names from "q,v" (or a sequence of names), checked against t5lab's projections."""
    names = tuple(t.strip() for t in (text.split(",") if isinstance(text, str) else text) if t.strip())
    known = ATTENTION_TARGETS + FEED_FORWARD_TARGETS
    unknown = [t for t in names if t not in known]
    if not names or unknown:
        raise T5LabError(
            f"lora_targets={','.join(names) or '(none)'}: expected a comma-separated subset of {','.join(known)}"
        )
    return names


def add_lora(
    model: T5,
    rank: int = 8,
    alpha: float | None = None,
    dropout: float = 0.0,
    targets: str | Sequence[str] = DEFAULT_TARGETS,
) -> T5:
    """Inject peft LoRA adapters (rank `rank`, scale alpha/rank) into `model`'s target projections, in place.

    `alpha` defaults to 2 * rank. The base weights are frozen; the new B matrices are zero (peft's
    initialisation), so the model computes what it computed before until it is trained.
    """
    return _peft().inject_adapter_in_model(_checked_config(model, rank, alpha, dropout, targets), model)


def _checked_config(
    model: T5, rank: int, alpha: float | None, dropout: float, targets: str | Sequence[str]
) -> Any:
    peft = _peft()
    names = parse_targets(targets)
    if rank < 1:
        raise T5LabError(f"lora_rank={rank}: expected a positive integer")
    if not 0 <= dropout < 1:
        raise T5LabError(f"lora_dropout={dropout}: expected a rate in [0, 1)")
    if model.config.is_moe and set(names) & set(FEED_FORWARD_TARGETS):
        raise T5LabError(
            "lora_targets: a Switch model's experts are not nn.Linear layers; target q,k,v,o only"
        )
    if has_lora(model):
        raise T5LabError("the model already has LoRA adapters")
    return peft.LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else 2 * rank,
        lora_dropout=dropout,
        target_modules=list(names),
        bias="none",
        task_type="SEQ_2_SEQ_LM",
    )


def lora_config(model: T5) -> Any:
    """The peft `LoraConfig` of the adapters injected by `add_lora` or `load_adapter`."""
    configs = getattr(model, "peft_config", None)
    if not configs or not has_lora(model):
        raise T5LabError("the model has no LoRA adapters (add them with add_lora or load_adapter)")
    return configs["default"]


def adapter_state_dict(model: T5) -> dict[str, torch.Tensor]:
    """The adapter tensors under the names peft gives them on transformers' T5 (on CPU, contiguous)."""
    peft = _peft()
    lora_config(model)
    # Keys "<t5lab module>.lora_A.weight", the adapter name dropped. No embedding layers are targeted; "auto"
    # would look them up through `model.config.from_pretrained`, which t5lab's ModelConfig does not have.
    state = peft.get_peft_model_state_dict(model, save_embedding_layers=False)
    modules = {name: name.rsplit(".lora_", 1)[0] for name in state}
    hf_names = _rename([f"{m}.weight" for m in set(modules.values())], key_map(model.config))
    out = {}
    for name, tensor in state.items():
        module = modules[name]
        hf_module = hf_names[f"{module}.weight"]
        if hf_module is None:
            raise T5LabError(
                f"adapter on '{module}': no Hugging Face name for it in t5lab.interop.hf.key_map"
            )
        out[_HF_PREFIX + hf_module.removesuffix(".weight") + name[len(module) :]] = (
            tensor.detach().to("cpu").contiguous()
        )
    return out


def save_adapter(model: T5, folder: str | Path, base_model_name_or_path: str, tokenizer: Any = None) -> Path:
    """Write the adapters in peft's format (adapter_config.json, adapter_model.safetensors) to `folder`.

    `base_model_name_or_path` is the checkpoint folder (or hub id) the adapters apply to, recorded for
    `PeftModel.from_pretrained`. Each file is written atomically; other files in `folder` are kept.
    """
    config = copy.copy(lora_config(model))
    config.base_model_name_or_path = base_model_name_or_path
    # As peft's `save_pretrained` writes it: sets as lists (sorted here, for stable files).
    fields = {k: sorted(v) if isinstance(v, set) else v for k, v in config.to_dict().items()}
    tensors = adapter_state_dict(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / ADAPTER_CONFIG, (json.dumps(fields, indent=2, sort_keys=True) + "\n").encode())
    write_atomic(folder / ADAPTER_WEIGHTS, safetensors_bytes(tensors, metadata={"format": "pt"}))
    if tokenizer is not None:
        tokenizer.save(folder)
    return folder


def load_adapter(model: T5, folder: str | Path) -> T5:
    """Inject the LoRA adapters saved in `folder` (by t5lab or by peft on transformers' T5) into `model`."""
    peft = _peft()
    folder = Path(folder)
    for name in (ADAPTER_CONFIG, ADAPTER_WEIGHTS):
        if not (folder / name).is_file():
            raise T5LabError(f"{folder}: no {name} (expected a peft adapter folder)")
    try:
        fields = json.loads((folder / ADAPTER_CONFIG).read_text())
    except json.JSONDecodeError as e:
        raise T5LabError(f"{folder / ADAPTER_CONFIG}: not valid JSON ({e.msg})") from None
    if fields.get("peft_type") != "LORA":
        raise T5LabError(f"{folder / ADAPTER_CONFIG}: peft_type {fields.get('peft_type')!r}; expected 'LORA'")
    config = peft.LoraConfig.from_peft_type(**fields)
    if has_lora(model):
        raise T5LabError("the model already has LoRA adapters")
    peft.inject_adapter_in_model(config, model)
    tensors = load_file(str(folder / ADAPTER_WEIGHTS))
    inverse = {
        theirs.removesuffix(".weight"): ours.removesuffix(".weight")
        for ours, theirs in key_map(model.config).items()
    }
    state = {}
    for name, tensor in tensors.items():
        hf_module, sep, rest = name.removeprefix(_HF_PREFIX).partition(".lora_")
        ours = _rename([hf_module], inverse)[hf_module]
        if not sep or ours is None:
            raise T5LabError(
                f"{folder / ADAPTER_WEIGHTS}: tensor '{name}' is not a LoRA weight of a T5 module"
            )
        state[f"{ours}.lora_{rest}"] = tensor
    result = peft.set_peft_model_state_dict(model, state)
    missing = [k for k in result.missing_keys if ".lora_" in k]
    if missing or result.unexpected_keys:
        raise T5LabError(
            f"{folder / ADAPTER_WEIGHTS}: does not fit the model "
            f"(missing {missing[:3]}, unexpected {list(result.unexpected_keys)[:3]})"
        )
    return model


def merge_lora(model: T5) -> T5:
    """Fold the adapters into the base weights (peft's `merge`: W += alpha/r * B @ A) and remove them, in
    place; the result is a plain, fully trainable T5."""
    tuner_layer = _peft().tuners.tuners_utils.BaseTunerLayer
    lora_config(model)
    for name, module in list(model.named_modules()):
        if isinstance(module, tuner_layer):
            module.merge()
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, module.get_base_layer())
    del model.peft_config
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def save_merged(model: T5, folder: str | Path, tokenizer: Any = None) -> Path:
    """A plain checkpoint folder (`hf.save_pretrained`) of `model` with its adapters merged; `model` keeps them."""
    return save_pretrained(merge_lora(copy.deepcopy(model)), folder, tokenizer=tokenizer)


@dataclass(frozen=True)
class AdapterExport:
    """How a LoRA fine-tune saves a model: its adapters in peft's format, naming `base` as their base model,
    and with `merge` also a plain checkpoint folder `merged/` inside (adapters folded in)."""

    base: str
    merge: bool = False

    def __call__(self, model: T5, folder: str | Path, tokenizer: Any = None) -> None:
        save_adapter(model, folder, base_model_name_or_path=self.base, tokenizer=tokenizer)
        if self.merge:
            save_merged(model, Path(folder) / "merged", tokenizer=tokenizer)


def prepare_finetune(
    model: T5,
    model_name_or_path: str | Path,
    base_copy: Path,
    tokenizer: Any = None,
    *,
    rank: int,
    alpha: float | None = None,
    dropout: float = 0.0,
    targets: str | Sequence[str] = DEFAULT_TARGETS,
    merge: bool = False,
) -> AdapterExport:
    """Add LoRA adapters to `model` (in place) for fine-tuning, and say how to save it.

    The adapters' base is `model_name_or_path` when that is a checkpoint folder; a shape name's random
    initialisation exists nowhere else, so it is first saved to `base_copy` (frozen, it stays that).
    """
    config = _checked_config(model, rank, alpha, dropout, targets)  # a bad setting fails before any saving
    folder = Path(model_name_or_path)
    if folder.is_dir():
        base = folder.resolve()
    else:
        base = save_pretrained(model, base_copy, tokenizer=tokenizer)
    _peft().inject_adapter_in_model(config, model)
    return AdapterExport(base=str(base), merge=merge)
