"""Where the fine-tuning and evaluation recipes get their model, tokenizer, tasks and data from.

A model is an HF-format checkpoint folder (its `spiece.model` is the tokenizer unless one is given) or a
registered shape name (random weights; the tokenizer must then be given explicitly, since guessing a
vocabulary silently would train on ids that mean nothing). Task data comes from `--data-dir`, else from
`$T5LAB_DATA`, else from the Hugging Face hub when `datasets` is installed and the task has a hub copy.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path

from t5lab.data.builtin_corpus import BUILTIN, default_tokenizer
from t5lab.data.tasks import Example, Task, get_task
from t5lab.data.tokenizer import SPIECE_FILE, Tokenizer
from t5lab.errors import T5LabError
from t5lab.interop.hf import load_pretrained
from t5lab.interop.hub import resolve_checkpoint
from t5lab.interop.loading import load_model
from t5lab.model import T5, build_model
from t5lab.recipes.recipe_files import PretrainRecipe
from t5lab.shapes import from_name

DATA_ENV = "T5LAB_DATA"


def task_names(task: str | Sequence[str]) -> list[str]:
    """`"glue/rte,glue/sst2"` or `["glue/rte", "glue/sst2"]` -> the names, in order, without repeats."""
    items = [task] if isinstance(task, str) else list(task)
    names = [name.strip() for item in items for name in item.split(",") if name.strip()]
    if not names:
        raise T5LabError("no task given: expected a task name such as glue/sst2 (see `t5lab.data.tasks`)")
    return list(dict.fromkeys(names))


def resolve_tasks(task: str | Sequence[str]) -> list[Task]:
    return [get_task(name) for name in task_names(task)]


def resolve_data_dir(data_dir: str | Path | None, tasks: Sequence[Task]) -> Path | None:
    """`data_dir`, else $T5LAB_DATA, else None (the hub) when every task can use it; a clear error otherwise."""
    chosen = data_dir or os.environ.get(DATA_ENV) or None
    if chosen is not None:
        path = Path(chosen)
        if not path.is_dir():
            source = "--data-dir" if data_dir else f"${DATA_ENV}"
            raise T5LabError(f"{path}: no such data folder (from {source})")
        return path
    offline = [t.name for t in tasks if t.hf_dataset is None]
    if offline or importlib.util.find_spec("datasets") is None:
        why = f"{', '.join(offline)} has no Hugging Face copy" if offline else "`datasets` is not installed"
        raise T5LabError(
            f"no data folder: give --data-dir or set ${DATA_ENV} to the folder holding "
            f"{', '.join(t.folder or t.name for t in tasks)} ({why}, so the hub cannot be used)"
        )
    return None


def load_split(task: Task, split: str, data_dir: Path | None, limit: int | None = None) -> list[Example]:
    """The split's examples (the first `limit` of them); training rows must have a target."""
    examples = task.load(split, data_dir)
    if limit is not None:
        if limit < 1:
            raise T5LabError(f"limit={limit}: expected a positive number of examples")
        examples = examples[:limit]
    if split == "train":
        missing = next((i for i, e in enumerate(examples) if not e.target), None)
        if missing is not None:
            where = task.split_file(split, data_dir) if data_dir is not None else f"{task.name} train"
            raise T5LabError(f"{where}: example {missing} (id {examples[missing].id!r}) has no target to train on")
    return examples


def load_tokenizer(path: str | Path) -> Tokenizer:
    """A `spiece.model` file, or a folder holding one."""
    path = Path(path)
    file = path / SPIECE_FILE if path.is_dir() else path
    if not file.is_file():
        raise T5LabError(f"{file}: no such tokenizer file (expected a SentencePiece {SPIECE_FILE} or its folder)")
    return Tokenizer.from_file(file)


