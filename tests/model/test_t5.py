"""Properties of the model that hold whatever the weights: causality, padding, cache, kernels, counts."""

from __future__ import annotations

import copy

import pytest
import torch

from t5lab.model import KVCache, build_model


@pytest.fixture
def model(tiny_config):
    return build_model(tiny_config, seed=0).eval()


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
    """In training the output layer and the loss run fused (no logits); loss and every gradient equal the
    plain path's (eval mode: the same numbers, since the test config has no dropout)."""
    model = build_model(tiny_config.replace(tie_embeddings=tied), seed=0)
    ids, labels = _batch(tiny_config)
    labels[0, 3:] = -100
    results = []
    for training in (True, False):
        model.train(training).zero_grad()
        out = model(ids, labels=labels)
        out.loss.backward()
        assert (out.logits is None) == training
        results.append((out.loss.detach(), [p.grad.clone() for p in model.parameters()]))
        assert (model._logits_buffer.nbytes > 0) == training  # kept while training, released in eval
    (loss_fused, grads_fused), (loss_plain, grads_plain) = results
    torch.testing.assert_close(loss_fused, loss_plain)
    for a, b in zip(grads_fused, grads_plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)
    model.train()(ids, labels=labels)
    assert copy.deepcopy(model)._logits_buffer.nbytes == 0  # scratch memory, not state: never copied


@pytest.mark.parametrize(("dtype", "fused"), [(torch.bfloat16, True), (torch.float16, False)])
def test_training_under_autocast_fuses_the_loss_except_in_fp16(model, tiny_config, dtype, fused):
    """bf16 keeps fp32's range; fp16 would flush the fused loss's early-made gradients (GradScaler scales later)."""
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
    model = build_model(tiny_config, seed=0, attention=backend).train()
    out = model(ids, mask, labels=labels)
    out.loss.backward()
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)
    for (name, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
    with pytest.raises(ValueError, match="expected one of"):
        model.set_attention_backend("nope")


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


def test_autocast_and_compile_take_the_plain_paths(tiny_config):
    """Under autocast, batch-1 decoding uses F.linear (autocast caches its weight casts) and no fp32 block copy;
    under torch.compile, training keeps the plain loss (one graph for the compiler to fuse)."""
    model = build_model(tiny_config, seed=0).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.output_logits(torch.randn(1, 1, tiny_config.d_model))
    assert logits.dtype == torch.bfloat16 and model._one_row_output is None
    ids, labels = _batch(tiny_config)
    compiled = torch.compile(model.train(), backend="eager", fullgraph=False)
    out = compiled(ids, labels=labels)
    assert out.logits is not None
    torch.testing.assert_close(out.loss, model(ids, labels=labels).loss)
