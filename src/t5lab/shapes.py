"""Named shapes: a table of base sizes per family plus the T5-efficient modifier grammar.

A name is a family prefix, a size and (for `t5-efficient-*`) modifiers written as the model cards do:
`nlN` (all layers), `elN`/`dlN` (encoder/decoder layers), `ffN`, `dmN`, `kvN`, `nhN`, and the two variants
transformers never ported, `skv` (keys and values share one projection) and `sh` (shared heads). Modifiers
may come in any order; they are applied in a fixed order and written back in it (`canonical_name`).

Non-shape fields (activation, vocabulary, tying) come from the family, never from the name.

Switch Transformers: `switch-base-{8..256}`, `switch-large-128`, `switch-xxl-128`, `switch-c-2048` (the published
google/switch-* checkpoints), and `-moeN` after any dense name (`t5-efficient-tiny-moe8`): the same shape with
N experts in every second block of both stacks. A named shape is a *new* model, so its routing settings are
the papers' (`MOE_DEFAULTS`); `interop.hf_config.from_hf` keeps whatever a checkpoint's config.json stores.

Choices worth knowing:
- The cards round: `-ff6000` means d_ff 6144 and `-dm1000` d_model 1024 (multiples of 1000 stand for the
  same multiple of 1024, which is what the published config.json files hold).
- Modifiers change one field each: the published `-dmN`, `-nhN` and `-kvN` files keep the other widths
  (base-dm256/dm512, small-dm1000, base-nh24, base-kv16/kv32, small-kv32/kv128 checked).
- A few published tiny checkpoints differ from their names; `PUBLISHED_EXCEPTIONS` follows the files.
- `-sh` ("shared heads") is implemented as one key/value head shared by all query heads (multi-query
  attention, Shazeer 2019). The Scale Efficiently paper does not define it further; t5lab documents this as
  its reading.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any

from t5lab.config import ModelConfig
from t5lab.errors import T5LabError


@dataclass(frozen=True)
class Size:
    """One row of a size table: layers (encoder, decoder), d_ff, d_model, d_kv, heads."""

    encoder_layers: int
    decoder_layers: int
    d_ff: int
    d_model: int
    d_kv: int
    num_heads: int


# T5 v1.0 (Raffel et al.): relu, tied embeddings.
T5_V1_0 = {
    "small": Size(6, 6, 2048, 512, 64, 8),
    "base": Size(12, 12, 3072, 768, 64, 12),
    "large": Size(24, 24, 4096, 1024, 64, 16),
    "3b": Size(24, 24, 16384, 1024, 128, 32),
    "11b": Size(24, 24, 65536, 1024, 128, 128),
}

# T5 v1.1: gated-gelu, untied output embedding, no dropout in pre-training (configs still say 0.1).
T5_V1_1 = {
    "small": Size(8, 8, 1024, 512, 64, 6),
    "base": Size(12, 12, 2048, 768, 64, 12),
    "large": Size(24, 24, 2816, 1024, 64, 16),
    "xl": Size(24, 24, 5120, 2048, 64, 32),
    "xxl": Size(24, 24, 10240, 4096, 64, 64),
}

# T5-efficient (Tay et al. 2021, "Scale Efficiently"), d_kv as in the published config.json files
# (the model cards print 32 for tiny/mini/small; the weights and the cards' parameter counts use 64).
T5_EFFICIENT = {
    "tiny": Size(4, 4, 1024, 256, 64, 4),
    "mini": Size(4, 4, 1536, 384, 64, 8),
    "small": Size(6, 6, 2048, 512, 64, 8),
    "base": Size(12, 12, 3072, 768, 64, 12),
    "large": Size(24, 24, 4096, 1024, 64, 16),
    "xl": Size(24, 24, 16384, 1024, 128, 32),
    "xxl": Size(24, 24, 65536, 1024, 128, 128),
}

FAMILIES: dict[str, tuple[dict[str, Size], dict]] = {
    # prefix: (size table, family defaults)
    "t5-efficient-": (T5_EFFICIENT, dict(feed_forward="relu", tie_embeddings=True)),
    "t5-v1_1-": (T5_V1_1, dict(feed_forward="gated-gelu", tie_embeddings=False)),
    "t5-": (T5_V1_0, dict(feed_forward="relu", tie_embeddings=True)),
}

# Routing settings for new Switch models: Switch Transformers (Fedus et al. 2021) and ST-MoE (Zoph et al. 2022).
MOE_DEFAULTS: dict[str, object] = dict(
    encoder_sparse_step=2,  # a Switch layer in every second block, as in all published Switch-Base/Large models
    decoder_sparse_step=2,
    # The published checkpoints' fixed 64 slots per expert per sequence (their config.json), which is all
    # transformers knows: a t5lab-made Switch folder then computes the same there. `expert_capacity=None`
    # switches to ST-MoE's capacity factors (1.25 in training, 2.0 in evaluation: ceil(T/E x factor)).
    expert_capacity=64,
    capacity_factor_train=1.25,
    capacity_factor_eval=2.0,
    router_top_k=1,
    router_dtype="float32",  # "selective precision"
    router_aux_loss_coef=0.01,  # Switch's alpha (transformers' default 0.001 is what its configs store)
    router_z_loss_coef=0.001,  # ST-MoE
    # The paper's init: std sqrt(s / fan_in) with s reduced from 1.0 to 0.1; `init_scale` multiplies the std.
    init_scale=0.1**0.5,
)

# The published Switch checkpoints: (dense size, family defaults, experts, sparse step). Sizes checked against
# the config.json files and checkpoint sizes on the hub (see REFERENCE.md):
# - switch-base-*: T5 v1.0 Base (d_ff 3072), relu, tied; 6 + 6 sparse blocks.
# - switch-large-128: T5 v1.0 Large (d_ff 4096, 16 heads); its index's 52,815,976,448 bf16 bytes are exactly
#   26,309,291,008 parameters plus three extra copies of the embedding.
# - switch-xxl-128: no readable config.json; the paper's 395B parameters need 3 expert matrices of
#   4096 x 10240, i.e. T5 v1.1 XXL (gated-gelu, untied), 128 experts in every second block.
# - switch-c-2048: config.json says d_model 2080, d_ff 6144, 30 heads of 64, 15 encoder blocks, all sparse,
#   but 12 decoder blocks with 15 sparse ones (transformers' default 12 left in); the paper's 1,571B parameters
#   need 15 sparse decoder blocks too, so t5lab uses 15.
SWITCH: dict[str, tuple[Size, dict, int, int]] = {
    **{f"base-{e}": (T5_V1_0["base"], dict(feed_forward="relu", tie_embeddings=True), e, 2)
       for e in (8, 16, 32, 64, 128, 256)},
    "large-128": (T5_V1_0["large"], dict(feed_forward="relu", tie_embeddings=True), 128, 2),
    "xxl-128": (T5_V1_1["xxl"], dict(feed_forward="gated-gelu", tie_embeddings=False), 128, 2),
    "c-2048": (Size(15, 15, 6144, 2080, 64, 30), dict(feed_forward="relu", tie_embeddings=True), 2048, 1),
}
_MOE_SUFFIX_RE = re.compile(r"^(.+)-moe(\d+)$")


def with_experts(config: ModelConfig, num_experts: int, sparse_step: int = 2) -> ModelConfig:
    """`config` as a new Switch model: `num_experts` experts every `sparse_step`-th block, paper settings."""
    return config.replace(**{**MOE_DEFAULTS, "encoder_sparse_step": sparse_step, "decoder_sparse_step": sparse_step,
                             "num_experts": num_experts, "expert_dropout": config.dropout})


# Published T5-efficient checkpoints whose shape is not what their name says. The tiny depth ablations kept
# the *other* stack at 12 layers, not at tiny's 4: huggingface.co/google/t5-efficient-tiny-el12 config.json
# lists num_layers 12 and num_decoder_layers 12, and the weight files of tiny-el2/el6/el8/el12 (89.6 / 102 /
# 109 / 121 MB) and tiny-dl2/dl6/dl8 (79.1 / 95.9 / 104 MB) are 4 bytes times exactly the parameters of that
# shape (their config.json sizes agree); the small/base/large el/dl checkpoints match their names. Write the
# other stack explicitly (`t5-efficient-tiny-el2-dl4`) for the shape the name describes.
PUBLISHED_EXCEPTIONS: dict[str, dict[str, int]] = {
    **{f"t5-efficient-tiny-el{n}": {"num_decoder_layers": 12} for n in (2, 6, 8, 12)},
    **{f"t5-efficient-tiny-dl{n}": {"num_encoder_layers": 12} for n in (2, 6, 8)},
}

# Modifier grammar, in the order modifiers are applied and written back.
MODIFIER_ORDER = ("nl", "el", "dl", "ff", "dm", "kv", "nh", "skv", "sh")
_MODIFIER_RE = re.compile(r"^(nl|el|dl|ff|dm|kv|nh)(\d+)$|^(skv|sh)$")


def _unround(value: int) -> int:
    """The cards write 1024-multiples as thousands: ff6000 -> 6144, dm1000 -> 1024."""
    return value // 1000 * 1024 if value >= 1000 and value % 1000 == 0 else value


def _parse_modifiers(name: str, parts: list[str]) -> dict[str, int | bool]:
    mods: dict[str, int | bool] = {}
    for part in parts:
        match = _MODIFIER_RE.match(part)
        if not match:
            raise T5LabError(
                f"shape name {name!r}: unknown modifier {part!r} (expected nlN, elN, dlN, ffN, dmN, kvN, nhN, skv "
                f"or sh){_suggest(name)}"
            )
        key = match.group(1) or match.group(3)
        if key in mods:
            raise T5LabError(f"shape name {name!r}: modifier '{key}' given twice")
        value: int | bool = int(match.group(2)) if match.group(2) else True
        if isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            raise T5LabError(f"shape name {name!r}: modifier {part!r} must be a positive number")
        mods[key] = value
    if "nl" in mods and ("el" in mods or "dl" in mods):
        raise T5LabError(f"shape name {name!r}: 'nl' sets both stacks; combine 'el' and 'dl' instead")
    if "skv" in mods and "sh" in mods:
        raise T5LabError(f"shape name {name!r}: 'skv' and 'sh' cannot be combined")
    return mods


def _apply(config: ModelConfig, mods: dict[str, int | bool]) -> ModelConfig:
    changes: dict[str, object] = {}
    if "nl" in mods:
        changes.update(num_encoder_layers=mods["nl"], num_decoder_layers=mods["nl"])
    if "el" in mods:
        changes["num_encoder_layers"] = mods["el"]
    if "dl" in mods:
        changes["num_decoder_layers"] = mods["dl"]
    if "ff" in mods:
        changes["d_ff"] = _unround(int(mods["ff"]))
    if "dm" in mods:
        changes["d_model"] = _unround(int(mods["dm"]))
    if "kv" in mods:
        changes["d_kv"] = mods["kv"]
    if "nh" in mods:
        changes["num_heads"] = mods["nh"]
    if "skv" in mods:
        changes["tie_key_value"] = True
    if "sh" in mods:
        changes["num_kv_heads"] = 1
    return config.replace(**changes)


def canonical_name(prefix: str, size: str, mods: dict[str, int | bool]) -> str:
    parts = [prefix + size]
    for key in MODIFIER_ORDER:
        if key in mods:
            parts.append(key if mods[key] is True else f"{key}{mods[key]}")
    return "-".join(parts)


def config_for_name(name: str) -> ModelConfig:
    """Resolve a registered shape name to a `ModelConfig` (raises `T5LabError` with close matches)."""
    if not isinstance(name, str) or not name:
        raise T5LabError("shape name: expected a non-empty string such as 't5-efficient-tiny'")
    key = name.strip().lower()
    if key.startswith("google/"):
        key = key[len("google/"):]
    moe = _MOE_SUFFIX_RE.match(key)
    if moe:
        dense, experts = moe.group(1), int(moe.group(2))
        if dense.startswith("switch-") or experts < 1:
            raise T5LabError(f"shape name {name!r}: '-moeN' takes a dense shape name and N >= 1 experts")
        config = config_for_name(dense)
        return with_experts(config, experts).replace(name=f"{config.name}-moe{experts}")
    if key.startswith("switch-"):
        if key[len("switch-"):] not in SWITCH:
            raise T5LabError(f"unknown shape name {name!r}{_suggest(name)}")
        row, defaults, experts, step = SWITCH[key[len("switch-"):]]
        config = ModelConfig(
            name=key, d_model=row.d_model, d_ff=row.d_ff, d_kv=row.d_kv, num_heads=row.num_heads,
            num_encoder_layers=row.encoder_layers, num_decoder_layers=row.decoder_layers, **defaults,
        )
        return with_experts(config, experts, step)
    for prefix, (table, defaults) in FAMILIES.items():
        if not key.startswith(prefix):
            continue
        size, *rest = key[len(prefix):].split("-")
        if size not in table:
            raise T5LabError(
                f"unknown shape name {name!r}: size {size!r} is not one of {', '.join(table)}{_suggest(name)}"
            )
        if rest and prefix != "t5-efficient-":
            raise T5LabError(
                f"unknown shape name {name!r}: modifiers apply to t5-efficient-* names only{_suggest(name)}"
            )
        mods = _parse_modifiers(name, rest)
        row = table[size]
        config = ModelConfig(
            name=canonical_name(prefix, size, mods),
            d_model=row.d_model,
            d_ff=row.d_ff,
            d_kv=row.d_kv,
            num_heads=row.num_heads,
            num_encoder_layers=row.encoder_layers,
            num_decoder_layers=row.decoder_layers,
            **defaults,
        )
        return _apply(config, mods).replace(**PUBLISHED_EXCEPTIONS.get(config.name, {}))
    raise T5LabError(f"unknown shape name {name!r}{_suggest(name)}")


def from_name(name: str, **overrides: Any) -> ModelConfig:
    """A registered shape by name, e.g. `t5-v1_1-base` or `t5-efficient-small-el16-dl8`, with any field
    overridden (`from_name("t5-efficient-tiny", dropout=0.0)`)."""
    config = config_for_name(name)
    return config.replace(**overrides) if overrides else config  # replace names an unknown field


def registered_names() -> list[str]:
    """Every base name (modifiers can be added to the t5-efficient ones)."""
    return [prefix + size for prefix, (table, _) in FAMILIES.items() for size in table] + [
        "switch-" + size for size in SWITCH
    ]


def _suggest(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), registered_names(), n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else f"; known names: {', '.join(registered_names())}"
