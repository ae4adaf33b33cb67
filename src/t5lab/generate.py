"""Text generation for T5: greedy, sampling (temperature / top-k / top-p) and beam search, with a KV cache.

The encoder runs once; the decoder then takes one position per step. Its cross-attention keys/values are
computed once (by the cache), its self-attention keys/values go into preallocated buffers, and its
position bias (relative bias + causal mask) is computed once for every position and sliced per step, so a
step does only the work of one new token. Rows stop at EOS and are padded afterwards; the loop ends when
every row has stopped. Beam search follows transformers' semantics (length penalty, `early_stopping`
True / False / "never", two candidates per beam) so that its outputs equal `transformers`' `generate`.

Shape letters as in `t5lab.model`; N beams, R returned sequences per input.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from t5lab.errors import T5LabError, field_checker
from t5lab.kernels.cpu_linear import linear, linear_in_major, one_row_splits, row_blocks_in_major
from t5lab.kernels.decoding_capture import StaticDecoderSteps, supports_capture
from t5lab.model import T5, KVCache
from t5lab.model.attention import bias_dtype

_NEG = -1.0e9  # transformers' "never choose this" score in beam search; kept equal for identical tie-breaking


@dataclass(frozen=True)
class GenerationConfig:
    """How to pick tokens. Defaults are transformers' (greedy, `early_stopping=False`).

    `min_new_tokens` forbids EOS before that many tokens; `eos_token_id` None means the model config's.
    `repetition_penalty` (> 1 discourages) divides a positive score and multiplies a negative one of every
    token already in the decoder sequence (the start token included), and `no_repeat_ngram_size` n (0: off)
    forbids any token that would repeat an n-gram of that sequence: both as transformers names and computes
    them, applied to the logits (greedy, sampling) or log-probabilities (beam search) before the EOS floor.
    Sampling applies temperature, then top-k (0: off), then top-p (1.0: off), as transformers does.
    Beam search with `do_sample` samples the candidates instead of taking the best ones (beam sampling).
    """

    max_new_tokens: int = 64
    min_new_tokens: int = 0
    num_beams: int = 1
    num_return_sequences: int = 1
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    length_penalty: float = 1.0
    early_stopping: bool | Literal["never"] = False
    eos_token_id: int | None = None
    # Longer inputs are refused, never truncated: the encoder's attention scores grow with its square.
    max_input_length: int = 4096
    # CUDA: a static KV cache whose steps after the first replay one captured CUDA graph (greedy and sampling of
    # dense models; anything else decodes eagerly). Opt-in until measured on a GPU (t5lab.kernels.decoding_capture).
    cuda_graph: bool = False
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0

    def __post_init__(self) -> None:
        need = field_checker(self, "generation option")

        need(self.max_new_tokens >= 1, "max_new_tokens", "at least 1")
        need(0 <= self.min_new_tokens <= self.max_new_tokens, "min_new_tokens", "between 0 and max_new_tokens")
        need(self.num_beams >= 1, "num_beams", "at least 1")
        need(self.temperature > 0, "temperature", "a positive number")
        need(self.top_k >= 0, "top_k", "0 (off) or a positive number of tokens")
        need(0 < self.top_p <= 1, "top_p", "a probability in (0, 1]")
        need(self.early_stopping in (True, False, "never"), "early_stopping", "True, False or 'never'")
        need(self.max_input_length >= 1, "max_input_length", "at least 1 token")
        need(self.repetition_penalty > 0, "repetition_penalty", "a positive number (1.0: off)")
        need(self.no_repeat_ngram_size >= 0, "no_repeat_ngram_size", "0 (off) or a positive n-gram length")
        if self.num_beams > 1:
            need(1 <= self.num_return_sequences <= self.num_beams, "num_return_sequences",
                 f"between 1 and num_beams={self.num_beams}")
        else:
            need(self.num_return_sequences == 1 or self.do_sample, "num_return_sequences",
                 "1 for greedy decoding (use sampling or beam search for several)")
            need(self.num_return_sequences >= 1, "num_return_sequences", "at least 1")


@torch.inference_mode()
def generate(
    model: T5,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    config: GenerationConfig | None = None,
    generator: torch.Generator | None = None,
    streamer: Callable[[torch.Tensor], None] | None = None,
    **options: Any,
) -> torch.Tensor:
    """Generate decoder tokens for a batch of (padded) inputs.

    Args:
        model: the T5 model (put in eval mode by the caller; dropout would make outputs random).
        input_ids: [B, S] token ids, padded on the right.
        attention_mask: [B, S], 1 for real tokens and 0 for padding (None: no padding).
        config: a `GenerationConfig`; keyword `options` override its fields
            (`max_new_tokens=32, num_beams=4, ...`).
        generator: random source for sampling (seed it for reproducible samples).
        streamer: called after every step of greedy decoding or sampling with that step's tokens [B]
            (`pad_token_id` for rows already finished), e.g. to print text as it is produced.

    Returns:
        [B * R, T] token ids without the decoder start token, T <= max_new_tokens; after a row's EOS the
        rest is `pad_token_id`. R is `num_return_sequences` (rows of one input are adjacent).
    """
    try:
        config = dataclasses.replace(config or GenerationConfig(), **options)
    except TypeError as e:
        known = ", ".join(f.name for f in dataclasses.fields(GenerationConfig))
        raise T5LabError(f"generate: {e} (known options: {known})") from None
    _check_inputs(model, input_ids, attention_mask, config)
    if config.eos_token_id is None:
        config = dataclasses.replace(config, eos_token_id=model.config.eos_token_id)
    if streamer is not None and config.num_beams > 1:
        raise T5LabError("generate: a streamer needs greedy decoding or sampling (beams change earlier tokens)")
    if attention_mask is not None and bool(attention_mask.all()):
        attention_mask = None  # no padding: skip adding a zero mask in every attention layer at every step
    hidden_BSD, _ = model.encode(input_ids, attention_mask)
    # Every decoder row needs its input's encoder output: beams and returned samples are adjacent copies.
    copies = config.num_beams if config.num_beams > 1 else config.num_return_sequences
    if copies > 1:
        hidden_BSD = hidden_BSD.repeat_interleave(copies, dim=0)
        attention_mask = None if attention_mask is None else attention_mask.repeat_interleave(copies, dim=0)
    if config.num_beams > 1:
        return _beam_search(DecoderSteps(model, hidden_BSD, attention_mask, config.max_new_tokens), config, generator)
    steps: DecoderSteps | StaticDecoderSteps
    if config.cuda_graph and supports_capture(model, hidden_BSD.device, config.num_beams):
        steps = StaticDecoderSteps(model, hidden_BSD, attention_mask, config.max_new_tokens, capture=True)
    else:
        steps = DecoderSteps(model, hidden_BSD, attention_mask, config.max_new_tokens)
    return _greedy_or_sample(steps, config, generator, streamer)


def _check_inputs(
    model: T5, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config: GenerationConfig
) -> None:
    """Host-side checks of `generate`'s arguments (the model's forward stays free of them)."""
    if not isinstance(model, T5):
        raise T5LabError(f"generate: model is a {type(model).__name__}; expected a t5lab T5 model")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
        raise T5LabError("generate: input_ids must be an integer tensor of token ids [batch, length]")
    if input_ids.dim() != 2:
        raise T5LabError(f"generate: input_ids has shape {tuple(input_ids.shape)}; expected [batch, length]")
    if input_ids.numel() == 0:
        raise T5LabError(f"generate: input_ids has shape {tuple(input_ids.shape)}; expected at least one token")
    if attention_mask is not None and attention_mask.shape != input_ids.shape:
        raise T5LabError(
            f"generate: attention_mask has shape {tuple(attention_mask.shape)}; expected {tuple(input_ids.shape)}"
        )
    if input_ids.shape[1] > config.max_input_length:
        raise T5LabError(f"generate: the input is {input_ids.shape[1]} tokens long, more than max_input_length="
                         f"{config.max_input_length} (never truncated: shorten it or raise the limit)")
    vocab = model.config.vocab_size
    low, high = (int(v) for v in torch.aminmax(input_ids))  # one sync, before any work
    if low < 0 or high >= vocab:
        raise T5LabError(f"generate: input_ids holds token id {low if low < 0 else high}, outside the model's "
                         f"vocabulary [0, {vocab})")
    for field, value in (("eos_token_id", config.eos_token_id),
                         ("decoder_start_token_id", model.config.decoder_start_token_id)):
        if value is not None and not 0 <= value < vocab:
            raise T5LabError(f"generate: {field}={value} is outside the model's vocabulary [0, {vocab})")


class DecoderSteps:
    """The decoder run one position at a time over a fixed encoder output, with its cache and bias table."""

    def __init__(self, model: T5, hidden_BSD: torch.Tensor, mask_BS: torch.Tensor | None, max_length: int) -> None:
        self.model = model
        self.hidden_BSD = hidden_BSD
        self.mask_BS = mask_BS
        self.cache = KVCache.empty(len(model.decoder.layers), max_length)
        # Relative bias + causal mask for all positions, once: step t uses row t, keys 0..t.
        self.bias_dtype = bias_dtype(hidden_BSD.dtype, hidden_BSD.device.type)
        bias_table = model.decoder.self_attention_bias().dense(max_length, max_length, self.bias_dtype)
        assert bias_table is not None  # a decoder's bias is causal, so never empty
        self.bias_table = bias_table
        self.output = OutputLayer(model)
        config = model.config
        self.start_id, self.pad_id = config.decoder_start_token_id, config.pad_token_id

    def __call__(self, tokens_B: torch.Tensor) -> torch.Tensor:
        """Logits [B, V] (fp32) for the next position, given the tokens chosen at the previous step."""
        t = self.cache.length
        bias = self.model.decoder.self_attention_bias(query_offset=t)
        # What the eager kernel asks for at this step, precomputed (a Triton kernel reads the table instead).
        bias.dense_memo[(1, t + 1, self.bias_dtype)] = self.bias_table[:, :, t : t + 1, : t + 1]
        hidden_B1D, _ = self.model.decode_hidden(tokens_B[:, None], self.hidden_BSD, self.mask_BS, self.cache, bias)
        return self.output(hidden_B1D)[:, 0].float()

    def start_tokens(self, rows: int) -> torch.Tensor:
        return torch.full((rows,), self.start_id, dtype=torch.long, device=self.hidden_BSD.device)


# (weakref to the output weight, its version key, row_blocks_in_major of it): see OutputLayer.one_row_blocks.
_one_row_blocks: tuple | None = None


class OutputLayer:
    """The model's output layer for decoding steps (a few rows at a time), in the products CPU BLAS runs fastest."""

    def __init__(self, model: T5) -> None:
        self.model = model
        self.weight_VD = model.output_weight()

    def __call__(self, hidden_BTD: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V] (equal to `model.output_logits` up to rounding)."""
        weight_VD = self.weight_VD
        if weight_VD is None or weight_VD.device.type != "cpu":
            return self.model.output_logits(hidden_BTD)
        hidden_BTD = self.model.output_input(hidden_BTD)
        B, T, D = hidden_BTD.shape
        if B * T == 1:
            blocks = self.one_row_blocks(weight_VD)
            return linear(hidden_BTD, weight_VD) if blocks is None else linear_in_major(hidden_BTD, blocks)
        if B * T <= 16:
            # CPU BLAS runs the thin product W h^T up to 2.6x faster than h W^T (measured at 8 rows x 32128 x
            # 256); the logits come back as a transposed view.
            return (weight_VD @ hidden_BTD.reshape(B * T, D).T).T.view(B, T, -1)
        return F.linear(hidden_BTD, weight_VD)

    @staticmethod
    def one_row_blocks(weight_VD: torch.Tensor) -> torch.Tensor | None:
        """The output weight as `row_blocks_in_major` for batch-1 decoding on CPU (fp32), else None.

        Cached between `generate` calls (one weight at a time): the copy costs V x D more memory and is built
        once (35 ms for t5-efficient-tiny, 80 ms for -small on 2 cores); greedy decoding at batch 1 then ran
        12% (tiny) and 2-5% (small) faster per token (interleaved runs in one process), so it pays for itself
        after ~45 (tiny) to ~150 (small) tokens. Rebuilt when the weight is updated in place (torch's version
        counter: optimizer steps, `load_state_dict`, `nn.init`), is another tensor or the thread count changes
        the blocks. Writes through `.data` are not counted by torch: after one, call `clear_output_cache()`.
        """
        if (torch.compiler.is_compiling() or weight_VD.dtype != torch.float32 or weight_VD.is_inference()
                or not weight_VD.is_contiguous() or torch.is_autocast_enabled("cpu")):
            return None
        global _one_row_blocks
        version = (weight_VD.data_ptr(), weight_VD._version, one_row_splits(weight_VD.shape[0]))
        cached = _one_row_blocks
        if cached is None or cached[0]() is not weight_VD or cached[1] != version:
            cached = _one_row_blocks = (weakref.ref(weight_VD), version, row_blocks_in_major(weight_VD))
        return cached[2]


def clear_output_cache() -> None:
    """Forget the batch-1 output-layer copy kept between `generate` calls (e.g. after a write through `.data`)."""
    global _one_row_blocks
    _one_row_blocks = None


def _filter_logits(logits_BV: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """Temperature, then top-k, then top-p (nucleus) filtering, in transformers' order."""
    if config.temperature != 1.0:
        logits_BV = logits_BV / config.temperature
    if config.top_k > 0:
        kth_B1 = logits_BV.topk(min(config.top_k, logits_BV.shape[-1])).values[:, -1:]
        logits_BV = logits_BV.masked_fill(logits_BV < kth_B1, -float("inf"))
    if config.top_p < 1.0:
        sorted_BV, order_BV = logits_BV.sort(dim=-1, descending=True)
        probs_BV = sorted_BV.softmax(-1)
        # Drop a token when the more probable ones already hold top_p of the mass (the best one always stays).
        drop_sorted_BV = probs_BV.cumsum(-1) - probs_BV >= config.top_p
        drop_BV = drop_sorted_BV.scatter(-1, order_BV, drop_sorted_BV)
        logits_BV = logits_BV.masked_fill(drop_BV, -float("inf"))
    return logits_BV


