"""The shape-name grammar against the published T5-efficient config.json files (huggingface.co/google/...)."""

from __future__ import annotations

import pytest

from t5lab.errors import T5LabError
from t5lab.shapes import PUBLISHED_EXCEPTIONS, from_name, registered_names

# name -> (encoder layers, decoder layers, d_ff, d_model, d_kv, heads) as the published config.json holds it
PUBLISHED_CONFIGS = {
    "t5-efficient-base-ff1000": (12, 12, 1024, 768, 64, 12),
    "t5-efficient-base-ff2000": (12, 12, 2048, 768, 64, 12),
    "t5-efficient-small-ff6000": (6, 6, 6144, 512, 64, 8),
    "t5-efficient-base-dm256": (12, 12, 3072, 256, 64, 12),
    "t5-efficient-base-dm512": (12, 12, 3072, 512, 64, 12),
    "t5-efficient-small-dm1000": (6, 6, 2048, 1024, 64, 8),
    "t5-efficient-base-kv16": (12, 12, 3072, 768, 16, 12),
    "t5-efficient-base-kv32": (12, 12, 3072, 768, 32, 12),
    "t5-efficient-small-kv32": (6, 6, 2048, 512, 32, 8),
    "t5-efficient-small-kv128": (6, 6, 2048, 512, 128, 8),
    "t5-efficient-base-nh24": (12, 12, 3072, 768, 64, 24),
    "t5-efficient-base-dl8": (12, 8, 3072, 768, 64, 12),
    "t5-efficient-small-el32": (32, 6, 2048, 512, 64, 8),
    "t5-efficient-large-el2": (2, 24, 4096, 1024, 64, 16),
    "t5-efficient-tiny-nl2": (2, 2, 1024, 256, 64, 4),
    "t5-efficient-tiny-el12": (12, 12, 1024, 256, 64, 4),  # the published oddity: 12 decoder layers too
    "t5-efficient-xxl": (24, 24, 65536, 1024, 128, 128),
}


@pytest.mark.parametrize("name,shape", PUBLISHED_CONFIGS.items())
def test_names_resolve_to_published_configs(name: str, shape: tuple[int, ...]) -> None:
    c = from_name(name)
    assert (c.num_encoder_layers, c.num_decoder_layers, c.d_ff, c.d_model, c.d_kv, c.num_heads) == shape


@pytest.mark.parametrize("modifier,field,value", [
    ("ff1000", "d_ff", 1024), ("ff2000", "d_ff", 2048), ("ff3000", "d_ff", 3072), ("ff6000", "d_ff", 6144),
    ("ff9000", "d_ff", 9216), ("ff12000", "d_ff", 12288), ("ff1536", "d_ff", 1536),
    ("dm256", "d_model", 256), ("dm512", "d_model", 512), ("dm1000", "d_model", 1024),
    ("dm2000", "d_model", 2048), ("kv16", "d_kv", 16), ("kv256", "d_kv", 256),
    ("nh4", "num_heads", 4), ("nh32", "num_heads", 32),
])
def test_rounding_rule(modifier: str, field: str, value: int) -> None:
    """Thousands stand for the same multiple of 1024; every other number is taken as written."""
    base = from_name("t5-efficient-base")
    config = from_name(f"t5-efficient-base-{modifier}")
    assert getattr(config, field) == value
    others = {"d_ff", "d_model", "d_kv", "num_heads"} - {field}
    assert all(getattr(config, f) == getattr(base, f) for f in others)


@pytest.mark.parametrize("given,canonical", [
    ("t5-efficient-base-nh24-dl8", "t5-efficient-base-dl8-nh24"),
    ("google/T5-efficient-small-kv32-el16", "t5-efficient-small-el16-kv32"),
    ("t5-efficient-tiny-sh-ff2000", "t5-efficient-tiny-ff2000-sh"),
    ("t5-v1_1-base", "t5-v1_1-base"),
])
def test_canonical_names(given: str, canonical: str) -> None:
    assert from_name(given).name == canonical


@pytest.mark.parametrize("name", sorted(PUBLISHED_EXCEPTIONS))
def test_published_exceptions_keep_the_other_stack_at_12(name: str) -> None:
    config = from_name(name)
    assert 12 in (config.num_encoder_layers, config.num_decoder_layers)
    # with both stacks written out the name means what it says
    explicit = from_name(name + ("-dl4" if "-el" in name else "-el4"))
    assert 4 in (explicit.num_encoder_layers, explicit.num_decoder_layers)
    assert 12 not in (explicit.num_encoder_layers, explicit.num_decoder_layers) or name.endswith("el12")


def test_registered_names_resolve() -> None:
    for name in registered_names():
        assert from_name(name).name == name


@pytest.mark.parametrize("name,message", [
    ("t5-efficient-tiny-ff", "unknown modifier"),
    ("t5-efficient-tiny-el2-el4", "given twice"),
    ("t5-efficient-tiny-nl2-el4", "combine 'el' and 'dl'"),
    ("t5-efficent-tiny", "did you mean"),
])
def test_bad_names(name: str, message: str) -> None:
    with pytest.raises(T5LabError, match=message):
        from_name(name)