def model_tokenizer(model: str | Path, tokenizer: str | Path | None) -> Tokenizer:
    """`tokenizer` when given, else the checkpoint folder's (or hub id's) own spiece.model (a shape name has none)."""
    folder = resolve_checkpoint(model) or Path(model)
    if tokenizer is None and folder.is_dir():
        if not (folder / SPIECE_FILE).is_file():
            raise T5LabError(f"{folder}: has no {SPIECE_FILE}; give the tokenizer with --tokenizer PATH")
        tokenizer = folder
    if tokenizer is None:
        raise T5LabError(
            f"model {str(model)!r} is a shape name (random weights) and has no tokenizer: give one with "
            f"--tokenizer PATH/{SPIECE_FILE} (e.g. T5's, for a vocabulary of 32,100 ids)"
        )
    return load_tokenizer(tokenizer)


def pretraining_tokenizer(spec: str, model: str) -> Tokenizer:
    """A pre-training recipe's tokenizer: 'builtin' (a checkpoint folder's own spiece.model wins over it)
    or a spiece.model file or folder."""
    if spec == BUILTIN:
        folder = resolve_checkpoint(model)  # a checkpoint folder or hub id; None for a shape name
        if folder is not None and (folder / SPIECE_FILE).is_file():
            return load_tokenizer(folder)
        return default_tokenizer()
    return load_tokenizer(spec)


def pretraining_model(recipe: PretrainRecipe, tokenizer_vocab: int) -> T5:
    """A pre-training recipe's model: a checkpoint folder (only its dropout may change) or a named shape,
    randomly initialised with its vocabulary sized to the tokenizer."""
    overrides = dict(recipe.model_overrides)
    path = resolve_checkpoint(recipe.model) or Path(recipe.model)
    if path.is_dir():
        net = load_pretrained(path)
        changed = sorted(k for k, v in overrides.items() if k != "dropout" and getattr(net.config, k) != v)
        if changed:
            raise T5LabError(f"{path}: model_overrides.{changed[0]} would change the checkpoint's shape "
                             "(only dropout can be overridden when continuing from a checkpoint)")
        if "dropout" in overrides:
            net = with_dropout(net, overrides["dropout"], None)
    else:
        try:
            config = from_name(recipe.model)
        except T5LabError as e:
            raise T5LabError(f"model '{recipe.model}' is neither a checkpoint folder nor a known shape: {e}") from None
        # Random init: the embedding is sized to the tokenizer, rounded up to a multiple of 128 as T5's
        # 32,100 ids are stored in 32,128 rows (unless the recipe fixes vocab_size).
        overrides.setdefault("vocab_size", -(-tokenizer_vocab // 128) * 128)
        net = build_model(config.replace(**overrides), seed=recipe.train.seed)
    if tokenizer_vocab > net.config.vocab_size:
        raise T5LabError(f"tokenizer has {tokenizer_vocab} ids but model '{recipe.model}' has vocab_size="
                         f"{net.config.vocab_size}; use a matching tokenizer or a larger vocab_size")
    return net


def resolve_model(model: str | Path, tokenizer: str | Path | None, seed: int = 0) -> tuple[T5, Tokenizer]:
    """The model (checkpoint folder, hub id or shape name) and its tokenizer; their vocabularies must agree."""
    tok = model_tokenizer(model, tokenizer)
    net = load_model(model, seed=seed)
    tok.check_fits(net.config.vocab_size, str(model))
    return net, tok


def with_dropout(model: T5, dropout: float, expert_dropout: float | None) -> T5:
    """`model` with these dropout rates (expert dropout only for Switch models), rebuilt only if they differ.

    Dropout modules take their rate from the config when built, so the model is rebuilt and the weights
    copied over rather than patching module attributes.
    """
    config = model.config
    changes = {"dropout": dropout}
    if config.is_moe and expert_dropout is not None:
        changes["expert_dropout"] = expert_dropout
    if all(getattr(config, k) == v for k, v in changes.items()):
        return model
    rebuilt = build_model(config.replace(**changes), init=False)
    rebuilt.load_state_dict(model.state_dict())
    return rebuilt
