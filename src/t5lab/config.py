"""`ModelConfig`: the one description of a T5-family model (dense T5, T5-efficient shapes, Switch MoE).

Frozen, typed and free of heavy imports so that the shape lab can reason about any model without torch.
Named shapes live in `t5lab.shapes` (`shapes.from_name` is the front door to them); Hugging Face
`config.json` translation lives in `t5lab.interop.hf_config`. t5lab's own files (checkpoint and run meta)
store the fields themselves (`to_dict`), tagged with `CONFIG_FORMAT_VERSION`.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from typing import Any, Literal

from t5lab.errors import T5LabError, field_checker

FeedForward = Literal["relu", "gelu", "gated-gelu", "gated-silu"]
FEED_FORWARD_KINDS: tuple[str, ...] = ("relu", "gelu", "gated-gelu", "gated-silu")
# Version of the native form written by `ModelConfig.to_dict` (1 was the Hugging Face config.json dict).
CONFIG_FORMAT_VERSION = 2


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

    def to_dict(self) -> dict[str, Any]:
        """t5lab's own form of this config (every field, JSON-able) with its `format_version`."""
        return {"format_version": CONFIG_FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "model config") -> ModelConfig:
        """The inverse of `to_dict`; `where` names the file in errors."""
        version = data.get("format_version")
        if version != CONFIG_FORMAT_VERSION:
            raise T5LabError(f"{where}: field 'format_version'={version!r}: expected {CONFIG_FORMAT_VERSION} "
                             "(written by a different t5lab version)")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known - {"format_version"})
        if unknown:
            raise T5LabError(f"{where}: unknown model config field '{unknown[0]}'")
        try:
            return cls(**{k: v for k, v in data.items() if k != "format_version"})
        except T5LabError as e:
            raise T5LabError(f"{where}: {e}") from None

    # ----------------------------------------------------------------------------------------------------
    def validate(self) -> None:
        need = field_checker(self, "model config field")

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

