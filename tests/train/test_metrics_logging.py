"""TensorBoard / Weights & Biases logging of the metrics rows: off by default, a one-line error when the
package is missing, the same fields as metrics.jsonl, and a resumed run continuing its W&B run."""

from __future__ import annotations

import sys
import types

import pytest

from t5lab.cli import main
from t5lab.errors import T5LabError
from t5lab.train.metrics import MetricsLog, read_metrics


class FakeRun:
    def __init__(self, **init):
        self.init, self.logged, self.finished = init, [], False

    def log(self, values, step):
        self.logged.append((step, values))

    def finish(self):
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch):
    """A stand-in `wandb` module recording what t5lab asks of it (the real one is an optional extra)."""
    runs = []
    module = types.ModuleType("wandb")
    module.util = types.SimpleNamespace(generate_id=lambda: f"run{len(runs)}")

    def init(**kwargs):
        runs.append(FakeRun(**kwargs))
        return runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return runs


def test_wandb_gets_the_metrics_rows_and_a_resumed_run_keeps_its_id(fake_wandb, tmp_path):
    log = MetricsLog(tmp_path, wandb="t5lab-test", run_config={"lr": 0.01})
    log.write({"step": 10, "loss": 2.5, "lr": 0.01, "router/aux": [0.1, 0.2]})
    log.write({"step": 10, "split": "eval", "eval_loss": 2.7})
    log.close()
    run = fake_wandb[0]
    assert run.init["project"] == "t5lab-test" and run.init["config"] == {"lr": 0.01}
    assert run.init["dir"] == str(tmp_path) and run.finished
    assert run.logged == [(10, {"train/loss": 2.5, "train/lr": 0.01}), (10, {"eval/eval_loss": 2.7})]
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [10, 10]

    MetricsLog(tmp_path, wandb="t5lab-test", resume_step=10).close()
    assert fake_wandb[1].init["id"] == run.init["id"] and fake_wandb[1].init["resume"] == "allow"
    MetricsLog(tmp_path / "fresh", wandb="t5lab-test").close()
    assert fake_wandb[2].init["id"] != run.init["id"]


def test_missing_packages_are_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import fails as if not installed
    with pytest.raises(T5LabError, match=r"--wandb proj: needs the wandb package \(pip install 't5lab\[wandb\]'\)"):
        MetricsLog(tmp_path, wandb="proj")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    with pytest.raises(T5LabError, match="tensorboard"):
        MetricsLog(tmp_path, tensorboard=True)


def test_off_by_default_and_offered_as_flags(tmp_path, fake_wandb, capsys):
    MetricsLog(tmp_path).close()
    assert not fake_wandb
    for command in ("pretrain", "finetune"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        help_text = capsys.readouterr().out
        assert "--wandb WANDB" in help_text and "--tensorboard" in help_text


def test_real_wandb_offline_run(tmp_path, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    log = MetricsLog(tmp_path, wandb="t5lab-test")
    log.write({"step": 1, "loss": 3.0})
    log.close()
    assert (tmp_path / "wandb").is_dir() and wandb.run is None
