"""`t5lab pareto`: the cost/quality frontier of measured shapes, as a table and a plot."""

from __future__ import annotations

from typing import Literal

from t5lab.recipes.frontier import write_frontier


def pareto(
    results: list[str],
    x: Literal["params", "flops", "throughput"] = "params",
    y: Literal["loss", "score"] = "loss",
    out: str = "pareto",
) -> None:
    """Compute the Pareto frontier of measured shapes and write pareto.md, pareto.csv and pareto.png.

    Lower parameters/FLOPs and loss are better; higher throughput and score are better.

    Args:
        results: JSONL files, one object per shape: name, params, flops, tokens_per_s, loss and/or score.
        x: cost axis: params, flops or throughput (tokens_per_s).
        y: quality axis: loss or score.
        out: output folder (created if needed).
    """
    write_frontier(results, x, y, out)
