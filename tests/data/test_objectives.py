from __future__ import annotations

import numpy as np
import pytest
from fake_tokenizer import FakeTokenizer
from span_inverse import reconstruct

from t5lab.data.objectives import UL2_DENOISERS, PrefixLMDenoiser, SpanDenoiser, build_objective
from t5lab.errors import T5LabError


@pytest.mark.parametrize("inputs_length", [96, 160])
def test_ul2_denoisers_shapes_modes_and_reconstruction(inputs_length: int) -> None:
    tok = FakeTokenizer(num_sentinels=100)
    sentinels = {tok.sentinel_id(i) for i in range(tok.num_sentinels)}
    mixture = build_objective("ul2", tok, inputs_length)
    assert len(mixture.denoisers) == len(UL2_DENOISERS) == 7
    rng = np.random.default_rng(0)
    for (mode, _, _), denoiser in zip(UL2_DENOISERS, mixture.denoisers, strict=True):
        prefix = tok.encode(mode, add_eos=False)
        chunks = rng.integers(3, 400, size=(3, denoiser.tokens_length))
        inputs, targets = denoiser(chunks, rng)
        assert inputs.shape == (3, inputs_length) and targets.shape == (3, denoiser.targets_length)
        assert (inputs[:, : len(prefix)] == prefix).all()
        assert (inputs[:, -1] == tok.eos_id).all() and (targets[:, -1] == tok.eos_id).all()
        for row, chunk in enumerate(chunks.tolist()):
            body = inputs[row, len(prefix) :].tolist()
            if isinstance(denoiser, PrefixLMDenoiser):
                assert body[:-1] + targets[row, :-1].tolist() == chunk
            else:
                assert isinstance(denoiser, SpanDenoiser)
                assert reconstruct(body, targets[row].tolist(), sentinels) == chunk


def test_ul2_mixture_draws_every_denoiser() -> None:
    mixture = build_objective("ul2", FakeTokenizer(), 128)
    rng = np.random.default_rng(0)
    drawn = {id(mixture.draw(rng)) for _ in range(200)}
    assert drawn == {id(d) for d in mixture.denoisers}


def test_ul2_needs_enough_sentinels_at_t5_length() -> None:
    # density 0.5, mean span 3 at inputs 512 makes 128 spans: 100 sentinels are not enough
    with pytest.raises(T5LabError, match=r"ul2.*sentinels"):
        build_objective("ul2", FakeTokenizer(num_sentinels=100), 512)
    assert build_objective("ul2", FakeTokenizer(num_sentinels=128), 512).denoisers[0].inputs_length == 512


def test_span_corruption_objective_is_t5() -> None:
    mixture = build_objective("span_corruption", FakeTokenizer(), 512)
    (denoiser,) = mixture.denoisers
    assert (denoiser.tokens_length, denoiser.inputs_length, denoiser.targets_length) == (568, 512, 114)
    with pytest.raises(T5LabError, match="objective"):
        build_objective("mlm", FakeTokenizer(), 512)  # type: ignore[arg-type]
