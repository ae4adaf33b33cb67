"""`t5lab.kernels.apply`: what it swaps in, what it keeps (parameters, keys, FLOP counts), how it picks the
attention kernel on CUDA (the Triton kernel behind a guarded import), and that importing it registers nothing."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

import t5lab.kernels
from t5lab.kernels import ATTENTION_KERNELS, apply
from t5lab.kernels.cpu_dropout import Dropout
from t5lab.kernels.cpu_linear import CpuLinear
from t5lab.kernels.rms_norm import FastRMSNorm
from t5lab.model import build_model
from t5lab.model.attention import Attention, AttentionBias


def test_cpu_apply_swaps_modules_and_keeps_parameters(tiny_config):
    plain = build_model(tiny_config.replace(dropout=0.1), seed=0)
    parameters = dict(plain.named_parameters())
    fast = apply(plain, device="cpu")
    assert dict(fast.named_parameters()) == parameters  # the same Parameter objects: an optimizer keeps working
    kinds = {type(m) for m in fast.modules()}
    assert {CpuLinear, FastRMSNorm, Dropout} <= kinds and torch.nn.Linear not in kinds
    assert all(m.kernel is ATTENTION_KERNELS["eager"] for m in fast.modules() if isinstance(m, Attention))
    assert fast.output_loss is not None


def test_applied_model_counts_the_same_flops(tiny_config):
    ids = torch.randint(2, tiny_config.vocab_size, (2, 9))
    labels = torch.randint(2, tiny_config.vocab_size, (2, 5))
    counts = []
    for model in (build_model(tiny_config, seed=0), apply(build_model(tiny_config, seed=0), device="cpu")):
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model.eval()(ids, labels=labels)
        counts.append(counter.get_total_flops())
    assert counts[0] == counts[1] > 0


def test_import_registers_nothing_into_torch():
    code = ("import torch, t5lab.kernels; from torch.utils import flop_counter; "
            "op = getattr(torch.ops.mkldnn, '_linear_pointwise', None); "
            "print(op is not None and op in flop_counter.flop_registry)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_cuda_apply_picks_triton_where_it_imports_else_fused(tiny_config, monkeypatch):
    """Checked on any machine: the model stays where it is, only the kernel choice for a CUDA device is made."""
    monkeypatch.setitem(sys.modules, "t5lab.kernels.triton_attention", None)  # import fails: no triton here
    model = apply(build_model(tiny_config, seed=0), device="cuda")
    assert model.encoder.layers[0].self_attn.kernel is ATTENTION_KERNELS["fused"]

    calls = []
    fake = types.ModuleType("t5lab.kernels.triton_attention")
    fake.supports = lambda q, k, bias, dropout_p: dropout_p == 0.0
    fake.t5_attention = lambda q, k, v, table, **kw: calls.append(kw) or torch.zeros_like(q)
    monkeypatch.setitem(sys.modules, "t5lab.kernels.triton_attention", fake)
    monkeypatch.setattr(t5lab.kernels, "triton_attention", fake, raising=False)
    kernel = apply(build_model(tiny_config, seed=0), device="cuda").encoder.layers[0].self_attn.kernel
    q = k = v = torch.randn(1, 3, 4, 10)
    table = torch.randn(8, 3)
    bias = AttentionBias(table, bidirectional=False, num_buckets=8, max_distance=20, query_offset=2, causal=True)
    assert torch.equal(kernel(q, k, v, bias, 0.0), torch.zeros_like(q))
    assert calls == [dict(bidirectional=False, num_buckets=8, max_distance=20, query_offset=2,
                          key_padding_mask_BS=None, causal=True)]
    reference = ATTENTION_KERNELS["fused"](q, k, v, AttentionBias(table, causal=True, num_buckets=8), 0.1)
    assert kernel(q, k, v, AttentionBias(table, causal=True, num_buckets=8), 0.1).shape == reference.shape
    assert len(calls) == 1  # unsupported (dropout): the fallback ran


def test_unknown_attention_is_a_user_error(tiny_config):
    with pytest.raises(t5lab.kernels.T5LabError, match="expected one of"):
        apply(build_model(tiny_config), device="cpu", attention="flash")
