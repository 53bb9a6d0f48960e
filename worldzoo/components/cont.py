"""Episode continuation (slot `cont`): a fixed discount (V1) or a Bernoulli continue head
trained on `is_terminal` (V2/V3). Time-limit truncation is never a target: only true terminals
set the continue target to 0."""

from __future__ import annotations

import torch
from torch import nn

from worldzoo.dists import BernoulliDist
from worldzoo.nets import MLP
from worldzoo.registry import define_slot, register

define_slot("cont", "episode continuation: none (fixed discount, V1), bernoulli head (V2/V3)")


@register("cont", "none")
class NoCont(nn.Module):
    """Every imagined step continues; discounting is gamma alone."""

    def __init__(self, inp: int) -> None:
        super().__init__()
        self.scales: dict[str, float] = {}

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        """Probability that the episode continues after each state: 1."""
        return torch.ones(feat.shape[:-1], device=feat.device)

    def loss(self, feat: torch.Tensor, is_terminal: torch.Tensor):
        return {}, {}


@register("cont", "bernoulli")
class BernoulliCont(nn.Module):
    """Predicts 1 - is_terminal; its probability is the discount factor's continue part."""

    def __init__(self, inp: int, layers: int = 2, units: int = 400, act: str = "elu",
                 norm: str = "none", scale: float = 1.0) -> None:
        super().__init__()
        self.net = MLP(inp, 1, layers, units, act, norm)
        self.scales = {"cont": scale}

    def dist(self, feat: torch.Tensor) -> BernoulliDist:
        return BernoulliDist(self.net(feat).squeeze(-1))

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.dist(feat).mean

    def loss(self, feat: torch.Tensor, is_terminal: torch.Tensor):
        dist = self.dist(feat)
        loss = dist.loss(1.0 - is_terminal.float()).mean()
        acc = ((dist.mean > 0.5) == (is_terminal < 0.5)).float().mean()
        return {"cont": loss}, {"cont_acc": acc.detach()}
