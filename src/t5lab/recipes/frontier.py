"""The cost/quality frontier of measured shapes as files (a table, a CSV, a plot): what `t5lab pareto` and
the scale study write."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from t5lab.analysis.pareto import Point, frontier
from t5lab.errors import T5LabError
from t5lab.files import pyplot, write_atomic, write_figure
from t5lab.recipes.results import read_rows

X_FIELDS = {"params": "params", "flops": "flops", "throughput": "tokens_per_s"}
X_LABELS = {"params": "parameters", "flops": "FLOPs per example", "throughput": "tokens / s"}


def read_results(paths: list[str], x_field: str, y_field: str) -> list[Point]:
    """Points from JSONL files: one object per line with `name`, the x field and the y field."""
    points = []
    for file, number, row in read_rows(paths, ("name", x_field, y_field)):
        try:
            points.append(Point(str(row["name"]), float(row[x_field]), float(row[y_field])))
        except (TypeError, ValueError):
            raise T5LabError(f"{file}:{number}: '{x_field}' and '{y_field}' must be numbers") from None
    return points


def _plot(points: list[Point], front: list[Point], x: str, y: str, path: Path) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5.5))
    ax.scatter([p.x for p in points], [p.y for p in points], color="0.6", label="shapes", zorder=2)
    ax.plot([p.x for p in front], [p.y for p in front], "o-", color="tab:red", label="Pareto frontier", zorder=3)
    for p in points:
        ax.annotate(p.name, (p.x, p.y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel(X_LABELS[x] + " (log scale)")
    ax.set_ylabel(y)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_figure(fig, path, dpi=120)
    plt.close(fig)


def write_frontier(results: list[str], x: str, y: str, out: str | Path) -> list[Point]:
    """Read `results` (JSONL), write OUT/pareto.{md,csv,png} and return the frontier."""
    points = read_results(results, X_FIELDS[x], y)
    front = frontier(points, minimise_x=x != "throughput", minimise_y=y == "loss")
    on_front = {id(p) for p in front}
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    ordered = sorted(points, key=lambda p: p.x)
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["name", X_FIELDS[x], y, "on_frontier"])
    writer.writerows([p.name, p.x, p.y, id(p) in on_front] for p in ordered)
    write_atomic(folder / "pareto.csv", table.getvalue().encode())
    lines = [f"| name | {X_FIELDS[x]} | {y} | frontier |", "|---|---:|---:|:---:|"]
    lines += [f"| {p.name} | {p.x:g} | {p.y:g} | {'*' if id(p) in on_front else ''} |" for p in ordered]
    write_atomic(folder / "pareto.md", ("\n".join(lines) + "\n").encode())
    _plot(points, front, x, y, folder / "pareto.png")
    print(f"{len(front)} of {len(points)} shapes on the frontier: {', '.join(p.name for p in front)}")
    print(f"wrote {folder / 'pareto.md'}, {folder / 'pareto.csv'}, {folder / 'pareto.png'}")
    return front
