"""Argument groups that several commands share, defined once, and what applies them (`use_threads`).

Each group is a `TypedDict` whose docstring gives each field's help text. A recipe takes the groups it uses
as one `**options: Unpack[Composed]`, `Composed` inheriting from them and `documented` (a function has one
`**`): jsonargparse turns the fields into ordinary flags (`--num-beams 4`, not `--generation.num_beams`)
with the groups' help text, and Python callers pass them as keywords as before. `with_defaults` fills in
what was not given.
"""

from __future__ import annotations

from typing import Any, TypedDict, TypeVar

from t5lab.errors import T5LabError


class TaskOptions(TypedDict, total=False):
    """Where a task's examples and the model's tokenizer come from (`evaluate` and `finetune`).

    Args:
        tokenizer: a spiece.model file or its folder (default: the model folder's).
        data_dir: folder holding the task data (e.g. shared/data); default $T5LAB_DATA.
    """

    tokenizer: str | None
    data_dir: str | None


class RuntimeOptions(TypedDict, total=False):
    """Where a command runs and what seeds it (`evaluate` and `finetune`).

    Args:
        device: auto (the default), cpu, cuda or cuda:N.
        seed: seeds what the run draws at random (default 0): a shape-name model's initialisation, and when
            training, dropout and the data order (span-corruption evaluation: also the noise).
    """

    device: str
    seed: int


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


Group = TypeVar("Group", bound=type)

_DEFAULTS: dict[str, Any] = {
    "tokenizer": None, "data_dir": None,
    "device": "auto", "seed": 0,
    "num_beams": 1, "max_new_tokens": None, "max_input_length": 512, "max_target_length": 128,
}


def documented(composed: Group, *groups: type) -> Group:
    """`composed` (a TypedDict inheriting `groups`; TypedDict keeps no record of its bases) with the groups'
    field help in its docstring, which is where jsonargparse reads a flag's help."""
    own = (composed.__doc__ or "").strip()
    fields = "".join((group.__doc__ or "").partition("Args:\n")[2].rstrip() + "\n" for group in groups)
    composed.__doc__ = f"{own}\n\n    Args:\n{fields}"
    return composed


class EvaluationOptions(TaskOptions, RuntimeOptions, GenerationOptions, total=False):
    """The groups `evaluate` and `finetune` share: task, runtime and generation."""


documented(EvaluationOptions, TaskOptions, RuntimeOptions, GenerationOptions)


def with_defaults(options: EvaluationOptions) -> dict[str, Any]:
    """`options` with every field of `EvaluationOptions`, the defaults standing in for those not given."""
    return {**{key: _DEFAULTS[key] for key in EvaluationOptions.__annotations__}, **options}


def use_threads(threads: int) -> None:
    """`--threads`: torch's CPU threads (0 keeps torch's default)."""
    if threads < 0:
        raise T5LabError(f"--threads={threads}: expected 0 (torch's default) or a positive number")
    if threads:
        import torch

        torch.set_num_threads(threads)
