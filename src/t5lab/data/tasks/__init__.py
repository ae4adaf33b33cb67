"""Text-to-text fine-tuning and evaluation tasks, by name.

    task = get_task("glue/rte")
    examples = task.load("validation", "path/to/shared/data")   # list[Example]: .input, .target, ...
    task.score(predictions, examples)                           # {"accuracy": 71.5}, in percent

Names: glue/{cola,sst2,mrpc,qqp,stsb,mnli,qnli,rte,wnli}, superglue/{boolq,cb,copa,rte,wic,wsc,multirc,record},
squad, samsum, and
"generic" (input/target columns of your own files; `generic_task(...)` configures the columns and metric).
"""

from __future__ import annotations

import difflib

from t5lab.data.tasks import generic, glue, squad, summarisation, superglue
from t5lab.data.tasks.base import Example, Task
from t5lab.data.tasks.generic import generic_task
from t5lab.errors import T5LabError

__all__ = ["Example", "Task", "generic_task", "get_task", "list_tasks"]

_REGISTRY: dict[str, Task] = {
    task.name: task for module in (glue, superglue, squad, summarisation, generic) for task in module.TASKS
}


def list_tasks() -> list[str]:
    """The registered task names, sorted."""
    return sorted(_REGISTRY)


def get_task(name: str) -> Task:
    """The task registered as `name` (case-insensitive); a T5LabError with close matches otherwise."""
    task = _REGISTRY.get(name.strip().lower())
    if task is None:
        close = difflib.get_close_matches(name.lower(), _REGISTRY, n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(close)}?" if close else ""
        raise T5LabError(f"unknown task {name!r}{hint} Known tasks: {', '.join(list_tasks())}")
    return task
