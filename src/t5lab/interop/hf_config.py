"""Hugging Face `config.json` ⇄ `ModelConfig`, in both the transformers 4.x and 5.x conventions.

The weight-key map lives beside it in `t5lab.interop.hf`; `ModelConfig` itself knows nothing of transformers.
Fields transformers has no place for (`-sh`, `-skv`, Switch capacity factors, ...) travel as `t5lab_*` keys so
that t5lab reloads its own models exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from t5lab.config import FEED_FORWARD_KINDS, ModelConfig
from t5lab.errors import T5LabError


def from_hf(source: str | Path | dict[str, Any], *, untied_weights: bool | None = None) -> ModelConfig:
    """Read a transformers `T5Config`/`SwitchTransformersConfig` (a dict, a config.json, or its folder).

    transformers 4.x writes `tie_word_embeddings: false` for v1.1 (untied, no output rescale); 5.x always
    ties and stores the rescale as `scale_decoder_outputs`. When the weights are at hand, pass
    `untied_weights` (both `shared.weight` and `lm_head.weight` stored with different values): it decides.
    """
    path = None
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        if path.is_dir():
            path = path / "config.json"
        if not path.is_file():
            raise T5LabError(f"{path}: no such file (expected a Hugging Face config.json)")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise T5LabError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise T5LabError(f"{path}: expected a JSON object")
    where = str(path) if path else "config"
    model_type = data.get("model_type", "t5")
    if model_type not in ("t5", "switch_transformers", "mt5"):
        raise T5LabError(f"{where}: model_type {model_type!r} is not a T5-family model")

    def get(key: str, default: Any = None, required: bool = False) -> Any:
        if key not in data:
            if required:
                raise T5LabError(f"{where}: missing field '{key}'")
            return default
        return data[key]

    ff = get("feed_forward_proj", "relu")
    if ff not in FEED_FORWARD_KINDS:
        raise T5LabError(
            f"{where}: field 'feed_forward_proj'={ff!r} is not supported (expected one of "
            f"{', '.join(FEED_FORWARD_KINDS)})"
        )
    if "scale_decoder_outputs" in data:  # transformers 5.x convention
        tied = bool(data["scale_decoder_outputs"])
    else:
        tied = bool(get("tie_word_embeddings", True))
    if untied_weights is not None:
        tied = not untied_weights
    num_layers = get("num_layers", required=True)
    fields: dict[str, Any] = dict(
        name=str(get("_name_or_path", "") or "custom").rstrip("/").split("/")[-1] or "custom",
        vocab_size=get("vocab_size", required=True),
        d_model=get("d_model", required=True),
        d_ff=get("d_ff", required=True),
        d_kv=get("d_kv", required=True),
        num_heads=get("num_heads", required=True),
        num_encoder_layers=num_layers,
        num_decoder_layers=get("num_decoder_layers") or num_layers,
        feed_forward=ff,
        tie_embeddings=tied,
        relative_attention_num_buckets=get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=get("relative_attention_max_distance", 128),
        dropout=get("dropout_rate", 0.1),
        layer_norm_eps=get("layer_norm_epsilon", 1e-6),
        pad_token_id=get("pad_token_id", 0) if get("pad_token_id") is not None else 0,
        eos_token_id=_first(get("eos_token_id", 1), 1),
        decoder_start_token_id=get("decoder_start_token_id", 0) if get("decoder_start_token_id") is not None else 0,
        num_kv_heads=get("t5lab_num_kv_heads"),
        tie_key_value=bool(get("t5lab_tie_key_value", False)),
    )
    if model_type == "switch_transformers":
        if "feed_forward_proj" not in data:  # written by transformers 5.x: only the expert activation
            act = get("dense_act_fn", "relu")
            if act not in ("relu", "gelu"):
                raise T5LabError(f"{where}: field 'dense_act_fn'={act!r} is not supported (expected relu or gelu)")
            fields["feed_forward"] = act
        num_experts = get("num_experts", 8)
        if not isinstance(num_experts, int) or num_experts < 1:
            raise T5LabError(f"{where}: field 'num_experts'={num_experts!r}: expected at least 1 expert")
        # The t5lab_* fields carry what transformers has no field for, so that t5lab reloads its own model.
        fields.update(
            num_experts=num_experts,
            expert_capacity=get("t5lab_expert_capacity", get("expert_capacity", 64)),
            capacity_factor_train=get("t5lab_capacity_factor_train", 1.25),
            capacity_factor_eval=get("t5lab_capacity_factor_eval", 2.0),
            encoder_sparse_step=_hf_sparse_step(num_layers, get("num_sparse_encoder_layers", 3)),
            decoder_sparse_step=_hf_sparse_step(
                fields["num_decoder_layers"], get("num_sparse_decoder_layers", 3)
            ),
            router_top_k=get("num_selected_experts", 1),
            router_jitter_noise=get("router_jitter_noise", 0.01),
            router_dtype=get("router_dtype", "float32"),
            router_bias=bool(get("router_bias", False)),
            router_aux_loss_coef=get("router_aux_loss_coef", 0.001),
            router_z_loss_coef=get("router_z_loss_coef", 0.001),
            router_ignore_padding_tokens=bool(get("router_ignore_padding_tokens", False)),
            # transformers applies dropout_rate inside the experts too.
            expert_dropout=get("t5lab_expert_dropout", fields["dropout"]),
            dropped_tokens=get("t5lab_dropped_tokens", "skip"),
            init_scale=get("initializer_factor", 1.0),
        )
    try:
        return ModelConfig(**fields)
    except T5LabError as e:
        raise T5LabError(f"{where}: {e}") from None
    except TypeError as e:
        raise T5LabError(f"{where}: malformed field ({e})") from None

def to_hf(config: ModelConfig) -> dict[str, Any]:
    """A config.json dict that both transformers 4.x and 5.x read as this model.

    `tie_word_embeddings` is written the 4.x way (false for untied v1.1 models); 5.x reads it as
    `scale_decoder_outputs` and keeps the weights untied because both tensors are saved.
    """
    data: dict[str, Any] = {
        "architectures": ["SwitchTransformersForConditionalGeneration" if config.is_moe
                          else "T5ForConditionalGeneration"],
        "model_type": "switch_transformers" if config.is_moe else "t5",
        "vocab_size": config.vocab_size,
        "d_model": config.d_model,
        "d_ff": config.d_ff,
        "d_kv": config.d_kv,
        "num_heads": config.num_heads,
        "num_layers": config.num_encoder_layers,
        "num_decoder_layers": config.num_decoder_layers,
        "feed_forward_proj": config.feed_forward,
        "is_gated_act": config.is_gated,
        "dense_act_fn": {"relu": "relu", "gelu": "gelu", "gated-gelu": "gelu_new", "gated-silu": "silu"}[
            config.feed_forward
        ],
        "tie_word_embeddings": config.tie_embeddings,
        "relative_attention_num_buckets": config.relative_attention_num_buckets,
        "relative_attention_max_distance": config.relative_attention_max_distance,
        "dropout_rate": config.dropout,
        "layer_norm_epsilon": config.layer_norm_eps,
        "initializer_factor": config.init_scale,
        "is_encoder_decoder": True,
        "pad_token_id": config.pad_token_id,
        "eos_token_id": config.eos_token_id,
        "decoder_start_token_id": config.decoder_start_token_id,
        "use_cache": True,
    }
    if config.num_kv_heads is not None:  # variants transformers cannot run; kept so t5lab can reload them
        data["t5lab_num_kv_heads"] = config.num_kv_heads
    if config.tie_key_value:
        data["t5lab_tie_key_value"] = True
    if config.is_moe:
        sparse = {}
        for field, layers, decoder in (("encoder", config.num_encoder_layers, False),
                                       ("decoder", config.num_decoder_layers, True)):
            ours = [config.is_sparse_layer(i, decoder) for i in range(layers)]
            step = _hf_sparse_step(layers, sum(ours))
            theirs = [step > 0 and (step == 1 or i % step == 1) for i in range(layers)]
            if ours != theirs:
                raise T5LabError(
                    f"model config field '{field}_sparse_step'={getattr(config, field + '_sparse_step')}: "
                    f"transformers cannot place these sparse blocks (it derives the step as "
                    f"num_layers // num_sparse_layers and makes block 1 sparse even for 0 sparse layers)"
                )
            sparse[f"num_sparse_{field}_layers"] = sum(ours)
        data.update(
            num_experts=config.num_experts,
            # transformers needs a fixed capacity; 64 is its default (t5lab keeps its factors beside it).
            expert_capacity=config.expert_capacity if config.expert_capacity is not None else 64,
            **sparse,
            num_selected_experts=config.router_top_k,
            router_jitter_noise=config.router_jitter_noise,
            router_dtype=config.router_dtype,
            router_bias=config.router_bias,
            router_aux_loss_coef=config.router_aux_loss_coef,
            router_z_loss_coef=config.router_z_loss_coef,
            router_ignore_padding_tokens=config.router_ignore_padding_tokens,
        )
        if config.expert_capacity is None:
            data.update(t5lab_expert_capacity=None, t5lab_capacity_factor_train=config.capacity_factor_train,
                        t5lab_capacity_factor_eval=config.capacity_factor_eval)
        if config.expert_dropout != config.dropout:
            data["t5lab_expert_dropout"] = config.expert_dropout
        if config.dropped_tokens != "skip":
            data["t5lab_dropped_tokens"] = config.dropped_tokens
    return data


def _first(value: Any, default: int) -> int:
    if isinstance(value, list):
        return value[0] if value else default
    return default if value is None else value


def _hf_sparse_step(num_layers: int, num_sparse: int) -> int:
    """The step transformers (5.23) derives: num_layers // num_sparse_layers, which is 0 (no sparse block)
    when num_sparse > num_layers; for 0 sparse layers it uses num_layers, which still makes block 1 (or the
    only block) sparse. t5lab mirrors this so that it builds what transformers builds from the same file."""
    return num_layers // num_sparse if num_sparse > 0 else num_layers


def config_from_meta(meta: dict[str, Any], where: str) -> ModelConfig:
    """The model config a t5lab checkpoint's meta.json records: t5lab's own form (`ModelConfig.to_dict`,
    with `format_version`), or the Hugging Face dict that checkpoints written before format 2 stored (under
    `model` by pretrain, `model_config` by finetune)."""
    stored = meta.get("model_config", meta.get("model"))
    if not isinstance(stored, dict):
        raise T5LabError(f"{where}: no model config recorded (expected a 'model_config' object)")
    if "format_version" in stored:
        return ModelConfig.from_dict(stored, where)
    try:
        return from_hf(stored)
    except T5LabError as e:
        raise T5LabError(f"{where}: {str(e).removeprefix('config: ')}") from None
