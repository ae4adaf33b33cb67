"""Recipe YAML files: find them (a path, or the name of one packaged with t5lab), validate and resolve them.

A pre-training recipe has four sections, each a typed config, plus the model and tokenizer:

    model: t5-efficient-tiny          # a registered shape name (random init) or an HF checkpoint folder
    model_overrides: {dropout: 0.0}   # ModelConfig fields changed from the named shape
    tokenizer: builtin                # 'builtin' (trained on the built-in corpus, cached) or spiece.model
    data: {sources: [builtin], inputs_length: 128}   # DataConfig fields (batch_size, grad_accum come from train)
    train: {steps: 300, batch_size: 16}              # TrainConfig fields

This is `t5lab pretrain`'s one config format: `--config FILE` and `--recipe NAME|FILE` read it (the CLI
maps `--config` to `--recipe` for pretrain), `--print_config` prints the resolved recipe in it (flags
applied, every field written), a packaged recipe (`--recipe NAME`, see `packaged_recipes()`; files beside
this module) is one, and so is the run folder's `recipe.yaml`, so `--resume` needs nothing else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from t5lab.config import ModelConfig
from t5lab.data.config import DataConfig
from t5lab.errors import T5LabError
from t5lab.files import write_atomic
from t5lab.train.config import TrainConfig

if TYPE_CHECKING:
    from importlib.abc import Traversable  # importlib.resources.abc from Python 3.11

DEFAULT_RECIPE = "quickstart-cpu"
SECTIONS = ("model", "model_overrides", "tokenizer", "data", "train")


@dataclass(frozen=True)
class PretrainRecipe:
    model: str = "t5-efficient-tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    tokenizer: str = "builtin"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return list(value) if isinstance(value, tuple) else value

        return {
            "model": self.model,
            "model_overrides": dict(self.model_overrides),
            "tokenizer": self.tokenizer,
            # batch_size and grad_accum are derived from the train section, so they are not written back.
            "data": {k: plain(v) for k, v in dataclasses.asdict(self.data).items()
                     if k not in ("batch_size", "grad_accum")},
            "train": {k: plain(v) for k, v in dataclasses.asdict(self.train).items()},
        }

    def to_yaml(self) -> str:
        """The complete recipe as a recipe file: `--config` (or `--recipe`) of it reproduces this recipe."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        write_atomic(Path(path), self.to_yaml().encode())


def _packaged() -> Traversable:
    # Only pre-training recipes live here; other commands' config files (scale-study-cpu.yaml) sit beside
    # the recipe modules and are passed with --config.
    return resources.files("t5lab.recipes") / "pretrain-recipes"


def packaged_recipes() -> list[str]:
    """Names of the pre-training recipes shipped with t5lab (e.g. 'quickstart-cpu', 'nanot5-base')."""
    return sorted(p.name[: -len(".yaml")] for p in _packaged().iterdir() if p.name.endswith(".yaml"))


def find_recipe(name_or_path: str) -> tuple[str, str]:
    """(where, text) of a recipe file given as a path or a packaged recipe's name."""
    path = Path(name_or_path)
    if path.is_file():
        try:
            return str(path), path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise T5LabError(f"{path}: cannot read this recipe ({e})") from None
    name = name_or_path.removesuffix(".yaml")
    if name in packaged_recipes():
        return f"recipe '{name}'", (_packaged() / f"{name}.yaml").read_text(encoding="utf-8")
    raise T5LabError(
        f"{name_or_path}: no such recipe file, and not a packaged recipe (packaged: {', '.join(packaged_recipes())})"
    )


def _section(where: str, name: str, value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise T5LabError(f"{where}: section '{name}' must be a mapping of fields")
    return value


def _build(cls: type, where: str, name: str, fields: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise T5LabError(f"{where}: unknown field '{name}.{unknown[0]}' (fields: {', '.join(sorted(known))})")
    try:
        return cls(**fields)
    except T5LabError as e:
        raise T5LabError(f"{where}: {e}") from None
    except TypeError as e:
        raise T5LabError(f"{where}: section '{name}': {e}") from None


def parse_recipe(where: str, text: str, overrides: dict[str, dict[str, Any]] | None = None) -> PretrainRecipe:
    """Validate a recipe's YAML text, apply `overrides` ({section: {field: value}}, None values skipped)."""
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        raise T5LabError(f"{where}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise T5LabError(f"{where}: expected a mapping with sections {', '.join(SECTIONS)}")
    unknown = sorted(set(raw) - set(SECTIONS))
    if unknown:
        raise T5LabError(f"{where}: unknown section '{unknown[0]}' (sections: {', '.join(SECTIONS)})")
    sections = {name: _section(where, name, raw.get(name)) for name in ("model_overrides", "data", "train")}
    top = {"model": raw.get("model", PretrainRecipe.model), "tokenizer": raw.get("tokenizer", PretrainRecipe.tokenizer)}
    overrides = overrides or {}
    if overrides.get("model") not in (None, top["model"]):
        # Another model: the recipe's shape changes were meant for its own model; dropout is a training choice.
        sections["model_overrides"] = {k: v for k, v in sections["model_overrides"].items() if k == "dropout"}
    recipe_train = dict(sections["train"])
    for key, value in overrides.items():
        if key in ("model", "tokenizer"):
            if value is not None:
                top[key] = value
        else:
            sections[key] = {**sections[key], **{k: v for k, v in value.items() if v is not None}}
    given_train = {k for k, v in overrides.get("train", {}).items() if v is not None}
    if "lr" in given_train and "final_lr" not in given_train and recipe_train.get("final_lr") and recipe_train.get("lr"):
        # A new peak lr keeps the recipe's decay ratio, so a lower --lr never collides with its final_lr.
        sections["train"]["final_lr"] = recipe_train["final_lr"] * sections["train"]["lr"] / recipe_train["lr"]
    for key in ("model", "tokenizer"):
        if not isinstance(top[key], str) or not top[key]:
            raise T5LabError(f"{where}: field '{key}' must be a non-empty string")
    model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
    bad = sorted(set(sections["model_overrides"]) - model_fields)
    if bad:
        raise T5LabError(f"{where}: unknown field 'model_overrides.{bad[0]}' (a ModelConfig field is expected)")
    train = _build(TrainConfig, where, "train", sections["train"])
    data_fields = dict(sections["data"])
    for derived in ("batch_size", "grad_accum"):
        if derived in data_fields:
            raise T5LabError(f"{where}: 'data.{derived}' is derived from train.batch_size and train.grad_accum "
                             "(run folders of the first t5lab pretrain wrote it); remove it")
    data_fields.setdefault("seed", train.seed)
    data = _build(DataConfig, where, "data",
                  {**data_fields, "batch_size": train.micro_batch_size, "grad_accum": train.grad_accum})
    return PretrainRecipe(model=top["model"], model_overrides=dict(sections["model_overrides"]),
                          tokenizer=top["tokenizer"], data=data, train=train)


def resolve_recipe(recipe: str | None, resolved: Path, resume: bool, overrides: dict[str, Any]) -> PretrainRecipe:
    """The recipe a run uses: `recipe` (a file or packaged name) with `overrides`, or on `resume` the run's
    own `resolved` copy when no recipe was named (`recipe` None); `DEFAULT_RECIPE` otherwise."""
    if recipe is None:
        recipe = str(resolved) if resume and resolved.is_file() else DEFAULT_RECIPE
    where, text = find_recipe(recipe)
    return parse_recipe(where, text, overrides)
