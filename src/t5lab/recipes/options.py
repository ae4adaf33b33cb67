"""Argument groups that several commands share, defined once, and what applies them (`use_threads`).

Each group is a `TypedDict` that a recipe takes as `**options: Unpack[Group]`: jsonargparse turns its fields
into ordinary flags (`--num-beams 4`, not `--generation.num_beams`) with the help text below, and Python
callers pass them as keywords as before. `with_defaults` fills in what was not given.
"""

from __future__ import annotations

from typing import TypedDict

from t5lab.errors import T5LabError


class GenerationOptions(TypedDict, total=False):
    """How answers are generated and inputs cut (evaluation in `evaluate` and `finetune`).

    Args:
        num_beams: beam width (1, the default: greedy).
        max_new_tokens: generation length cap (default: the longest reference, at most max_target_length).
        max_input_length: inputs longer than this are truncated, EOS kept (default 512).
        max_target_length: targets longer than this are truncated, EOS kept (default 128).
    """

    num_beams: int
    max_new_tokens: int | None
    max_input_length: int
    max_target_length: int


GENERATION_DEFAULTS = GenerationOptions(num_beams=1, max_new_tokens=None, max_input_length=512,
                                        max_target_length=128)


def with_defaults(options: GenerationOptions) -> GenerationOptions:
    """`options` with every field, the defaults standing in for those not given."""
    return GenerationOptions(**{**GENERATION_DEFAULTS, **options})


def use_threads(threads: int) -> None:
    """`--threads`: torch's CPU threads (0 keeps torch's default)."""
    if threads < 0:
        raise T5LabError(f"--threads={threads}: expected 0 (torch's default) or a positive number")
    if threads:
        import torch

        torch.set_num_threads(threads)
