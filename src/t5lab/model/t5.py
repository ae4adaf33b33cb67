"""The T5 encoder-decoder: shared embedding → encoder stack → decoder stack → output layer.

One `Block` class serves both stacks (the decoder's has cross-attention). A block receives its
feed-forward module from the builder, so a Switch (mixture-of-experts) layer drops in without the block
knowing. Each stack computes its relative position bias once, adds the padding/causal mask to it, and
hands the sum to every layer.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from t5lab.config import ModelConfig
from t5lab.errors import T5LabError
from t5lab.model.attention import ATTENTION_BACKENDS, Attention, KVCache
from t5lab.model.layers import (
    Dropout,
    FeedForward,
    Linear,
    RelativePositionBias,
    RMSNorm,
    linear,
    linear_in_major,
    one_row_splits,
    row_blocks_in_major,
)
from t5lab.model.loss import LogitsBuffer, linear_cross_entropy, product_dtype


@dataclass
class Seq2SeqOutput:
    """What `T5.forward` returns. `loss` is the token cross-entropy plus any router losses.

    `logits` is None when the loss was computed in training mode with gradients, eagerly: the output layer and
    the loss then run fused (`t5lab.model.loss`; fp32 or bf16, autocast or not) and the [B, T, V] logits never
    exist.
    """

    logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    encoder_hidden: torch.Tensor | None = None
    router: list[Any] = field(default_factory=list)  # per sparse layer, for Switch models


def _mask_bias(mask_BS: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Padding mask (1 keep, 0 drop) → additive bias [B, 1, 1, S] (0 or the dtype's most negative value)."""
    return (1.0 - mask_BS[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class Block(nn.Module):
    """Pre-norm residual block: self-attention, [cross-attention,] feed-forward."""

    def __init__(self, config: ModelConfig, feed_forward: nn.Module, cross_attention: bool) -> None:
        super().__init__()
        self.self_attn_norm = RMSNorm(config.d_model, config.layer_norm_eps)
        self.self_attn = Attention(config)
        if cross_attention:
            self.cross_attn_norm = RMSNorm(config.d_model, config.layer_norm_eps)
            self.cross_attn = Attention(config)
        self.ffn_norm = RMSNorm(config.d_model, config.layer_norm_eps)
        self.ffn = feed_forward
        self.dropout = Dropout(config.dropout)

    def forward(self, x, bias, source=None, source_bias=None, cache=None, layer: int = 0):
        x = x + self.dropout(self.self_attn(self.self_attn_norm(x), bias, cache=cache, layer=layer))
        if source is not None:
            h = self.cross_attn(self.cross_attn_norm(x), source_bias, source, cache=cache, layer=layer)
            x = x + self.dropout(h)
        h, router = self.ffn(self.ffn_norm(x))
        return x + self.dropout(h), router


class Stack(nn.Module):
    """An encoder (bidirectional bias, no cross-attention) or decoder (causal bias, cross-attention)."""

    def __init__(self, config: ModelConfig, decoder: bool, feed_forward_factory) -> None:
        super().__init__()
        self.decoder = decoder
        num_layers = config.num_decoder_layers if decoder else config.num_encoder_layers
        self.relative_bias = RelativePositionBias(config, bidirectional=not decoder)
        self.layers = nn.ModuleList(
            Block(config, feed_forward_factory(i, decoder), cross_attention=decoder) for i in range(num_layers)
        )
        self.final_norm = RMSNorm(config.d_model, config.layer_norm_eps)
        self.dropout = Dropout(config.dropout)

    def self_attention_bias(self, query_length: int, key_length: int, offset: int, dtype: torch.dtype):
        """Relative position bias [1, H, T, S] for queries at offset..offset+T-1, causal mask added in a decoder."""
        bias = self.relative_bias(query_length, key_length, query_offset=offset).to(dtype)
        if self.decoder:
            # Causal: a query at position p sees keys 0..p (the cache holds positions < offset).
            future = torch.ones(query_length, key_length, dtype=torch.bool, device=bias.device).triu(offset + 1)
            bias = bias.masked_fill(future, torch.finfo(dtype).min)
        return bias

    def forward(
        self,
        x_BTD,
        mask_BT=None,
        source_BSD=None,
        source_mask_BS=None,
        cache: KVCache | None = None,
        position_bias: torch.Tensor | None = None,
    ):
        """`position_bias`, if given, replaces `self_attention_bias(...)` for these positions: generation
        computes the table for all positions once and passes one row per step."""
        T = x_BTD.shape[1]
        offset = cache.length if cache is not None else 0
        key_length = offset + T
        bias = position_bias
        if bias is None:
            bias = self.self_attention_bias(T, key_length, offset, x_BTD.dtype)
        if mask_BT is not None:
            bias = bias + _mask_bias(mask_BT, x_BTD.dtype)
        # Cross-attention has no position bias: without padding it needs no bias at all.
        source_bias = None if source_mask_BS is None else _mask_bias(source_mask_BS, x_BTD.dtype)
        x = self.dropout(x_BTD)
        routers = []
        for i, block in enumerate(self.layers):
            x, router = block(x, bias, source_BSD, source_bias, cache, layer=i)
            if router is not None:
                routers.append(router)
        if cache is not None:
            cache.length = key_length
        return self.dropout(self.final_norm(x)), routers


class T5(nn.Module):
    def __init__(self, config: ModelConfig, feed_forward_factory=None) -> None:
        super().__init__()
        self.config = config
        factory = feed_forward_factory or (lambda layer, decoder: FeedForward(config))
        # Uninitialised here (init_weights or a checkpoint fills it): nn.Embedding's own normal_ init would
        # cost seconds on the meta device, where it imports torch._dynamo.
        self.shared = nn.Embedding(config.vocab_size, config.d_model, _weight=torch.empty(config.vocab_size, config.d_model))
        self.encoder = Stack(config, decoder=False, feed_forward_factory=factory)
        self.decoder = Stack(config, decoder=True, feed_forward_factory=factory)
        self.lm_head = None if config.tie_embeddings else Linear(config.d_model, config.vocab_size, bias=False)
        # (weakref to the output weight, its version key, row_blocks_in_major of it): see _one_row_output_blocks.
        self._one_row_output: tuple | None = None
        # The fused loss's logits memory on CPU, kept while training (see t5lab.model.loss).
        self._logits_buffer = LogitsBuffer()

    # ----------------------------------------------------------------------------------------------------
    def encode(self, input_ids_BS: torch.Tensor, attention_mask_BS: torch.Tensor | None = None):
        hidden_BSD, routers = self.encoder(self.shared(input_ids_BS), attention_mask_BS)
        return hidden_BSD, routers

    def decode(
        self,
        decoder_input_ids_BT: torch.Tensor,
        encoder_hidden_BSD: torch.Tensor,
        attention_mask_BS: torch.Tensor | None = None,
        cache: KVCache | None = None,
        position_bias: torch.Tensor | None = None,
    ):
        """Decoder logits [B, T, V] for the given target prefix (one new position per step with a cache).

        `position_bias`: the decoder's self-attention bias for these positions, precomputed (see `Stack.forward`).
        """
        hidden_BTD, routers = self.decoder(
            self.shared(decoder_input_ids_BT),
            source_BSD=encoder_hidden_BSD,
            source_mask_BS=attention_mask_BS,
            cache=cache,
            position_bias=position_bias,
        )
        return self.output_logits(hidden_BTD), routers

    def output_weight(self) -> torch.Tensor | None:
        """The output projection [V, D]: the shared embedding when tied, else `lm_head`'s weight; None when
        `lm_head` is no longer a plain `nn.Linear` (e.g. int8-quantised: it computes its own product)."""
        if self.lm_head is None:
            return self.shared.weight
        return self.lm_head.weight if isinstance(self.lm_head, nn.Linear) else None

    def _output_input(self, hidden_BTD: torch.Tensor) -> torch.Tensor:
        # Tied output embedding: Mesh-TF rescales by d_model**-0.5 (v1.1's untied head is not rescaled).
        return hidden_BTD * self.config.d_model**-0.5 if self.lm_head is None else hidden_BTD

    def output_logits(self, hidden_BTD: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V]."""
        hidden_BTD = self._output_input(hidden_BTD)
        weight_VD = self.output_weight()
        if weight_VD is None:
            return self.lm_head(hidden_BTD)
        B, T, D = hidden_BTD.shape
        if B * T == 1:
            blocks = self._one_row_output_blocks(weight_VD)
            return linear(hidden_BTD, weight_VD) if blocks is None else linear_in_major(hidden_BTD, blocks)
        if B * T <= 16:
            # Decoding steps: CPU BLAS runs the thin product W h^T up to 2.6x faster than h W^T (measured at
            # 8 rows x 32128 x 256); the logits come back as a transposed view.
            return (weight_VD @ hidden_BTD.reshape(B * T, D).T).T.view(B, T, -1)
        return F.linear(hidden_BTD, weight_VD)

    def _one_row_output_blocks(self, weight_VD: torch.Tensor) -> torch.Tensor | None:
        """The output weight as `row_blocks_in_major` for batch-1 decoding on CPU (fp32, no gradients), else None.

        A cache, kept between `generate` calls: the copy costs V x D more memory and is built once (35 ms for
        t5-efficient-tiny, 80 ms for -small on 2 cores); greedy decoding at batch 1 then ran 12% (tiny) and
        2-5% (small) faster per token (interleaved runs in one process), so it pays for itself after ~45
        (tiny) to ~150 (small) tokens. Rebuilt when the weight is another tensor, is updated in place (torch's
        version counter: optimizer steps, `load_state_dict`, `nn.init`) or the thread count changes the blocks; dropped
        when the model goes back to training mode; never pickled or deep-copied. Writes through `.data` are
        the exception: torch does not count them, so after such a write call `model.train()` (then `.eval()`)
        before decoding again.
        """
        if (torch.is_grad_enabled() or torch.compiler.is_compiling() or weight_VD.device.type != "cpu"
                or weight_VD.dtype != torch.float32 or weight_VD.is_inference() or not weight_VD.is_contiguous()
                or torch.is_autocast_enabled("cpu")):
            return None
        version = (weight_VD.data_ptr(), weight_VD._version, one_row_splits(weight_VD.shape[0]))
        cached = self._one_row_output
        if cached is None or cached[0]() is not weight_VD or cached[1] != version:
            cached = self._one_row_output = (weakref.ref(weight_VD), version, row_blocks_in_major(weight_VD))
        return cached[2]

    def train(self, mode: bool = True) -> T5:
        if mode:
            self._one_row_output = None
        else:
            self._logits_buffer.release()
        return super().train(mode)

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_one_row_output": None}  # the logits buffer pickles empty itself

    def shift_right(self, labels_BT: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: decoder inputs are the labels shifted right behind the start token."""
        start = torch.full_like(labels_BT[:, :1], self.config.decoder_start_token_id)
        shifted = torch.cat([start, labels_BT[:, :-1]], dim=1)
        return shifted.masked_fill(shifted == -100, self.config.pad_token_id)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> Seq2SeqOutput:
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("forward needs decoder_input_ids or labels")
            decoder_input_ids = self.shift_right(labels)
        # One embedding lookup for both stacks: its backward then builds one dense [V, D] gradient, not two.
        B, S = input_ids.shape
        embedded_ND = self.shared(torch.cat([input_ids.flatten(), decoder_input_ids.flatten()]))
        encoder_hidden, routers = self.encoder(embedded_ND[: B * S].view(B, S, -1), attention_mask)
        hidden_BTD, decoder_routers = self.decoder(
            embedded_ND[B * S :].view(*decoder_input_ids.shape, -1), source_BSD=encoder_hidden,
            source_mask_BS=attention_mask,
        )
        routers += decoder_routers
        logits = loss = None
        weight_VD = self.output_weight()
        if (labels is not None and weight_VD is not None and self.training and torch.is_grad_enabled()
                and product_dtype(weight_VD) != torch.float16 and not torch.compiler.is_compiling()):
            # Training: the output layer and the loss in one step that never materialises the logits. Eager
            # only: under torch.compile the plain path stays one graph, which the compiler fuses itself. Not
            # in fp16: the fused loss makes the logits' gradients in the forward pass, before a GradScaler
            # scales them up, and fp16 would flush many of them (of order 1 / (tokens x vocab)) to zero.
            loss = linear_cross_entropy(self._output_input(hidden_BTD).flatten(0, 1), weight_VD, labels.flatten(),
                                        self._logits_buffer)
        else:
            logits = self.output_logits(hidden_BTD)
            if labels is not None:
                loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        if loss is not None:
            loss = loss + self.router_loss(routers)
        return Seq2SeqOutput(logits=logits, loss=loss, encoder_hidden=encoder_hidden, router=routers)

    def router_loss(self, routers: list[Any]) -> torch.Tensor | float:
        """Weighted router losses of the sparse layers (0 for a dense model)."""
        return sum((r.loss for r in routers), 0.0)

    # ----------------------------------------------------------------------------------------------------
    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Unique parameters (a tied output embedding counts once)."""
        params = {id(p): p for p in self.parameters()}
        total = sum(p.numel() for p in params.values())
        if exclude_embeddings:
            total -= self.shared.weight.numel() + (self.lm_head.weight.numel() if self.lm_head is not None else 0)
        return total

    def num_active_parameters(self, exclude_embeddings: bool = False) -> int:
        """Parameters one token uses: all of them except, in each Switch layer, the experts it is not sent to."""
        inactive = sum(m.num_inactive_parameters() for m in self.modules() if hasattr(m, "num_inactive_parameters"))
        return self.num_parameters(exclude_embeddings) - inactive

    def set_attention_backend(self, name: str) -> T5:
        """Choose the attention kernel ("eager" is the reference; "sdpa" is PyTorch's fused one)."""
        if name not in ATTENTION_BACKENDS:
            raise ValueError(f"attention backend {name!r}: expected one of {', '.join(ATTENTION_BACKENDS)}")
        for module in self.modules():
            if isinstance(module, Attention):
                module.kernel = ATTENTION_BACKENDS[name]
        return self

    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Mesh-TF / transformers initialisation (the 1/sqrt(d_kv) attention scale is folded in here).

        The untied output layer gets std d_model**-0.5 (Mesh-TF), not transformers' 1.0, which starts
        training at a loss near 110.
        """
        c = self.config
        scale = c.init_scale

        def normal(t: torch.Tensor, std: float) -> None:
            t.normal_(0.0, std * scale, generator=generator)

        normal(self.shared.weight, 1.0)
        if self.lm_head is not None:
            normal(self.lm_head.weight, c.d_model**-0.5)
        for module in self.modules():
            if isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
            elif isinstance(module, RelativePositionBias):
                normal(module.embedding.weight, c.d_model**-0.5)
            elif isinstance(module, Attention):
                normal(module.q.weight, (c.d_model * c.d_kv) ** -0.5)
                normal(module.k.weight, c.d_model**-0.5)
                if module.v is not None:
                    normal(module.v.weight, c.d_model**-0.5)
                normal(module.o.weight, c.inner_dim**-0.5)
            elif isinstance(module, FeedForward):
                for name in ("wi", "wi_0", "wi_1"):
                    if hasattr(module, name):
                        normal(getattr(module, name).weight, c.d_model**-0.5)
                normal(module.wo.weight, c.d_ff**-0.5)
            elif hasattr(module, "init_weights") and module is not self:
                module.init_weights(generator)

    # ----------------------------------------------------------------------------------------------------
    # Conveniences users expect on the model; the code lives in the layers above (generation, interop).
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs):
        """See `t5lab.generate.generate`."""
        from t5lab.generate import generate

        return generate(self, input_ids, attention_mask, **kwargs)

    def save_pretrained(self, path, tokenizer=None) -> None:
        """Write a Hugging Face checkpoint folder; see `t5lab.interop.hf.save_pretrained`."""
        from t5lab.interop.hf import save_pretrained

        save_pretrained(self, path, tokenizer=tokenizer)


def build_model(
    config: ModelConfig,
    *,
    attention: str = "eager",
    seed: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    init: bool = True,
) -> T5:
    """A randomly initialised model for `config` (a Switch config gets its sparse layers)."""
    if not isinstance(config, ModelConfig):
        raise T5LabError(f"build_model: config is a {type(config).__name__}, expected a ModelConfig "
                         f"(for a shape name: build_model(ModelConfig.from_name({config!r})))")
    factory = None
    if config.is_moe:
        from t5lab.model.moe import feed_forward_factory

        factory = feed_forward_factory(config)
    if torch.device(device or "cpu").type != "meta":
        _check_fits_in_memory(config, factory, torch.device(device or "cpu"), dtype or torch.get_default_dtype())
    with torch.device(device or "cpu"):
        model = T5(config, factory)
    if init and torch.device(device or "cpu").type != "meta":
        generator = None
        if seed is not None:
            generator = torch.Generator(device=model.shared.weight.device).manual_seed(seed)
        model.init_weights(generator)
    if dtype is not None:
        model.to(dtype)
    return model.set_attention_backend(attention)


def _check_fits_in_memory(config: ModelConfig, factory: Any, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse up front a model whose parameters alone exceed the device's free memory, naming both, instead
    of letting the allocator try for (say) a terabyte. Counted on the meta device: no memory is used."""
    with torch.device("meta"):
        shape = T5(config, factory)
    need = sum(p.numel() for p in shape.parameters()) * dtype.itemsize
    available = _free_memory(device)
    if available is not None and need > available:
        raise T5LabError(f"model '{config.name}': its parameters need {need:,} bytes ({need / 2**30:,.1f} GiB) "
                         f"in {str(dtype).removeprefix('torch.')}, more than the {available:,} bytes "
                         f"({available / 2**30:,.1f} GiB) available on {device}")


def _free_memory(device: torch.device) -> int | None:
    """Free memory on `device` in bytes (None when unknown)."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.mem_get_info(device)[0]
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None
