"""The fused output layer + loss under torch.compile: a custom op that the compiled graph calls whole."""

from __future__ import annotations

import pytest
import torch

from t5lab import build_model
from t5lab.kernels.fused_loss import FusedOutputLoss


@pytest.mark.slow  # inductor compiles C++ for the forward and backward graphs (minutes on 2 busy cores)
def test_compiled_training_uses_the_fused_loss_and_matches_eager(tiny_config):
    config = tiny_config.replace(dropout=0.0, num_encoder_layers=1, num_decoder_layers=1)
    eager = build_model(config, seed=0).train()
    fused = build_model(config, seed=0).train()
    fused.output_loss = FusedOutputLoss()
    x = torch.randint(2, config.vocab_size, (2, 7), generator=torch.Generator().manual_seed(0))
    labels = x[:, :5].clone()
    labels[1, 3:] = -100
    reference = eager(input_ids=x, labels=labels)
    reference.loss.backward()
    output = torch.compile(fused, fullgraph=True)(input_ids=x, labels=labels)  # one graph: the op inside it
    output.loss.backward()
    assert output.logits is None  # the [B, T, V] logits never existed
    torch.testing.assert_close(output.loss, reference.loss, rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(fused.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_the_op_registers_when_the_fused_loss_is_made_and_checks_like_a_torch_op(tiny_config):
    """The fake implementation and autograd registration agree with the real op (torch's own op checks)."""
    FusedOutputLoss()
    op = torch.ops.t5lab.linear_cross_entropy.default
    hidden = torch.randn(6, 8, requires_grad=True)
    weight = torch.randn(11, 8, requires_grad=True)
    labels = torch.tensor([1, 2, -100, 4, 10, 0])
    torch.library.opcheck(op, (hidden, weight, labels, torch.float32, True, True),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))
