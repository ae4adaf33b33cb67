from __future__ import annotations

import io
import math

import pytest
import torch

from t5lab import build_model
from t5lab.train.config import TrainConfig
from t5lab.train.optim import AdamWScale, build_optimizer, param_groups


def test_adamwscale_matches_a_hand_computed_step():
    """Two steps of nanoT5's AdamWScale written out in plain Python floats."""
    w0 = [[1.0, -2.0], [3.0, 4.0]]
    grads = [[[0.5, -1.0], [0.25, 2.0]], [[-0.5, 0.5], [1.0, -1.0]]]
    lr, b1, b2, eps, wd = 0.1, 0.9, 0.999, 1e-6, 0.01
    p = torch.nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = AdamWScale([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    w = [x for row in w0 for x in row]
    m, v = [0.0] * 4, [0.0] * 4
    for t, g in enumerate(grads, start=1):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        g = [x for row in g for x in row]
        rms = math.sqrt(sum(x * x for x in w) / 4)  # of the weights before this step
        step_size = lr * math.sqrt(1 - b2**t) / (1 - b1**t) * max(1e-3, rms)
        for i in range(4):
            m[i] = b1 * m[i] + (1 - b1) * g[i]
            v[i] = b2 * v[i] + (1 - b2) * g[i] ** 2
            w[i] -= step_size * m[i] / (math.sqrt(v[i]) + eps)
            w[i] -= lr * wd * w[i]  # decoupled decay after the update, on the updated weights
        assert p.detach().flatten().tolist() == pytest.approx(w, rel=1e-12, abs=1e-12)


def test_adamwscale_floors_the_scale_for_tiny_weights():
    p = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    opt = AdamWScale([p], lr=1.0, eps=0.0)
    p.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    # m / sqrt(v) = 1 after bias correction; the RMS of zeros is floored at 1e-3.
    assert p.detach().tolist() == pytest.approx([-1e-3] * 3)


def test_decay_groups_exclude_norms_and_bias_tables(tiny_config):
    model = build_model(tiny_config, seed=0)
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all("norm" in names[id(p)] or "relative_bias" in names[id(p)] for p in no_decay["params"])
    assert any("relative_bias" in names[id(p)] for p in no_decay["params"])
    assert not any("norm" in names[id(p)] for p in decay["params"])
    total = sum(p.numel() for g in (decay, no_decay) for p in g["params"])
    assert total == model.num_parameters()


@pytest.mark.parametrize("name", ["adamw", "adamwscale", "adafactor"])
def test_each_optimizer_lowers_the_loss_and_saves_weights_only_state(tiny_config, name):
    torch.manual_seed(0)
    model = build_model(tiny_config, seed=0)
    config = TrainConfig(optimizer=name, lr=1e-2, weight_decay=0.01)
    opt = build_optimizer(model, config, torch.device("cpu"))
    x = torch.randint(2, tiny_config.vocab_size, (2, 9))
    losses = []
    for _ in range(4):
        loss = model(input_ids=x, labels=x[:, :4]).loss
        losses.append(loss.item())
        loss.backward()
        opt.step()
        opt.zero_grad()
    assert losses[-1] < losses[0]
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = build_optimizer(model, config, torch.device("cpu"))
    fresh.load_state_dict(state)
    assert fresh.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def test_adafactor_uses_t5_settings(tiny_config):
    opt = build_optimizer(build_model(tiny_config, seed=0), TrainConfig(optimizer="adafactor"), torch.device("cpu"))
    assert isinstance(opt, torch.optim.Adafactor)
    group = opt.param_groups[0]
    assert group["beta2_decay"] == -0.8 and group["d"] == 1.0 and group["eps"] == (None, 1e-3)


def _updates_over_steps(tiny_config, make_optimizer, steps: int = 4) -> list[torch.Tensor]:
    model = build_model(tiny_config, seed=0)
    opt = make_optimizer(param_groups(model, 0.01))
    generator = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randint(2, tiny_config.vocab_size, (2, 9), generator=generator)
        model(input_ids=x, labels=x[:, :4]).loss.backward()
        opt.step()
        opt.zero_grad()
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["adamwscale", "adafactor"])
def test_foreach_optimizers_match_their_per_tensor_loops(tiny_config, name):
    def make(foreach: bool):
        if name == "adamwscale":
            return lambda groups: AdamWScale(groups, lr=1e-2, foreach=foreach)
        return lambda groups: torch.optim.Adafactor(groups, lr=1e-2, beta2_decay=-0.8, eps=(None, 1e-3), d=1.0,
                                                    foreach=foreach)

    looped = _updates_over_steps(tiny_config, make(False))
    fused = _updates_over_steps(tiny_config, make(True))
    start = [p.detach() for p in build_model(tiny_config, seed=0).parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(looped, start, strict=True))  # the steps moved the weights
    for a, b in zip(looped, fused, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-6)


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_the_trainer_builds_the_foreach_forms_for_cuda(tiny_config, device):
    model = build_model(tiny_config, seed=0)  # building touches no device: this runs without a GPU
    adamwscale = build_optimizer(model, TrainConfig(optimizer="adamwscale"), torch.device(device))
    adafactor = build_optimizer(model, TrainConfig(optimizer="adafactor"), torch.device(device))
    assert adamwscale.foreach == adafactor.param_groups[0]["foreach"] == (device == "cuda")
