"""The T5 encoder-decoder: shared embedding → encoder stack → decoder stack → output layer.

One `Block` class serves both stacks (the decoder's has cross-attention). A block receives its
feed-forward module from the builder, so a Switch (mixture-of-experts) layer drops in without the block
knowing. Each stack builds one `AttentionBias` per forward (relative-bias table, padding, causal flag) and
hands it to every layer; cross-attention gets one without a table. Faster kernels, fused losses and other
speed work are applied from outside by `t5lab.kernels.apply`; this file is the reference.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from t5lab.config import ModelConfig
from t5lab.device import check_free_memory
from t5lab.errors import T5LabError
from t5lab.model.attention import Attention, AttentionBias, KVCache, bias_dtype
from t5lab.model.layers import FeedForward, RelativePositionBias, RMSNorm, clamp_fp16

# output_loss(hidden_ND, weight_VD or None, labels_N) -> mean token loss, or None where it does not apply.
OutputLoss = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], torch.Tensor | None]


@dataclass
class Seq2SeqOutput:
    """What `T5.forward` returns. `loss` is the token cross-entropy plus any router losses.

    `logits` is None when a backend's fused output layer + loss computed the training loss (`T5.output_loss`):
    the [B, T, V] logits then never exist.
    """

    logits: torch.Tensor | None
    loss: torch.Tensor | None = None
    encoder_hidden: torch.Tensor | None = None
    router: list[Any] = field(default_factory=list)  # per sparse layer, for Switch models


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
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x, bias: AttentionBias, source=None, source_bias: AttentionBias | None = None, cache=None,
                layer: int = 0):
        x = clamp_fp16(x + self.dropout(self.self_attn(self.self_attn_norm(x), bias, cache=cache, layer=layer)))
        if source is not None:
            h = self.cross_attn(self.cross_attn_norm(x), source_bias, source, cache=cache, layer=layer)
            x = clamp_fp16(x + self.dropout(h))
        h, router = self.ffn(self.ffn_norm(x))
        return clamp_fp16(x + self.dropout(h)), router


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
        self.dropout = nn.Dropout(config.dropout)

    def self_attention_bias(self, query_offset: int = 0, mask_BS: torch.Tensor | None = None) -> AttentionBias:
        """The self-attention bias of queries from `query_offset` on: relative position, causal in a decoder."""
        rb = self.relative_bias
        return AttentionBias(rb.embedding.weight, bidirectional=rb.bidirectional, num_buckets=rb.num_buckets,
                             max_distance=rb.max_distance, query_offset=query_offset, key_padding_mask_BS=mask_BS,
                             causal=self.decoder)

    def forward(self, x_BTD, mask_BT=None, source_BSD=None, source_mask_BS=None, cache: KVCache | None = None,
                bias: AttentionBias | None = None):
        """`bias`, if given, replaces `self_attention_bias(...)` for these positions (generation passes one
        whose dense form is precomputed for all steps)."""
        offset = cache.length if cache is not None else 0
        if bias is None:
            bias = self.self_attention_bias(offset, mask_BT)
        source_bias = AttentionBias(None, key_padding_mask_BS=source_mask_BS)  # cross-attention: padding only
        first_block = cast(Block, self.layers[0])  # nn.ModuleList indexes as a plain Module
        if cache is None and getattr(first_block.self_attn.kernel, "uses_dense_bias", True):
            # Dense forms built here, outside the blocks: a block recomputed under activation checkpointing then
            # finds the tensors its first run used instead of building (and saving for backward) fewer of its own.
            dtype = bias_dtype(x_BTD.dtype, x_BTD.device.type)
            bias.dense(x_BTD.shape[1], x_BTD.shape[1], dtype)
            if source_BSD is not None:
                source_bias.dense(x_BTD.shape[1], source_BSD.shape[1], dtype)
        x = self.dropout(x_BTD)
        routers = []
        for i, block in enumerate(self.layers):
            x, router = block(x, bias, source_BSD, source_bias, cache, layer=i)
            if router is not None:
                routers.append(router)
        if cache is not None:
            cache.length = offset + x_BTD.shape[1]
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
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        # The training loss's seam: a backend (t5lab.kernels) may set a fused output layer + loss here.
        self.output_loss: OutputLoss | None = None

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
        bias: AttentionBias | None = None,
    ):
        """Decoder logits [B, T, V] for the given target prefix (one new position per step with a cache)."""
        hidden_BTD, routers = self.decode_hidden(decoder_input_ids_BT, encoder_hidden_BSD, attention_mask_BS,
                                                 cache, bias)
        return self.output_logits(hidden_BTD), routers

    def decode_hidden(self, decoder_input_ids_BT, encoder_hidden_BSD, attention_mask_BS=None, cache=None, bias=None):
        """The decoder's final hidden states [B, T, D] (what `decode` projects to logits)."""
        return self.decoder(self.shared(decoder_input_ids_BT), source_BSD=encoder_hidden_BSD,
                            source_mask_BS=attention_mask_BS, cache=cache, bias=bias)

    def output_weight(self) -> torch.Tensor | None:
        """The output projection [V, D]: the shared embedding when tied, else `lm_head`'s weight; None when
        `lm_head` is no longer a plain `nn.Linear` (e.g. int8-quantised: it computes its own product)."""
        if self.lm_head is None:
            return self.shared.weight
        return self.lm_head.weight if isinstance(self.lm_head, nn.Linear) else None

    def output_input(self, hidden_BTD: torch.Tensor) -> torch.Tensor:
        """The output layer's input. Tied output embedding: Mesh-TF rescales by d_model**-0.5 (v1.1's untied
        head is not rescaled)."""
        return hidden_BTD * self.config.d_model**-0.5 if self.lm_head is None else hidden_BTD

    def output_logits(self, hidden_BTD: torch.Tensor) -> torch.Tensor:
        """Logits [B, T, V]."""
        if self.lm_head is not None:
            return self.lm_head(hidden_BTD)
        return F.linear(self.output_input(hidden_BTD), self.shared.weight)

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
        if labels is not None and self.output_loss is not None and self.training and torch.is_grad_enabled():
            hidden_ND = self.output_input(hidden_BTD).flatten(0, 1)
            loss = self.output_loss(hidden_ND, self.output_weight(), labels.flatten())
        if loss is None:
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
        inactive = sum(count() for m in self.modules() if (count := getattr(m, "num_inactive_parameters", None)))
        return self.num_parameters(exclude_embeddings) - inactive

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
            elif (init := getattr(module, "init_weights", None)) is not None and module is not self:
                init(generator)


