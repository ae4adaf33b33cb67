"""Properties of the model that hold whatever the weights: causality, padding, cache, kernels, counts.

The `model` fixture runs each test on the plain model and on the one `t5lab.kernels.apply` speeds up."""

from __future__ import annotations

import copy

import pytest
import torch

from t5lab.errors import T5LabError
from t5lab.kernels import apply, set_attention
from t5lab.model import KVCache, build_model


@pytest.fixture(params=["plain", "cpu-kernels"])
def model(tiny_config, request):
    plain = build_model(tiny_config, seed=0).eval()
    return plain if request.param == "plain" else apply(plain, device="cpu")


def _batch(config, B=3, S=9, T=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, config.vocab_size, (B, S), generator=g)
    labels = torch.randint(2, config.vocab_size, (B, T), generator=g)
    return ids, labels


def test_forward_shapes_and_loss(model, tiny_config):
    ids, labels = _batch(tiny_config)
    out = model.eval()(ids, labels=labels)
    assert out.logits.shape == (3, 7, tiny_config.vocab_size)
    expected = torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), labels.flatten())
    torch.testing.assert_close(out.loss, expected)


@pytest.mark.parametrize("tied", [True, False])
def test_training_loss_is_fused_with_the_same_value_and_gradients(tiny_config, tied):
    """With the kernels applied, training runs the output layer and the loss fused (no logits); loss and every
    gradient equal the plain model's (the test config has no dropout)."""
    plain = build_model(tiny_config.replace(tie_embeddings=tied), seed=0).train()
    model = apply(copy.deepcopy(plain), device="cpu")
    ids, labels = _batch(tiny_config)
    labels[0, 3:] = -100
    results = []
    for net in (model, plain):
        out = net(ids, labels=labels)
        out.loss.backward()
        assert (out.logits is None) == (net is model)
        results.append((out.loss.detach(), [p.grad.clone() for p in net.parameters()]))
    (loss_fused, grads_fused), (loss_plain, grads_plain) = results
    torch.testing.assert_close(loss_fused, loss_plain)
    for a, b in zip(grads_fused, grads_plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    assert model.output_loss.buffer.nbytes > 0  # the logits buffer is kept between steps
    assert copy.deepcopy(model).output_loss.buffer.nbytes == 0  # scratch memory, not state: never copied
    assert model.eval()(ids, labels=labels).logits is not None  # eval: the plain logits
    assert apply(build_model(tiny_config), device="cpu", training=False).output_loss is None


@pytest.mark.parametrize(("dtype", "fused"), [(torch.bfloat16, True), (torch.float16, False)])
def test_training_under_autocast_fuses_the_loss_except_in_fp16(tiny_config, dtype, fused):
    """bf16 keeps fp32's range; fp16 would flush the fused loss's early-made gradients (GradScaler scales later)."""
    model = apply(build_model(tiny_config, seed=0), device="cpu")
    ids, labels = _batch(tiny_config)
    with torch.autocast("cpu", dtype=dtype):
        out = model.train()(ids, labels=labels)
        reference = model.eval()(ids, labels=labels).loss
    assert (out.logits is None) == fused
    torch.testing.assert_close(out.loss, reference, atol=2e-2, rtol=1e-2)


def test_ignored_labels_do_not_count(model, tiny_config):
    ids, labels = _batch(tiny_config)
    masked = labels.clone()
    masked[:, 4:] = -100
    out = model.eval()(ids, labels=masked)
    # Teacher forcing uses the shifted labels, so compare against logits from the same decoder inputs.
    ref = torch.nn.functional.cross_entropy(out.logits[:, :4].flatten(0, 1), labels[:, :4].flatten())
    torch.testing.assert_close(out.loss, ref)


def test_decoder_is_causal(model, tiny_config):
    ids, labels = _batch(tiny_config)
    dec = model.shift_right(labels)
    changed = dec.clone()
    changed[:, 4] = (changed[:, 4] + 1) % tiny_config.vocab_size
    a = model(ids, decoder_input_ids=dec).logits
    b = model(ids, decoder_input_ids=changed).logits
    torch.testing.assert_close(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4:], b[:, 4:])


def test_encoder_padding_is_invisible(model, tiny_config):
    ids, labels = _batch(tiny_config, B=1, S=6)
    padded = torch.cat([ids, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    mask = torch.cat([torch.ones(1, 6), torch.zeros(1, 4)], dim=1).long()
    a = model.eval()(ids, labels=labels).logits
    b = model(padded, attention_mask=mask, labels=labels).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "fused"])
@pytest.mark.parametrize("padded", [False, True])
def test_fused_kernels_match_eager_with_gradients(tiny_config, backend, padded):
    ids, labels = _batch(tiny_config)
    mask = torch.ones_like(ids)
    mask[1, 5:] = 0
    mask = mask if padded else None
    ref_model = build_model(tiny_config, seed=0).train()
    ref = ref_model(ids, mask, labels=labels)
    ref.loss.backward()
    model = apply(build_model(tiny_config, seed=0), device="cpu", training=False, attention=backend).train()
    out = model(ids, mask, labels=labels)
    out.loss.backward()
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    with pytest.raises(T5LabError, match="expected one of"):
        set_attention(model, "nope")


