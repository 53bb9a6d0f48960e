"""Prediction heads for scalar targets (reward, critic). Every variant maps features to an
output distribution with `.loss(target)` and `.mean` (see worldzoo.dists)."""

from __future__ import annotations

import torch
from torch import nn

from worldzoo.dists import MSEDist, NormalDist, TwoHotDist, symlog_bins
from worldzoo.nets import MLP
from worldzoo.registry import define_slot, register

define_slot("reward", "reward head: unit normal (V1), mse, twohot over symlog bins (V3)")
define_slot("critic", "critic/value head: unit normal (V1), mse, twohot over symlog bins (V3)")


class Head(nn.Module):
    """MLP from features to the raw outputs of a distribution: `head(feat)` is
    `head.dist(head.net(feat))`, so raw outputs computed once can be reused."""

    def __init__(self, inp: int, out: int, layers: int, units: int, act: str, norm: str,
                 out_init: str, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.net = MLP(inp, out, layers, units, act, norm, out_init)

    def forward(self, feat: torch.Tensor):
        return self.dist(self.net(feat))


@register("reward", "normal")
@register("critic", "normal")
class NormalHead(Head):
    """Unit-variance Gaussian on the raw target (DreamerV1)."""

    def __init__(self, inp: int, layers: int = 2, units: int = 400, act: str = "elu",
                 norm: str = "none", out_init: str = "default", scale: float = 1.0) -> None:
        super().__init__(inp, 1, layers, units, act, norm, out_init, scale)

    def dist(self, raw: torch.Tensor) -> NormalDist:
        return NormalDist(raw.squeeze(-1))


@register("reward", "mse")
@register("critic", "mse")
class MSEHead(Head):
    """Squared error on the raw target, or on symlog(target) with `symlog=True`."""

    def __init__(self, inp: int, layers: int = 2, units: int = 400, act: str = "elu",
                 norm: str = "none", out_init: str = "default", symlog: bool = False,
                 scale: float = 1.0) -> None:
        super().__init__(inp, 1, layers, units, act, norm, out_init, scale)
        self.transform = "symlog" if symlog else "none"

    def dist(self, raw: torch.Tensor) -> MSEDist:
        return MSEDist(raw.squeeze(-1), transform=self.transform)


@register("reward", "twohot")
@register("critic", "twohot")
class TwoHotHead(Head):
    """DreamerV3: softmax over `bins` bins equally spaced in symlog space [low, high], trained
    with two-hot cross-entropy; output layer zero-initialised (predicts 0 at the start)."""

    def __init__(self, inp: int, layers: int = 2, units: int = 400, act: str = "silu",
                 norm: str = "layer", out_init: str = "zero", bins: int = 255,
                 low: float = -20.0, high: float = 20.0, scale: float = 1.0) -> None:
        super().__init__(inp, bins, layers, units, act, norm, out_init, scale)
        self.register_buffer("bins", symlog_bins(bins, low, high), persistent=False)

    def dist(self, raw: torch.Tensor) -> TwoHotDist:
        return TwoHotDist(raw, self.bins)
