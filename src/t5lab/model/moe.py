"""Switch Transformers' sparse feed-forward: a router sends each token to one (or two) of E experts.

Routing (Fedus et al. 2021; ST-MoE, Zoph et al. 2022), as transformers' `SwitchTransformersTop1Router`:
- router logits `x W_r^T` in `router_dtype` (float32 by default, "selective precision"); in training the
  router's *input* may be multiplied by uniform noise in [1 - jitter, 1 + jitter];
- each token picks its top-k experts by softmax probability; its output is the expert's output scaled by
  that (unnormalised) probability;
- capacity is counted per sequence (a "group", as transformers does: its cumsum runs over the sequence
  axis of [B, T, E]) in token order; with top-2, every token's first choice is served before any second
  choice (flaxformer's order). Assignments past an expert's capacity are dropped.

Dropped tokens (`ModelConfig.dropped_tokens`): "skip" leaves a token dropped by every expert it chose out
of the layer (output 0; it goes on through the residual alone), the paper's rule and what transformers 5.x
does. "scaled_input" reproduces transformers 4.x, which passed such a token's (normed) input through,
scaled by its first-choice router probability.

Router losses per sparse layer (reported separately in `RouterStats`, weighted sum in `.loss`):
- load balancing (Switch eq. 4): E * sum_e f_e * P_e per sequence, averaged over sequences; f_e = fraction of
  tokens whose top-k includes e (before capacity), P_e = mean router probability of e;
- z-loss (ST-MoE eq. 5): mean over tokens of logsumexp(logits)^2.
transformers instead averages both over all sparse layers of a stack (its f and P are taken over the
concatenated layers), adds encoder + decoder, and skips a stack whose sparse step is 1; with one sparse layer
per stack and steps > 1 the numbers agree. Like transformers, t5lab does not use `router_ignore_padding_tokens`
(padding tokens are routed and counted).

Another transformers (5.23) quirk t5lab does not copy: its router multiplies the jitter noise into its input
in place, so in training with jitter > 0 the experts also see the jittered tokens; t5lab jitters the router's
input only, as the paper does.

Dispatch: kept assignments are sorted by expert and the experts run as two or three grouped matmuls
(`F.grouped_mm` over the sorted token rows, on CPU where torch has it) or batched matmuls over a zero-padded
[E, M, D] buffer (M = the most tokens any expert received in this batch), on stacked weights [E, F, D] /
[E, D, F] (transformers' per-expert orientation, so the checkpoint map only stacks/unstacks).
`reference_dispatch` is the plain per-expert loop kept for tests.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from t5lab.config import ModelConfig
from t5lab.model.layers import ACTIVATIONS, FeedForward


@dataclass
class RouterStats:
    """One sparse layer's routing statistics; `loss` is what training adds to the token loss."""

    loss: torch.Tensor  # router_aux_loss_coef * aux_loss + router_z_loss_coef * z_loss
    aux_loss: torch.Tensor  # load-balancing loss (1.0 when perfectly balanced)
    z_loss: torch.Tensor
    expert_fraction: torch.Tensor  # [E] share of tokens whose first choice is each expert (before capacity)
    dropped_fraction: torch.Tensor  # share of (token, expert) assignments dropped for capacity
    logits: torch.Tensor  # router logits [B, T, E] in router dtype (for analysis or other loss conventions)


@dataclass
class Routing:
    """Which (token, expert) assignments were kept, flattened over the batch: A = kept assignments."""

    token_A: torch.Tensor  # index into the flattened [B*T] tokens
    expert_A: torch.Tensor
    gate_A: torch.Tensor  # router probability of that expert for that token (differentiable)
    stats: RouterStats
    unserved_gate_N: torch.Tensor  # [B*T] first-choice probability of tokens no expert took, else 0


def expert_capacity(config: ModelConfig, tokens_per_group: int, training: bool) -> int:
    """Slots per expert per sequence: the fixed `expert_capacity`, else ceil(k * T / E * capacity factor)."""
    if config.expert_capacity is not None:
        return config.expert_capacity
    factor = config.capacity_factor_train if training else config.capacity_factor_eval
    return max(1, math.ceil(config.router_top_k * tokens_per_group / config.num_experts * factor))


def load_balancing_loss(probs_BTE: torch.Tensor, chosen_BTK: torch.Tensor) -> torch.Tensor:
    """Switch's auxiliary loss E * sum_e f_e P_e, per sequence then averaged (1.0 when uniform)."""
    E = probs_BTE.shape[-1]
    selected_BTE = F.one_hot(chosen_BTK, E).amax(dim=-2).float()
    f_BE = selected_BTE.mean(dim=1)
    p_BE = probs_BTE.float().mean(dim=1)
    return E * (f_BE * p_BE).sum(-1).mean()


