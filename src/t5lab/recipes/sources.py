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

from t5lab.data.tasks import Example, Task, get_task
from t5lab.data.tokenizer import SPIECE_FILE, Tokenizer
from t5lab.errors import T5LabError
from t5lab.interop.hf import load_model
from t5lab.interop.hub import resolve_checkpoint
from t5lab.model import T5, build_model

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


def resolve_model(model: str | Path, tokenizer: str | Path | None, seed: int = 0) -> tuple[T5, Tokenizer]:
    """The model (checkpoint folder, hub id or shape name) and its tokenizer; their vocabularies must agree."""
    folder = resolve_checkpoint(model) or Path(model)
    model = folder if folder.is_dir() else model  # a hub id is looked up once
    if tokenizer is None and folder.is_dir():
        if not (folder / SPIECE_FILE).is_file():
            raise T5LabError(f"{folder}: has no {SPIECE_FILE}; give the tokenizer with --tokenizer PATH")
        tokenizer = folder
    if tokenizer is None:
        raise T5LabError(
            f"model {str(model)!r} is a shape name (random weights) and has no tokenizer: give one with "
            f"--tokenizer PATH/{SPIECE_FILE} (e.g. T5's, for a vocabulary of 32,100 ids)"
        )
    tok = load_tokenizer(tokenizer)
    net = load_model(model, seed=seed)
    if tok.vocab_size > net.config.vocab_size:
        raise T5LabError(
            f"{tokenizer}: the tokenizer has {tok.vocab_size} ids but the model's vocabulary is "
            f"{net.config.vocab_size}: they do not belong together"
        )
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
