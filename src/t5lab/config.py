"""`ModelConfig`: the one description of a T5-family model (dense T5, T5-efficient shapes, Switch MoE).

Frozen, typed and free of heavy imports so that the shape lab can reason about any model without torch.
Named shapes live in `t5lab.shapes`; `ModelConfig.from_name` is the front door to them.
This module also translates Hugging Face `config.json` fields (both the transformers 4.x and 5.x
conventions); the weight-key map lives in `t5lab.interop.hf`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from t5lab.errors import T5LabError

FeedForward = Literal["relu", "gelu", "gated-gelu", "gated-silu"]
FEED_FORWARD_KINDS: tuple[str, ...] = ("relu", "gelu", "gated-gelu", "gated-silu")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ModelConfig:
    """Every field that changes the model's parameters or numerics.

    Attention: `num_heads` query heads of width `d_kv`; `num_kv_heads` key/value heads (None: as many as
    query heads; 1: the "shared heads" `-sh` variant, i.e. multi-query attention); `tie_key_value` uses one
    projection for keys and values (the `-skv` variant).
    Mixture of experts (Switch): `num_experts > 0` makes every `*_sparse_step`-th block sparse, placed exactly
    as transformers does (block i is sparse when i % step == 1, or every block when step == 1).
    """

    name: str = "custom"
    vocab_size: int = 32128
    d_model: int = 512
    d_ff: int = 2048
    d_kv: int = 64
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    feed_forward: FeedForward = "relu"
    tie_embeddings: bool = True
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    dropout: float = 0.1
    layer_norm_eps: float = 1e-6
    num_kv_heads: int | None = None
    tie_key_value: bool = False
    pad_token_id: int = 0
    eos_token_id: int = 1
    decoder_start_token_id: int = 0
    # Mixture of experts (Switch Transformers / ST-MoE); num_experts == 0 means dense.
    num_experts: int = 0
    expert_capacity: int | None = None  # fixed slots per expert (as HF configs store it); None: use factors
    capacity_factor_train: float = 1.25
    capacity_factor_eval: float = 2.0
    encoder_sparse_step: int = 2
    decoder_sparse_step: int = 2
    router_top_k: int = 1
    router_jitter_noise: float = 0.0
    router_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    router_bias: bool = False
    router_aux_loss_coef: float = 0.01
    router_z_loss_coef: float = 0.001
    router_ignore_padding_tokens: bool = False
    expert_dropout: float = 0.0  # dropout inside the experts (transformers uses dropout_rate there)
    # Tokens over capacity. "skip": the paper's rule, which transformers 5.x follows: the layer outputs 0 and
    # the token continues through the residual only. "scaled_input": transformers 4.x, which passed the
    # token's (normed) input through, scaled by its router probability (to reproduce 4.x numbers).
    dropped_tokens: Literal["skip", "scaled_input"] = "skip"
    init_scale: float = 1.0  # multiplies every init std (transformers' initializer_factor)

    def __post_init__(self) -> None:
        self.validate()

    # ----------------------------------------------------------------------------------------------------
    # Derived values
    @property
    def inner_dim(self) -> int:
        """Width of the concatenated attention heads (need not equal d_model)."""
        return self.num_heads * self.d_kv

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads

    @property
    def is_gated(self) -> bool:
        return self.feed_forward.startswith("gated-")

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_sparse_layer(self, index: int, decoder: bool) -> bool:
        """Whether block `index` of a stack is a Switch layer (transformers' placement rule)."""
        if not self.is_moe:
            return False
        step = self.decoder_sparse_step if decoder else self.encoder_sparse_step
        if step <= 0:
            return False
        return step == 1 or index % step == 1

    def replace(self, **changes: Any) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(self)}
        for key in changes:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                raise T5LabError(f"model config has no field '{key}'"
                                 + (f"; did you mean '{close[0]}'?" if close else ""))
        return dataclasses.replace(self, **changes)

    # ----------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        def need(ok: bool, field: str, expected: str) -> None:
            if not ok:
                raise T5LabError(f"model config field '{field}'={getattr(self, field)!r}: expected {expected}")

        # Types first: a frozen dataclass takes anything, and True is an int to isinstance.
        for field in ("vocab_size", "d_model", "d_ff", "d_kv", "num_heads", "num_encoder_layers",
                      "num_decoder_layers", "relative_attention_num_buckets", "relative_attention_max_distance",
                      "pad_token_id", "eos_token_id", "decoder_start_token_id", "num_experts",
                      "encoder_sparse_step", "decoder_sparse_step", "router_top_k"):
            need(_is_int(getattr(self, field)), field, "an integer")
        for field in ("dropout", "layer_norm_eps", "capacity_factor_train", "capacity_factor_eval",
                      "router_jitter_noise", "router_aux_loss_coef", "router_z_loss_coef", "expert_dropout",
                      "init_scale"):
            value = getattr(self, field)
            need((_is_int(value) or isinstance(value, float)) and math.isfinite(value), field, "a finite number")
        for field in ("tie_embeddings", "tie_key_value", "router_bias", "router_ignore_padding_tokens"):
            need(isinstance(getattr(self, field), bool), field, "true or false")
        need(isinstance(self.name, str), "name", "a string")
        need(self.num_kv_heads is None or _is_int(self.num_kv_heads), "num_kv_heads", "an integer or None")
        need(self.expert_capacity is None or _is_int(self.expert_capacity), "expert_capacity", "an integer or None")
        for field in ("vocab_size", "d_model", "d_ff", "d_kv", "num_heads", "relative_attention_num_buckets"):
            need(getattr(self, field) > 0, field, "a positive integer")
        for field in ("num_encoder_layers", "num_decoder_layers"):
            need(getattr(self, field) >= 1, field, "at least 1 layer")
        for field in ("pad_token_id", "eos_token_id", "decoder_start_token_id"):
            need(0 <= getattr(self, field) < self.vocab_size, field, f"an id in [0, vocab_size={self.vocab_size})")
        # Half the buckets are exact offsets (a quarter each way in the encoder); the rest are log-spaced
        # from there up to max_distance, which must lie beyond the exact ones (log of a ratio <= 1 otherwise).
        need(self.relative_attention_max_distance > self.relative_attention_num_buckets // 2,
             "relative_attention_max_distance",
             f"more than relative_attention_num_buckets // 2 = {self.relative_attention_num_buckets // 2}")
        need(self.feed_forward in FEED_FORWARD_KINDS, "feed_forward", f"one of {', '.join(FEED_FORWARD_KINDS)}")
        need(0.0 <= self.dropout < 1.0, "dropout", "a probability in [0, 1)")
        need(0.0 <= self.expert_dropout < 1.0, "expert_dropout", "a probability in [0, 1)")
        need(self.layer_norm_eps > 0, "layer_norm_eps", "a positive number")
        if self.num_kv_heads is not None:
            need(
                0 < self.num_kv_heads <= self.num_heads and self.num_heads % self.num_kv_heads == 0,
                "num_kv_heads",
                f"a divisor of num_heads={self.num_heads}",
            )
        need(isinstance(self.num_experts, int) and self.num_experts >= 0, "num_experts",
             "0 (dense) or a positive number of experts")
        need(self.dropped_tokens in ("skip", "scaled_input"), "dropped_tokens", "'skip' or 'scaled_input'")
        need(self.router_dtype in ("float32", "bfloat16", "float16"), "router_dtype",
             "one of float32, bfloat16, float16")
        if self.is_moe:
            need(self.router_top_k in (1, 2) and self.router_top_k <= self.num_experts, "router_top_k",
                 f"1 or 2, and at most num_experts={self.num_experts}")
            need(self.expert_capacity is None or (isinstance(self.expert_capacity, int) and self.expert_capacity >= 1),
                 "expert_capacity",
                 "a positive number of token slots per expert (or None to use the capacity factors)")
            need(self.capacity_factor_train > 0, "capacity_factor_train", "a positive number")
            need(self.capacity_factor_eval > 0, "capacity_factor_eval", "a positive number")
            need(0.0 <= self.router_jitter_noise < 1.0, "router_jitter_noise", "a number in [0, 1)")
            for field in ("router_aux_loss_coef", "router_z_loss_coef"):
                need(getattr(self, field) >= 0, field, "a non-negative weight")
            need(self.init_scale > 0, "init_scale", "a positive number")
            for field, layers, decoder in (("encoder_sparse_step", self.num_encoder_layers, False),
                                           ("decoder_sparse_step", self.num_decoder_layers, True)):
                need(isinstance(getattr(self, field), int) and getattr(self, field) >= 0, field,
                     "0 (no sparse layer) or a positive step")
                need(getattr(self, field) == 0 or any(self.is_sparse_layer(i, decoder) for i in range(layers)),
                     field, f"0 or a step that makes at least one of the {layers} blocks sparse "
                     "(block i is sparse when i % step == 1, or every block when step == 1)")
            need(self.encoder_sparse_step > 0 or self.decoder_sparse_step > 0, "encoder_sparse_step",
                 "a step that makes at least one block sparse (both steps are 0)")
        else:
            # Sparse-layer fields only mean something with experts; a step without experts is a mistake.
            need(self.expert_capacity is None, "expert_capacity", "None when num_experts is 0 (dense model)")

    # ----------------------------------------------------------------------------------------------------
    # Named shapes
    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> ModelConfig:
        """A registered shape by name, e.g. `t5-v1_1-base` or `t5-efficient-small-el16-dl8`."""
        from t5lab.shapes import config_for_name  # shapes imports this module; keep the cycle lazy

        return config_for_name(name).replace(**overrides) if overrides else config_for_name(name)

    # ----------------------------------------------------------------------------------------------------
    # Hugging Face config.json
    @classmethod
    def from_hf(cls, source: str | Path | dict[str, Any], *, untied_weights: bool | None = None) -> ModelConfig:
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
            return cls(**fields)
        except T5LabError as e:
            raise T5LabError(f"{where}: {e}") from None
        except TypeError as e:
            raise T5LabError(f"{where}: malformed field ({e})") from None

    def to_hf(self) -> dict[str, Any]:
        """A config.json dict that both transformers 4.x and 5.x read as this model.

        `tie_word_embeddings` is written the 4.x way (false for untied v1.1 models); 5.x reads it as
        `scale_decoder_outputs` and keeps the weights untied because both tensors are saved.
        """
        data: dict[str, Any] = {
            "architectures": ["SwitchTransformersForConditionalGeneration" if self.is_moe
                              else "T5ForConditionalGeneration"],
            "model_type": "switch_transformers" if self.is_moe else "t5",
            "vocab_size": self.vocab_size,
            "d_model": self.d_model,
            "d_ff": self.d_ff,
            "d_kv": self.d_kv,
            "num_heads": self.num_heads,
            "num_layers": self.num_encoder_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "feed_forward_proj": self.feed_forward,
            "is_gated_act": self.is_gated,
            "dense_act_fn": {"relu": "relu", "gelu": "gelu", "gated-gelu": "gelu_new", "gated-silu": "silu"}[
                self.feed_forward
            ],
            "tie_word_embeddings": self.tie_embeddings,
            "relative_attention_num_buckets": self.relative_attention_num_buckets,
            "relative_attention_max_distance": self.relative_attention_max_distance,
            "dropout_rate": self.dropout,
            "layer_norm_epsilon": self.layer_norm_eps,
            "initializer_factor": self.init_scale,
            "is_encoder_decoder": True,
            "pad_token_id": self.pad_token_id,
            "eos_token_id": self.eos_token_id,
            "decoder_start_token_id": self.decoder_start_token_id,
            "use_cache": True,
        }
        if self.num_kv_heads is not None:  # variants transformers cannot run; kept so t5lab can reload them
            data["t5lab_num_kv_heads"] = self.num_kv_heads
        if self.tie_key_value:
            data["t5lab_tie_key_value"] = True
        if self.is_moe:
            sparse = {}
            for field, layers, decoder in (("encoder", self.num_encoder_layers, False),
                                           ("decoder", self.num_decoder_layers, True)):
                ours = [self.is_sparse_layer(i, decoder) for i in range(layers)]
                step = _hf_sparse_step(layers, sum(ours))
                theirs = [step > 0 and (step == 1 or i % step == 1) for i in range(layers)]
                if ours != theirs:
                    raise T5LabError(
                        f"model config field '{field}_sparse_step'={getattr(self, field + '_sparse_step')}: "
                        f"transformers cannot place these sparse blocks (it derives the step as "
                        f"num_layers // num_sparse_layers and makes block 1 sparse even for 0 sparse layers)"
                    )
                sparse[f"num_sparse_{field}_layers"] = sum(ours)
            data.update(
                num_experts=self.num_experts,
                # transformers needs a fixed capacity; 64 is its default (t5lab keeps its factors beside it).
                expert_capacity=self.expert_capacity if self.expert_capacity is not None else 64,
                **sparse,
                num_selected_experts=self.router_top_k,
                router_jitter_noise=self.router_jitter_noise,
                router_dtype=self.router_dtype,
                router_bias=self.router_bias,
                router_aux_loss_coef=self.router_aux_loss_coef,
                router_z_loss_coef=self.router_z_loss_coef,
                router_ignore_padding_tokens=self.router_ignore_padding_tokens,
            )
            if self.expert_capacity is None:
                data.update(t5lab_expert_capacity=None, t5lab_capacity_factor_train=self.capacity_factor_train,
                            t5lab_capacity_factor_eval=self.capacity_factor_eval)
            if self.expert_dropout != self.dropout:
                data["t5lab_expert_dropout"] = self.expert_dropout
            if self.dropped_tokens != "skip":
                data["t5lab_dropped_tokens"] = self.dropped_tokens
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
