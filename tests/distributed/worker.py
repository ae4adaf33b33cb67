"""Runs training runs described in a JSON file, as one process of a torchrun world (or in-process as one rank):
the same code path for the 1-rank reference and for 2 ranks, so the tests compare like with like.

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/distributed/worker.py runs.json

Each run: {"out", "parallel", "grad_accum", "steps", "stop_after", "resume", "activation_checkpointing",
"kill_at_micro_batch"}; the model is the tests' tiny shape, fp32, dropout 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import torch

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from shared_test_data import TINY  # noqa: E402
from train.synthetic import GlobalBatches  # noqa: E402

from t5lab import build_model  # noqa: E402
from t5lab.train.config import TrainConfig  # noqa: E402
from t5lab.train.distributed import world  # noqa: E402
from t5lab.train.loop import train  # noqa: E402

GLOBAL_BATCH = 8
CONFIG = TrainConfig(steps=6, batch_size=GLOBAL_BATCH, grad_accum=2, lr=3e-3, warmup=2, log_every=1, eval_every=3,
                     eval_batches=1, save_every=3, keep_last=3, device="cpu", precision="fp32", progress=False)


class _KillAt:
    """Yields the source's micro-batches; kills this process (as kill -9 would) before micro-batch `at`."""

    def __init__(self, source: GlobalBatches, at: int) -> None:
        self.source, self.at = source, at

    def __iter__(self):
        for k, batch in enumerate(self.source):
            if k + 1 == self.at:
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch

    def state_dict(self):
        return self.source.state_dict()

    def load_state_dict(self, state):
        self.source.load_state_dict(state)


def run(spec: dict[str, Any]) -> None:
    here = world()
    config = CONFIG.replace(parallel=spec.get("parallel", "ddp"), grad_accum=spec.get("grad_accum", 2),
                            activation_checkpointing=spec.get("activation_checkpointing", False))
    batches = GlobalBatches(TINY.vocab_size, GLOBAL_BATCH, config.grad_accum, here.rank, here.size)
    if spec.get("kill_at_micro_batch") and here.rank == spec.get("kill_rank", 1):
        batches = _KillAt(batches, spec["kill_at_micro_batch"])
    train(build_model(TINY, seed=0), config, batches, Path(spec["out"]),
          eval_batches=lambda: GlobalBatches(TINY.vocab_size, 4, 1, seed=7), resume=spec.get("resume", False),
          stop_after=spec.get("stop_after"))


if __name__ == "__main__":
    torch.set_num_threads(1)
    for spec in json.loads(Path(sys.argv[1]).read_text()):
        run(spec)