def _penalise_repeats(scores_RV: torch.Tensor, history_RL: torch.Tensor, config: GenerationConfig) -> torch.Tensor:
    """transformers' RepetitionPenaltyLogitsProcessor then NoRepeatNGramLogitsProcessor, for rows whose decoder
    sequences so far (start token first) are `history_RL`."""
    if config.repetition_penalty != 1.0:
        seen_RV = torch.zeros_like(scores_RV, dtype=torch.bool).scatter_(1, history_RL, True)
        penalised_RV = torch.where(scores_RV < 0, scores_RV * config.repetition_penalty,
                                   scores_RV / config.repetition_penalty)
        scores_RV = torch.where(seen_RV, penalised_RV, scores_RV)
    n, L = config.no_repeat_ngram_size, history_RL.shape[1]
    if n > 0 and n <= L:
        grams_RGn = history_RL.unfold(1, n, 1)  # every n-gram so far
        # An n-gram whose first n-1 tokens are the last n-1 of the sequence bans its last token.
        repeats_RG = (grams_RGn[:, :, :-1] == history_RL[:, None, L - n + 1 :]).all(-1)
        banned_RV = torch.zeros_like(scores_RV).scatter_add_(1, grams_RGn[:, :, -1], repeats_RG.to(scores_RV.dtype))
        scores_RV = scores_RV.masked_fill(banned_RV > 0, -float("inf"))
    return scores_RV


