"""What a training run reports: `metrics.jsonl` rows, optional TensorBoard events or Weights & Biases logs,
a loss-curve PNG.

`metrics.jsonl` holds one JSON object per logged step: training rows carry `step`, `loss`, `lr`,
`grad_norm`, `tokens_per_s` (encoder input tokens per second of wall time) and any router statistics
(`router/<name>`); evaluation rows carry `step`, `split: "eval"`, `eval_loss` and `eval_accuracy`.
Every row is flushed as it is written, so a killed run keeps everything it logged; a resumed run first
drops the rows logged after the checkpoint it resumes from, so the file reads as one uninterrupted run.

TensorBoard and W&B receive the same numeric fields, as `train/<field>` or `eval/<field>` at the row's
step. A W&B run's id is kept in OUT/wandb-run-id, so a resumed training run continues the same W&B run
(`WANDB_MODE=offline` keeps it on disk, under OUT/wandb, for `wandb sync` later).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import torch

from t5lab.files import pyplot, write_atomic, write_figure


def router_metrics(routers: list[Any]) -> dict[str, float | list[float]]:
    """Average, over a model's sparse layers, every scalar and 1-D statistic their router outputs expose.

    Kept generic on purpose: whatever fields a layer's router output carries (aux loss, z-loss, expert
    fractions, dropped fraction...) become `router/<field>`; larger tensors (per-token logits) are skipped.
    """
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    for r in routers:
        if dataclasses.is_dataclass(r):
            fields = {f.name: getattr(r, f.name) for f in dataclasses.fields(r)}
        elif isinstance(r, dict):
            fields = r
        else:
            fields = getattr(r, "__dict__", {})
        for name, value in fields.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = torch.tensor(float(value))
            if not isinstance(value, torch.Tensor) or value.dim() > 1 or not value.is_floating_point():
                continue
            value = value.detach().float().cpu()
            if name in sums and sums[name].shape != value.shape:
                continue
            sums[name] = sums[name] + value if name in sums else value
            counts[name] = counts.get(name, 0) + 1
    out: dict[str, float | list[float]] = {}
    for name, total in sums.items():
        mean = total / counts[name]
        out[f"router/{name}"] = mean.item() if mean.dim() == 0 else [round(x, 6) for x in mean.tolist()]
    return out


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The rows of a metrics.jsonl (a torn last line from a killed run is ignored)."""
    rows: list[dict[str, Any]] = []
    path = Path(path)
    if not path.is_file():
        return rows
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class MetricsLog:
    """Appends rows to `metrics.jsonl` (and TensorBoard when asked); draws the loss curve on demand."""

    def __init__(
        self,
        out: str | Path,
        *,
        tensorboard: bool = False,
        wandb: str | None = None,
        run_config: dict[str, Any] | None = None,
        resume_step: int | None = None,
    ) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.path = self.out / "metrics.jsonl"
        if resume_step is None:
            self.path.unlink(missing_ok=True)
        else:
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            write_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept).encode())
        self._file = open(self.path, "a")  # noqa: SIM115 (kept open for the run; closed in close())
        self._writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                from t5lab.errors import T5LabError

                raise T5LabError("tensorboard=true needs the tensorboard package (pip install 't5lab[tensorboard]')") from None
            self._writer = SummaryWriter(str(self.out / "tensorboard"))
        self._wandb = _start_wandb(wandb, self.out, run_config, resumed=resume_step is not None) if wandb else None

    def write(self, row: dict[str, Any]) -> None:
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._writer is None and self._wandb is None:
            return
        prefix = "eval" if row.get("split") == "eval" else "train"
        scalars = {f"{prefix}/{key}": value for key, value in row.items()
                   if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "step"
                   and math.isfinite(value)}
        if self._writer is not None:
            for key, value in scalars.items():
                self._writer.add_scalar(key, value, row["step"])
        if self._wandb is not None:
            self._wandb.log(scalars, step=row["step"])

    def plot(self, path: str | Path | None = None) -> Path:
        """Training (and evaluation) loss against step, as a PNG (written atomically)."""
        plt = pyplot()
        path = Path(path) if path is not None else self.out / "loss.png"
        rows = read_metrics(self.path)
        train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
        evals = [(r["step"], r["eval_loss"]) for r in rows if "eval_loss" in r]
        fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
        if train:
            ax.plot(*zip(*train, strict=True), label="train", linewidth=1)
        if evals:
            ax.plot(*zip(*evals, strict=True), "o-", label="held-out", markersize=4)
        ax.set_xlabel("step")
        ax.set_ylabel("cross-entropy loss")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        write_figure(fig, path)
        plt.close(fig)
        return path

    def close(self) -> None:
        self._file.close()
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()


def _start_wandb(project: str, out: Path, run_config: dict[str, Any] | None, resumed: bool) -> Any:
    """A W&B run logging into `project`, under OUT/wandb; a resumed training run continues its W&B run."""
    try:
        import wandb
    except ImportError:
        from t5lab.errors import T5LabError

        raise T5LabError(f"--wandb {project}: needs the wandb package (pip install 't5lab[wandb]')") from None
    id_file = out / "wandb-run-id"
    run_id = id_file.read_text().strip() if resumed and id_file.is_file() else wandb.util.generate_id()
    write_atomic(id_file, run_id.encode())
    return wandb.init(project=project, dir=str(out), id=run_id, resume="allow", config=run_config or {},
                      name=out.name)
