"""A faster CPU dropout: keep masks from 15-bit random draws instead of one Mersenne-Twister number each."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    """Inverted dropout: zero each element with probability p, scale the rest by 1 / (1 - p).

    On CPU the keep mask comes from 15 random bits per element, two elements per 32-bit draw of the default
    generator (so p is rounded to a multiple of 1/32768, and the scale uses the rounded p). Why: torch's CPU
    `bernoulli_` draws one Mersenne-Twister number per element, serially, and was a fifth of a Switch training
    step; on the 8.4M attention probabilities of one t5-efficient-tiny layer at batch 8, forward + backward
    took 65-88 ms here vs 109-141 ms with F.dropout (interleaved runs). Other devices use F.dropout (fused there).
    The random stream differs from F.dropout's, so the same seed drops other elements than the plain model.
    """
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    if x.device.type != "cpu":
        return F.dropout(x, p, training=True)
    n = x.numel()
    bits = torch.empty((n + 1) // 2, dtype=torch.int32).random_().view(torch.int16)[:n]
    threshold = round(p * 32768)
    # 15 uniform bits (random_() leaves an int32's sign bit 0). The comparison writes the 0/1 mask straight
    # into x's dtype: 5x faster than comparing to bool and converting.
    mask = torch.ge(bits.bitwise_and_(0x7FFF), threshold, out=torch.empty(n, dtype=x.dtype))
    return x * mask.mul_(32768 / (32768 - threshold)).view_as(x)


class Dropout(nn.Dropout):
    """`nn.Dropout` (same rate attribute `p`, active in training mode only) with `dropout`'s CPU masks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)