def _greedy_or_sample(
    steps: DecoderSteps | StaticDecoderSteps,
    config: GenerationConfig,
    generator: torch.Generator | None,
    streamer: Callable[[torch.Tensor], None] | None = None,
) -> torch.Tensor:
    B = steps.hidden_BSD.shape[0]
    eos = config.eos_token_id
    assert eos is not None  # `generate` fills it in from the model config
    out_BT = torch.full((B, config.max_new_tokens), steps.pad_id, dtype=torch.long, device=steps.hidden_BSD.device)
    finished_B = torch.zeros(B, dtype=torch.bool, device=out_BT.device)
    tokens_B = steps.start_tokens(B)
    penalise = config.repetition_penalty != 1.0 or config.no_repeat_ngram_size > 0
    for t in range(config.max_new_tokens):
        logits_BV = steps(tokens_B)
        if penalise:
            logits_BV = _penalise_repeats(logits_BV, torch.cat([steps.start_tokens(B)[:, None], out_BT[:, :t]], 1), config)
        if t < config.min_new_tokens:
            logits_BV[:, eos] = -float("inf")
        if config.do_sample:
            probs_BV = _filter_logits(logits_BV, config).softmax(-1)
            tokens_B = torch.multinomial(probs_BV, 1, generator=generator)[:, 0]
        else:
            tokens_B = logits_BV.argmax(-1)
        tokens_B = tokens_B.masked_fill(finished_B, steps.pad_id)
        out_BT[:, t] = tokens_B
        if streamer is not None:
            streamer(tokens_B)
        finished_B |= tokens_B == eos
        if t >= config.min_new_tokens and bool(finished_B.all()):  # the one host sync per step
            return out_BT[:, : t + 1]
    return out_BT