def build_model(
    config: ModelConfig,
    *,
    seed: int | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    init: bool = True,
) -> T5:
    """A randomly initialised plain model for `config` (a Switch config gets its sparse layers); speed paths
    are applied from outside (`t5lab.kernels.apply`)."""
    if not isinstance(config, ModelConfig):
        raise T5LabError(f"build_model: config is a {type(config).__name__}, expected a ModelConfig "
                         f"(for a shape name: build_model(from_name({config!r})))")
    factory = None
    if config.is_moe:
        from t5lab.model.moe import feed_forward_factory

        factory = feed_forward_factory(config)
    target, dtype_ = torch.device(device or "cpu"), dtype or torch.get_default_dtype()
    if target.type != "meta":  # parameters counted on the meta device: a terabyte shape is refused, not tried
        with torch.device("meta"):
            need = sum(p.numel() for p in T5(config, factory).parameters()) * dtype_.itemsize
        check_free_memory(need, target, f"model '{config.name}': its parameters in {str(dtype_)[6:]}")
    with torch.device(device or "cpu"):
        model = T5(config, factory)
    if init and torch.device(device or "cpu").type != "meta":
        generator = None
        if seed is not None:
            generator = torch.Generator(device=model.shared.weight.device).manual_seed(seed)
        model.init_weights(generator)
    if dtype is not None:
        model.to(dtype)
    return model