def test_kv_cache_step_by_step_equals_full_decode(model, tiny_config):
    ids, labels = _batch(tiny_config)
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    dec = model.shift_right(labels)
    full = model(ids, mask, decoder_input_ids=dec).logits
    hidden, _ = model.encode(ids, mask)
    cache = KVCache.empty(tiny_config.num_decoder_layers, max_length=dec.shape[1])
    steps = [model.decode(dec[:, t : t + 1], hidden, mask, cache)[0] for t in range(dec.shape[1])]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    # A prefix of several positions at once then single steps gives the same.
    cache = KVCache.empty(tiny_config.num_decoder_layers, max_length=dec.shape[1])
    first = model.decode(dec[:, :3], hidden, mask, cache)[0]
    rest = [model.decode(dec[:, t : t + 1], hidden, mask, cache)[0] for t in range(3, dec.shape[1])]
    torch.testing.assert_close(torch.cat([first, *rest], dim=1), full, atol=1e-5, rtol=1e-5)


def test_kernels_keep_parameters_and_state_dict_keys(tiny_config):
    plain = build_model(tiny_config, seed=0)
    before = {name: p for name, p in plain.named_parameters()}
    fast = apply(plain, device="cpu")
    assert {name: p for name, p in fast.named_parameters()} == before  # the same Parameter objects
    assert list(fast.state_dict()) == list(build_model(tiny_config).state_dict())


def test_num_parameters_counts_tied_embedding_once(tiny_config):
    tied = build_model(tiny_config)
    untied = build_model(tiny_config.replace(tie_embeddings=False))
    assert tied.num_parameters() == sum(p.numel() for p in tied.parameters())
    assert untied.num_parameters() - tied.num_parameters() == tiny_config.vocab_size * tiny_config.d_model


@pytest.mark.parametrize(
    ("changes", "kv_params_per_attention"),
    [({}, 2 * 24 * 30), ({"tie_key_value": True}, 24 * 30), ({"num_kv_heads": 1}, 2 * 24 * 10)],
)
def test_attention_variants(tiny_config, changes, kv_params_per_attention):
    config = tiny_config.replace(**changes)
    model = build_model(config, seed=0)
    attn = model.encoder.layers[0].self_attn
    kv = sum(p.numel() for n, p in attn.named_parameters() if n.split(".")[0] in ("k", "v"))
    assert kv == kv_params_per_attention
    ids, labels = _batch(config)
    out = model(ids, labels=labels)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert all(p.grad is not None for p in model.parameters())


def test_seeded_init_is_reproducible(tiny_config):
    a = build_model(tiny_config, seed=3).state_dict()
    b = build_model(tiny_config, seed=3).state_dict()
    c = build_model(tiny_config, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["shared.weight"], c["shared.weight"])


def test_meta_device_build_has_published_parameter_count():
    from t5lab.shapes import from_name

    model = build_model(from_name("t5-efficient-tiny"), device="meta")
    assert model.num_parameters() == 15_570_688


def test_model_traces_as_one_graph(model, tiny_config):
    """torch.compile (here only its tracer, the eager backend) sees the model as one graph: the split one-row
    products step aside while compiling instead of breaking the graph (torch.get_num_threads did)."""
    ids, labels = _batch(tiny_config)
    compiled = torch.compile(lambda x, y: model(x, labels=y).logits, backend="eager", fullgraph=True)
    # Many rows, and one row (one input and one target token: the split path in eager mode).
    for x, y in ((ids, labels), (ids[:1, :1], labels[:1, :1])):
        torch.testing.assert_close(compiled(x, y), model(x, labels=y).logits)


def test_compile_keeps_the_fused_loss(tiny_config):
    """Under torch.compile, training takes the fused output layer + loss too (a custom op in the graph): no logits."""
    model = apply(build_model(tiny_config, seed=0), device="cpu")
    ids, labels = _batch(tiny_config)
    compiled = torch.compile(model.train(), backend="eager", fullgraph=True)
    out = compiled(ids, labels=labels)
    assert out.logits is None
    torch.testing.assert_close(out.loss, model(ids, labels=labels).loss)


@pytest.mark.parametrize("ffn", ["relu", "gated-gelu"])
@pytest.mark.parametrize("experts", [0, 4])
def test_fp16_matches_fp32(tiny_config, ffn, experts):
    """A tiny dense and a tiny Switch shape in fp16 (on CPU) give fp32's logits within fp16's precision."""
    config = tiny_config.replace(feed_forward=ffn)
    if experts:
        config = config.replace(num_experts=experts, expert_capacity=64, router_jitter_noise=0.0)
    ids, labels = _batch(config)
    reference = build_model(config, seed=0).eval()(ids, labels=labels)
    half = build_model(config, seed=0, dtype=torch.float16).eval()(ids, labels=labels)
    assert half.logits.dtype == torch.float16
    torch.testing.assert_close(half.logits.float(), reference.logits, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(half.loss.float(), reference.loss, atol=1e-2, rtol=1e-2)


def test_fp16_hidden_states_are_clamped_not_inf(tiny_config):
    """A feed-forward output past fp16's range (as in trained T5 checkpoints) is clamped, as transformers does:
    the hidden states stay finite instead of turning the next norm into NaN."""
    model = build_model(tiny_config, seed=0, dtype=torch.float16).eval()
    with torch.no_grad():
        for block in model.encoder.layers:  # every hidden unit positive, each adding 3000 x: past 65,504
            block.ffn.wi.weight.abs_()
            block.ffn.wo.weight.fill_(3000.0)
    ids, labels = _batch(tiny_config)
    out = model(ids, labels=labels)
    assert torch.isfinite(out.encoder_hidden).all() and torch.isfinite(out.logits).all()