def _gather(x_BN: torch.Tensor, index_BM: torch.Tensor) -> torch.Tensor:
    """Pick entries along dim 1 per batch row (x may have trailing dims)."""
    index = index_BM.view(*index_BM.shape, *([1] * (x_BN.dim() - 2))).expand(-1, -1, *x_BN.shape[2:])
    return x_BN.gather(1, index)


def _beam_search(steps: DecoderSteps, config: GenerationConfig, generator: torch.Generator | None) -> torch.Tensor:
    """transformers' beam search: keep the N best running beams; collect finished ones, scored with a length penalty.

    Each step takes the 2N best (or sampled) continuations of all beams of an input, so that N of them
    can go on even if the best N end here. Of those, the ones among the first N that end (EOS or max
    length) enter the input's pool of N finished hypotheses, scored log p / length**length_penalty; the
    best N that do not end keep running. An input is done when no running beam can beat its worst
    finished one (transformers' heuristic, which depends on `early_stopping`), or, with
    `early_stopping=True`, as soon as it has N finished hypotheses.
    """
    N, M, eos, lp = config.num_beams, config.max_new_tokens, config.eos_token_id, config.length_penalty
    assert eos is not None  # `generate` fills it in from the model config
    B = steps.hidden_BSD.shape[0] // N
    device = steps.hidden_BSD.device
    running_BNT = torch.full((B, N, M), steps.pad_id, dtype=torch.long, device=device)
    running_scores_BN = torch.zeros(B, N, device=device)
    running_scores_BN[:, 1:] = _NEG  # all beams start equal: let only the first one propose at step 0
    done_BNT = running_BNT.clone()
    done_scores_BN = torch.full((B, N), _NEG, device=device)
    done_BN = torch.zeros(B, N, dtype=torch.bool, device=device)
    improvable_B1 = torch.ones(B, 1, dtype=torch.bool, device=device)
    first_n_2N = torch.arange(2 * N, device=device) < N
    row_offset_B1 = torch.arange(B, device=device)[:, None] * N
    tokens = steps.start_tokens(B * N)
    penalise = config.repetition_penalty != 1.0 or config.no_repeat_ngram_size > 0
    for t in range(M):
        log_probs = F.log_softmax(steps(tokens), dim=-1)
        if penalise:
            history = torch.cat([steps.start_tokens(B * N)[:, None], running_BNT[:, :, :t].reshape(B * N, t)], 1)
            log_probs = _penalise_repeats(log_probs, history, config)
        if t < config.min_new_tokens:
            log_probs[:, eos] = -float("inf")
        if config.do_sample:
            log_probs = _filter_logits(log_probs, config)
        V = log_probs.shape[-1]
        total_BNV = log_probs.view(B, N, V) + running_scores_BN[:, :, None]
        total_BX = total_BNV.view(B, N * V)
        if config.do_sample:
            pick_B2N = torch.multinomial(total_BX.softmax(-1), 2 * N, generator=generator)
            cand_scores_B2N = total_BX.gather(1, pick_B2N)
        else:
            cand_scores_B2N, pick_B2N = total_BX.topk(2 * N)
        parent_B2N, token_B2N = pick_B2N // V, pick_B2N % V
        cand_B2NT = _gather(running_BNT, parent_B2N)
        cand_B2NT[:, :, t] = token_B2N
        ends_B2N = (token_B2N == eos) | (t + 1 == M)

        # Finished candidates (among the first N) join the pool if they beat its worst member.
        # Sums with _NEG, not masking, as transformers does, so that ties break the same way.
        new_scores_B2N = cand_scores_B2N / (t + 1) ** lp
        pool_full_B1 = done_BN.all(1, keepdim=True) & (config.early_stopping is True)
        new_scores_B2N = new_scores_B2N + pool_full_B1.float() * _NEG + (~improvable_B1).float() * _NEG
        joins_B2N = ends_B2N & first_n_2N
        new_scores_B2N = new_scores_B2N + (~joins_B2N).float() * _NEG
        merged_scores = torch.cat([done_scores_BN, new_scores_B2N], 1)
        best_BN = merged_scores.topk(N).indices
        done_scores_BN = merged_scores.gather(1, best_BN)
        done_BNT = _gather(torch.cat([done_BNT, cand_B2NT], 1), best_BN)
        done_BN = torch.cat([done_BN, joins_B2N], 1).gather(1, best_BN)

        # The N best candidates that did not end keep running.
        alive_scores_B2N = cand_scores_B2N + ends_B2N.float() * _NEG
        keep_BN = alive_scores_B2N.topk(N).indices
        running_BNT = _gather(cand_B2NT, keep_BN)
        running_scores_BN = alive_scores_B2N.gather(1, keep_BN)

        # Can a running beam still beat the worst finished one? (transformers' heuristic)
        length = M if config.early_stopping == "never" and lp > 0 else t + 1
        best_possible_B1 = running_scores_BN[:, :1] / length**lp
        worst_BN = torch.where(done_BN, done_scores_BN.min(1, keepdim=True).values, _NEG)
        improvable_B1 &= (best_possible_B1 > worst_BN).any(1, keepdim=True)
        stop = (
            not bool(improvable_B1.any())
            or (config.early_stopping is True and bool(done_BN.all()))
            or bool(ends_B2N.all())
        )
        if stop:
            break
        steps.cache.reorder((parent_B2N.gather(1, keep_BN) + row_offset_B1).view(-1), cross=False)
        tokens = running_BNT[:, :, t].reshape(-1)

    best_BRT = done_BNT[:, : config.num_return_sequences]
    # Crop to the longest returned hypothesis: its EOS (or the last step taken) ends it.
    is_eos = best_BRT == eos
    lengths = torch.where(is_eos.any(-1), is_eos.int().argmax(-1) + 1, t + 1)
    return best_BRT[:, :, : int(lengths.max())].reshape(B * config.num_return_sequences, -1)


def quantize_int8(model: T5) -> nn.Module:
    """CPU inference with int8 dynamic quantisation of every `nn.Linear` (weights int8, activations per batch).

    Uses `torch.ao.quantization.quantize_dynamic`: deprecated in favour of torchao but still in torch 2.13
    (its warnings are silenced here). torchao 0.18's eager int8 path (`Int8DynamicActivationInt8WeightConfig`)
    was 3x slower still without torch.compile, so it is not used. It pays for large row counts (prefill,
    big batches: about 2x on a 512-2048-512 MLP with 1,024 rows) but not for batch-1 decoding, where fp32 was
    faster on 2 CPU cores. The tied output projection (`F.linear` with the shared embedding) stays fp32.
    Returns a quantised copy; the model given is not changed.
    """
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError:  # removed in a later torch
        raise T5LabError("int8 quantisation needs torch.ao.quantization.quantize_dynamic, absent in this torch") from None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        # quantize_dynamic converts exact nn.Linear only: quantise the plain model, before `t5lab.kernels.apply`.
        return quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)
