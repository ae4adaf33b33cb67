"""mkdocs hook: tables generated from the code at build time, so that the site cannot drift from it.

A page asks for a table with a marker line (`<!-- t5lab:shape-table -->`, `<!-- t5lab:modifier-table -->`,
`<!-- t5lab:task-table -->`). The numbers come from `t5lab.analysis.counting` and the shape and task
registries, which need no torch, so the site builds without it. The checkout's own `src/` comes first on
the path: the site documents the code beside it, not whichever t5lab happens to be installed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

SRC = Path(__file__).resolve().parents[2] / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

from t5lab.analysis.counting import count_parameters, forward_flops  # noqa: E402
from t5lab.config import ModelConfig  # noqa: E402
from t5lab.data.tasks import get_task, list_tasks  # noqa: E402
from t5lab.shapes import from_name, registered_names  # noqa: E402

INPUT_LENGTH, TARGET_LENGTH = 512, 114  # nanoT5's / T5's span-corruption lengths
FAMILIES = (  # registry prefix → what the table calls it; longest prefix first
    ("t5-efficient-", "T5-efficient"),
    ("t5-v1_1-", "T5 v1.1"),
    ("switch-", "Switch"),
    ("t5-", "T5 v1.0"),
)
MODIFIER_EXAMPLES = (
    "t5-efficient-small",
    "t5-efficient-small-nl16",
    "t5-efficient-small-el16-dl8",
    "t5-efficient-small-ff6000",
    "t5-efficient-small-dm1000",
    "t5-efficient-small-kv128",
    "t5-efficient-small-nh16",
    "t5-efficient-small-skv",
    "t5-efficient-small-sh",
    "t5-efficient-small-moe8",
)


def _family(name: str) -> str:
    return next(label for prefix, label in FAMILIES if name.startswith(prefix))


def _count(n: int) -> str:
    for unit, size in (("B", 10**9), ("M", 10**6)):
        if n >= size:
            return f"{n / size:,.1f}{unit}" if n < 100 * size else f"{n / size:,.0f}{unit}"
    return f"{n:,}"


def _row(config: ModelConfig, family: bool) -> str:
    params = count_parameters(config)
    flops = forward_flops(config, INPUT_LENGTH, TARGET_LENGTH).total
    heads = str(config.num_heads) if config.kv_heads == config.num_heads else f"{config.num_heads} (kv {config.kv_heads})"
    experts = f"{config.num_experts}" if config.is_moe else "-"
    cells = [f"`{config.name}`"] + ([_family(config.name)] if family else []) + [
        f"{config.num_encoder_layers}/{config.num_decoder_layers}", f"{config.d_model:,}", f"{config.d_ff:,}",
        heads, str(config.d_kv), experts, f"{params.total:,}", _count(params.active_per_token), f"{flops / 1e9:,.1f}",
    ]
    return "| " + " | ".join(cells) + " |"


def _table(names: list[str], family: bool) -> str:
    header = ["name"] + (["family"] if family else []) + [
        "layers (enc/dec)", "d_model", "d_ff", "heads", "d_kv", "experts", "parameters", "active / token",
        f"forward GFLOPs / example ({INPUT_LENGTH}/{TARGET_LENGTH})",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i < 2 else "--:" for i in range(len(header))) + "|"]
    return "\n".join(lines + [_row(from_name(n), family) for n in names])


def shape_table() -> str:
    """Every registered base name, grouped by family in registry order."""
    return _table(registered_names(), family=True)


def modifier_table() -> str:
    return _table(list(MODIFIER_EXAMPLES), family=False)


def task_table() -> str:
    lines = ["| task | primary metric | target words | data folder |", "|---|---|---|---|"]
    for name in list_tasks():
        task = get_task(name)
        labels = ", ".join(f"`{label}`" for label in task.label_names) or "free text"
        folder = f"`{task.folder}`" if task.folder else "your files"
        lines.append(f"| `{name}` | {task.primary_metric} | {labels} | {folder} |")
    return "\n".join(lines)


MARKERS = {
    "<!-- t5lab:shape-table -->": shape_table,
    "<!-- t5lab:modifier-table -->": modifier_table,
    "<!-- t5lab:task-table -->": task_table,
}


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    for marker, render in MARKERS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, render())
    return markdown

