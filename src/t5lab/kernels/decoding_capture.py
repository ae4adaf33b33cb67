"""Greedy and sampled decoding with a static KV cache, replayed as one CUDA graph per step.

At batch 1-32 a decoding step of a base-sized T5 is a few hundred small kernels, and the GPU waits on Python to
launch them. A CUDA graph launches the whole step at once, but it replays fixed shapes and addresses, where the
eager path's cache grows by one position per step. So here:

* the self-attention cache (`StaticKVCache`) writes a step's keys/values at a position held in a device tensor
  and attends over its whole preallocated length; the keys not written yet are zeros, hidden by the causal
  mask (row t of the decoder's bias table, copied into a fixed buffer before each step);
* the step reads its token, position and bias row from fixed buffers and writes its logits into a fixed
  output, so the graph captured at the second step (the first one computes the cross-attention keys/values
  once, outside any graph) is replayed for every later one;
* the token choice (greedy, sampling, EOS bookkeeping) is `t5lab.generate`'s own, outside the graph.

`StaticDecoderSteps` has the interface of `t5lab.generate.DecoderSteps` (called with the previous tokens,
returns the next logits), so that generation opts in by building it instead, where `supports_capture` says so:
greedy and sampling of dense models on CUDA; beam search (it reorders the cache), Switch (MoE) models (their
routing reads sizes on the host) and CPU keep `DecoderSteps`. The static-cache algorithm runs anywhere
(`capture=False`, how the CPU tests check token equality with `t5lab.generate.generate`); the graph only on
CUDA. UNMEASURED: no GPU was at hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from t5lab.model import T5, KVCache
from t5lab.model.attention import AttentionBias, bias_dtype


@dataclass
class StaticKVCache(KVCache):
    """A KVCache of fixed shapes: `append` writes at `position` (a [1] device tensor the caller sets before each
    step) and returns the whole buffers, so that a step's shapes never change."""

    position: torch.Tensor = field(default_factory=lambda: torch.zeros(1, dtype=torch.long))

    @classmethod
    def empty(cls, num_layers: int, max_length: int, device: torch.device | None = None) -> StaticKVCache:
        none: list[torch.Tensor | None] = [None] * num_layers
        position = torch.zeros(1, dtype=torch.long, device=device)
        return cls(max_length, 0, list(none), list(none), list(none), list(none), position=position)

    def append(self, layer: int, k_BGTK: torch.Tensor, v_BGTK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.self_k[layer], self.self_v[layer]
        if keys is None or values is None:
            B, G, _, K = k_BGTK.shape
            # Zeros, not empty: unwritten keys are masked, but 0 * NaN from stale memory would still be NaN.
            keys = self.self_k[layer] = k_BGTK.new_zeros(B, G, self.max_length, K)
            values = self.self_v[layer] = v_BGTK.new_zeros(B, G, self.max_length, K)
        keys.index_copy_(2, self.position, k_BGTK)
        values.index_copy_(2, self.position, v_BGTK)
        return keys, values


class StaticDecoderSteps:
    """`t5lab.generate.DecoderSteps` with a static cache: the decoder one position at a time, every step the
    same shapes and buffers; on CUDA (`capture`) steps after the first replay one captured graph."""

    def __init__(self, model: T5, hidden_BSD: torch.Tensor, mask_BS: torch.Tensor | None, max_length: int,
                 capture: bool) -> None:
        self.model = model
        self.hidden_BSD = hidden_BSD
        self.mask_BS = mask_BS
        device = hidden_BSD.device
        self.cache = StaticKVCache.empty(len(model.decoder.layers), max_length, device)
        # Relative bias + causal mask for all positions, once (as DecoderSteps): step t uses row t, all keys.
        dtype = bias_dtype(hidden_BSD.dtype, device.type)
        bias_table = model.decoder.self_attention_bias().dense(max_length, max_length, dtype)
        assert bias_table is not None  # a decoder's bias is causal, so never empty
        self.bias_table = bias_table
        self.bias_row = self.bias_table[:, :, :1].clone()
        # No table on purpose: a kernel that builds the bias itself would bake one step's offset into the graph.
        self.step_bias = AttentionBias(None, dense_memo={(1, max_length, dtype): self.bias_row})
        self.tokens_B = torch.zeros(hidden_BSD.shape[0], dtype=torch.long, device=device)
        self.capture = capture
        self.graph: torch.cuda.CUDAGraph | None = None
        self.logits_BV: torch.Tensor | None = None
        self.step = 0
        config = model.config
        self.start_id, self.pad_id = config.decoder_start_token_id, config.pad_token_id

    def _forward(self) -> torch.Tensor:
        logits_B1V, _ = self.model.decode(
            self.tokens_B[:, None], self.hidden_BSD, self.mask_BS, self.cache, bias=self.step_bias
        )
        return logits_B1V[:, 0].float()

    def _capture(self) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        """The graph of one step and the logits tensor its replays overwrite."""
        # Warm-up on a side stream before capturing (CUDA's rule for graph capture). A step is idempotent for
        # its token and position (it rewrites the same cache slot), so running it again changes nothing.
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self._forward()
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            logits_BV = self._forward()
        return graph, logits_BV

    def __call__(self, tokens_B: torch.Tensor) -> torch.Tensor:
        """Logits [B, V] (fp32) for the next position, given the tokens chosen at the previous step. The
        returned tensor is overwritten by the next step when captured."""
        t = self.step
        self.step += 1
        self.tokens_B.copy_(tokens_B)
        self.cache.position.fill_(t)
        self.bias_row.copy_(self.bias_table[:, :, t : t + 1])
        if not self.capture or t == 0:  # step 0 computes the cross-attention keys/values, outside any graph
            return self._forward()
        if self.graph is None or self.logits_BV is None:
            self.graph, self.logits_BV = self._capture()
        self.graph.replay()
        return self.logits_BV

    def start_tokens(self, rows: int) -> torch.Tensor:
        return torch.full((rows,), self.start_id, dtype=torch.long, device=self.hidden_BSD.device)


def supports_capture(model: T5, device: torch.device, num_beams: int) -> bool:
    """Greedy or sampled decoding of a dense model on CUDA; anything else keeps the eager `DecoderSteps`."""
    return device.type == "cuda" and num_beams == 1 and not model.config.is_moe
