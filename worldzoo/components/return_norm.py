"""Return normalisation for the actor (slot `return_norm`): none, or DreamerV3's percentile
range: S = EMA of (P95 - P5) of the returns, and returns are divided by max(1, S)."""

from __future__ import annotations

import torch
from torch import nn

from worldzoo.registry import define_slot, register

define_slot("return_norm", "actor return scale: none, percentile (V3: EMA of P95-P5, max(1,S))")


@register("return_norm", "none")
class NoReturnNorm(nn.Module):
    def __init__(self) -> None:
        super().__init__()

    def forward(self, returns: torch.Tensor) -> torch.Tensor:
        """The scale to divide returns and baselines by: 1."""
        return torch.ones((), device=returns.device)


def quantiles(x: torch.Tensor, qs: tuple[float, ...]) -> list[torch.Tensor]:
    """torch.quantile's linear interpolation of a 1-D `x` at the fractions `qs`, bit for bit,
    from one sort and positions computed on the host (in `x`'s dtype, as torch.quantile does):
    torch.quantile with a tensor of fractions checks their range on the device, a host sync in
    the middle of a GPU update (and a graph-capture error)."""
    xs = torch.sort(x).values
    out = []
    for q in qs:
        rank = torch.tensor(q, dtype=x.dtype) * (len(xs) - 1)  # a CPU scalar: no device sync
        lo, hi = int(rank), int(torch.ceil(rank))
        out.append(torch.lerp(xs[lo], xs[hi], float(rank - lo)))
    return out


@register("return_norm", "percentile")
class PercentileReturnNorm(nn.Module):
    """Updates its EMA with each call (training mode) and returns max(limit, S)."""

    def __init__(self, low: float = 0.05, high: float = 0.95, decay: float = 0.99,
                 limit: float = 1.0) -> None:
        super().__init__()
        self.low, self.high, self.decay, self.limit = low, high, decay, limit
        self.register_buffer("lo", torch.zeros(()))
        self.register_buffer("hi", torch.zeros(()))

    def forward(self, returns: torch.Tensor) -> torch.Tensor:
        q = quantiles(returns.detach().flatten().float(), (self.low, self.high))
        if self.training:
            self.lo.mul_(self.decay).add_((1 - self.decay) * q[0])
            self.hi.mul_(self.decay).add_((1 - self.decay) * q[1])
        return torch.clamp(self.hi - self.lo, min=self.limit)
