"""Critic targets (slot `critic_target`): which critic bootstraps the lambda-returns and
whether a slow copy regularises the critic.
- none: the critic itself (V1);
- slow: a slow copy (EMA with `rate`, mixed in every `every` updates) computes the returns (V2);
- slow_reg: returns from the critic, plus a loss pulling it toward the slow copy's
  predictions (V3 `critic_slowreg`)."""

from __future__ import annotations

import copy

import torch
from torch import nn

from worldzoo.registry import define_slot, register

define_slot("critic_target", "critic bootstrap: none (V1), slow EMA copy (V2), slow_reg (V3)")


@register("critic_target", "none")
class NoTarget(nn.Module):
    def __init__(self, critic: nn.Module) -> None:
        super().__init__()
        self.scales: dict[str, float] = {}
        self._critic = [critic]  # not a submodule: no second copy in the state dict

    def value(self, feat: torch.Tensor, fast=None) -> torch.Tensor:
        """Values used to bootstrap the lambda-returns; `fast`: the critic's output on `feat`
        if already computed."""
        return (fast if fast is not None else self._critic[0](feat)).mean

    def loss(self, feat: torch.Tensor, dist) -> tuple[dict, dict]:
        return {}, {}

    def update(self) -> None:
        pass


class _SlowCopy(NoTarget):
    def __init__(self, critic: nn.Module, rate: float, every: int) -> None:
        super().__init__(critic)
        self.slow = copy.deepcopy(critic).requires_grad_(False)
        self.rate, self.every = rate, every
        self.register_buffer("count", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def update(self) -> None:
        """Mix the critic into the copy on every `every`-th call. The counter stays on the
        device (a 0/1 factor of the rate, exact for lerp): no host sync in the update."""
        rate = self.rate if self.every == 1 else self.rate * (self.count % self.every == 0)
        for s, p in zip(self.slow.parameters(), self._critic[0].parameters()):
            s.lerp_(p, rate)
        self.count += 1


@register("critic_target", "slow")
class SlowTarget(_SlowCopy):
    """V2: returns bootstrap from a copy updated fully every 100 updates (rate 1)."""

    def __init__(self, critic: nn.Module, rate: float = 1.0, every: int = 100) -> None:
        super().__init__(critic, rate, every)

    def value(self, feat: torch.Tensor, fast=None) -> torch.Tensor:
        return self.slow(feat).mean


@register("critic_target", "slow_reg")
class SlowRegTarget(_SlowCopy):
    """V3: an EMA copy (rate 0.02 every update) regularises the critic toward its predictions."""

    def __init__(self, critic: nn.Module, rate: float = 0.02, every: int = 1,
                 scale: float = 1.0) -> None:
        super().__init__(critic, rate, every)
        self.scales = {"slowreg": scale}

    def loss(self, feat: torch.Tensor, dist) -> tuple[dict, dict]:
        with torch.no_grad():
            target = self.slow(feat).mean
        return {"slowreg": dist.loss(target)}, {}