def router_z_loss(logits_BTE: torch.Tensor) -> torch.Tensor:
    """ST-MoE's z-loss: mean squared log-partition of the router logits (keeps them small)."""
    return torch.logsumexp(logits_BTE.float(), dim=-1).pow(2).mean()


class SwitchFeedForward(nn.Module):
    """A router plus E experts shaped like T5's feed-forward (relu, or gated with wi_0/wi_1)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        E, D, Fd = config.num_experts, config.d_model, config.d_ff
        self.config = config
        self.router = nn.Linear(D, E, bias=config.router_bias)
        self.gated = config.is_gated
        # Stacked expert weights in transformers' per-expert orientation: wi [E, F, D], wo [E, D, F].
        if self.gated:
            self.wi_0 = nn.Parameter(torch.empty(E, Fd, D))
            self.wi_1 = nn.Parameter(torch.empty(E, Fd, D))
        else:
            self.wi = nn.Parameter(torch.empty(E, Fd, D))
        self.wo = nn.Parameter(torch.empty(E, D, Fd))
        self.act = ACTIVATIONS[config.feed_forward]
        self.dropout = nn.Dropout(config.expert_dropout)  # Switch's "expert dropout" (0.4 when fine-tuning)
        self.router_dtype = getattr(torch, config.router_dtype)
        self.dispatch: Callable[[SwitchFeedForward, torch.Tensor, Routing], torch.Tensor] = batched_dispatch

    # ------------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self, generator: torch.Generator | None = None) -> None:
        """Fan-in normal init times `init_scale`, as the dense layers (Mesh-TF; the Switch paper's rule).

        transformers differs: router std 1.0 and expert `wo` std d_model**-0.5 (both times initializer_factor).
        """
        c = self.config
        s = c.init_scale
        self.router.weight.normal_(0.0, s * c.d_model**-0.5, generator=generator)
        if self.router.bias is not None:
            self.router.bias.zero_()
        for name in ("wi", "wi_0", "wi_1"):
            if hasattr(self, name):
                getattr(self, name).normal_(0.0, s * c.d_model**-0.5, generator=generator)
        self.wo.normal_(0.0, s * c.d_ff**-0.5, generator=generator)

    def expert_weights(self) -> list[torch.Tensor]:
        return [self.wi_0, self.wi_1, self.wo] if self.gated else [self.wi, self.wo]

    def num_inactive_parameters(self) -> int:
        """Expert parameters a token does not use (all experts but its top-k)."""
        unused = self.config.num_experts - self.config.router_top_k
        return sum(w[0].numel() for w in self.expert_weights()) * unused

    # ------------------------------------------------------------------------------------------------------
    def route(self, x_BTD: torch.Tensor) -> Routing:
        c = self.config
        B, T, _ = x_BTD.shape
        E, k = c.num_experts, c.router_top_k
        h_BTD = x_BTD.to(self.router_dtype)
        if self.training and c.router_jitter_noise > 0:
            noise = torch.empty_like(h_BTD).uniform_(1.0 - c.router_jitter_noise, 1.0 + c.router_jitter_noise)
            h_BTD = h_BTD * noise
        bias = None if self.router.bias is None else self.router.bias.to(self.router_dtype)
        logits_BTE = F.linear(h_BTD, self.router.weight.to(self.router_dtype), bias)
        probs_BTE = torch.softmax(logits_BTE, dim=-1)
        gate_BTK, chosen_BTK = probs_BTE.topk(k, dim=-1)

        # Priority order within a sequence: all first choices in token order, then all second choices.
        chosen_BKT = chosen_BTK.transpose(1, 2)
        onehot_BNE = F.one_hot(chosen_BKT.reshape(B, k * T), E)
        position_BN = (onehot_BNE.cumsum(dim=1) * onehot_BNE).sum(-1)  # 1-based place in the expert's queue
        keep_BN = position_BN <= expert_capacity(c, T, self.training)

        token_BN = (torch.arange(B, device=x_BTD.device)[:, None] * T
                    + torch.arange(T, device=x_BTD.device).repeat(k)[None, :])
        keep = keep_BN.flatten()
        gate_N = gate_BTK.transpose(1, 2).reshape(-1).to(x_BTD.dtype)

        aux = load_balancing_loss(probs_BTE, chosen_BTK)
        z = router_z_loss(logits_BTE)
        stats = RouterStats(
            loss=c.router_aux_loss_coef * aux + c.router_z_loss_coef * z,
            aux_loss=aux,
            z_loss=z,
            expert_fraction=torch.bincount(chosen_BTK[..., 0].flatten(), minlength=E).float() / (B * T),
            dropped_fraction=1.0 - keep.float().mean(),
            logits=logits_BTE,
        )
        served_BT = keep_BN.view(B, k, T).any(dim=1)
        unserved_gate = gate_BTK[..., 0].masked_fill(served_BT, 0.0).flatten().to(x_BTD.dtype)
        return Routing(token_BN.flatten()[keep], chosen_BKT.flatten()[keep], gate_N[keep], stats, unserved_gate)

    def experts(self, x: torch.Tensor, offsets_E: torch.Tensor | None = None) -> torch.Tensor:
        """All experts at once: on padded token slots [E, M, D] -> [E, M, D] (batched matmuls), or, given
        `offsets_E` (int32 end of each expert's rows), on token rows sorted by expert [A, D] -> [A, D]."""

        def matmul(a: torch.Tensor, weight_EOI: torch.Tensor) -> torch.Tensor:
            weight_EIO = weight_EOI.transpose(1, 2)
            return torch.bmm(a, weight_EIO) if offsets_E is None else F.grouped_mm(a, weight_EIO, offs=offsets_E)

        if self.gated:
            h = self.act(matmul(x, self.wi_0)) * matmul(x, self.wi_1)
        else:
            h = self.act(matmul(x, self.wi))
        return matmul(self.dropout(h), self.wo)

    def forward(self, x_BTD: torch.Tensor) -> tuple[torch.Tensor, RouterStats]:
        routing = self.route(x_BTD)
        x_ND = x_BTD.reshape(-1, x_BTD.shape[-1])
        out_ND = self.dispatch(self, x_ND, routing)
        if self.config.dropped_tokens == "scaled_input":
            out_ND = out_ND + x_ND * routing.unserved_gate_N[:, None]
        return out_ND.view_as(x_BTD), routing.stats


def batched_dispatch(layer: SwitchFeedForward, x_ND: torch.Tensor, routing: Routing) -> torch.Tensor:
    """Sort kept assignments by expert; run the experts as grouped matmuls on the sorted rows, or as batched
    matmuls on a zero-padded [E, M, D] buffer where grouped matmuls are not available."""
    E = layer.config.num_experts
    order = torch.argsort(routing.expert_A, stable=True)
    expert_A, token_A, gate_A = routing.expert_A[order], routing.token_A[order], routing.gate_A[order]
    out_ND = torch.zeros_like(x_ND)
    if expert_A.numel() == 0:
        return out_ND
    counts_E = torch.bincount(expert_A, minlength=E)
    align = 16 // x_ND.element_size()  # grouped_mm wants 16-byte strides
    c = layer.config
    if x_ND.device.type == "cpu" and hasattr(F, "grouped_mm") and c.d_model % align == 0 and c.d_ff % align == 0:
        # No padding rows to multiply (fwd+bwd of one tiny-moe8 layer at batch 8: 112 vs 149 ms). CPU only
        # for now: on CUDA, grouped_mm wants bf16 and recent GPUs, unmeasured here.
        y_AD = layer.experts(x_ND[token_A], torch.cumsum(counts_E, 0).to(torch.int32))
    else:
        M = int(counts_E.max())
        starts_E = torch.cumsum(counts_E, 0) - counts_E
        slot_A = expert_A * M + torch.arange(expert_A.numel(), device=x_ND.device) - starts_E[expert_A]
        # Padding slots must be zeros, not garbage: their rows still enter the weight gradients (times zero).
        buffer = x_ND.new_zeros(E * M, x_ND.shape[-1]).index_copy(0, slot_A, x_ND[token_A])
        y_AD = layer.experts(buffer.view(E, M, -1)).reshape(E * M, -1)[slot_A]
    return out_ND.index_add(0, token_A, y_AD * gate_A[:, None])


def reference_dispatch(layer: SwitchFeedForward, x_ND: torch.Tensor, routing: Routing) -> torch.Tensor:
    """The obvious per-expert loop (as transformers runs it): the check for `batched_dispatch`."""
    out_ND = torch.zeros_like(x_ND)
    for e in range(layer.config.num_experts):
        mine = routing.expert_A == e
        if not mine.any():
            continue
        tokens = routing.token_A[mine]
        x = x_ND[tokens]
        if layer.gated:
            h = layer.act(x @ layer.wi_0[e].T) * (x @ layer.wi_1[e].T)
        else:
            h = layer.act(x @ layer.wi[e].T)
        y = layer.dropout(h) @ layer.wo[e].T
        out_ND = out_ND.index_add(0, tokens, y * routing.gate_A[mine][:, None])
    return out_ND


def feed_forward_factory(config: ModelConfig) -> Callable[[int, bool], nn.Module]:
    """For `T5`: block `layer` of the encoder/decoder gets a Switch layer where the config places one."""

    def factory(layer: int, decoder: bool) -> nn.Module:
        if config.is_sparse_layer(layer, decoder):
            return SwitchFeedForward(config)
        return FeedForward(config)

    return factory
