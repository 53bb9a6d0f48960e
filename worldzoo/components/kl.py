"""KL regularisers between posterior and prior. Each returns named loss terms and their scales;
gradients are routed with explicit stop-gradients (`sg`) as in each paper."""

from __future__ import annotations

import torch
from torch import nn

from worldzoo.registry import define_slot, register

define_slot("kl", "posterior/prior KL: free nats (V1), balanced (V2), split dyn/rep (V3)")

State = dict[str, torch.Tensor]


def sg(state: State) -> State:
    """Stop-gradient of every tensor in a state."""
    return {k: v.detach() for k, v in state.items()}


class KL(nn.Module):
    """Interface: `forward(kl_fn, post, prior, pair_fn=None) -> (losses, metrics)`; `scales`
    names each term. `pair_fn(post, prior)`, where given, is (KL(sg(post) || prior),
    KL(post || sg(prior))) in one go (`RSSM.kl_pair`)."""

    scales: dict[str, float]


def _pair(kl_fn, post: State, prior: State, pair_fn=None):
    if pair_fn is not None:
        return pair_fn(post, prior)
    return kl_fn(sg(post), prior), kl_fn(post, sg(prior))


@register("kl", "free_nats")
class FreeNatsKL(KL):
    """DreamerV1: max(mean KL(post || prior), free); gradient reaches posterior and prior."""

    def __init__(self, scale: float = 1.0, free: float = 3.0) -> None:
        super().__init__()
        self.free, self.scales = free, {"kl": scale}

    def forward(self, kl_fn, post: State, prior: State, pair_fn=None):
        value = kl_fn(post, prior)
        return {"kl": torch.clamp(value.mean(), min=self.free)}, {"kl": value.mean().detach()}


@register("kl", "balanced")
class BalancedKL(KL):
    """DreamerV2: alpha * KL(sg(post) || prior) + (1 - alpha) * KL(post || sg(prior)), each term
    clamped at `free` nats after averaging (V2's free_avg)."""

    def __init__(self, scale: float = 1.0, alpha: float = 0.8, free: float = 1.0) -> None:
        super().__init__()
        self.alpha, self.free, self.scales = alpha, free, {"kl": scale}

    def forward(self, kl_fn, post: State, prior: State, pair_fn=None):
        lhs, rhs = _pair(kl_fn, post, prior, pair_fn)  # trains the prior; the posterior
        lhs, rhs = lhs.mean(), rhs.mean()
        loss = (self.alpha * torch.clamp(lhs, min=self.free)
                + (1 - self.alpha) * torch.clamp(rhs, min=self.free))
        return {"kl": loss}, {"kl": lhs.detach()}


@register("kl", "split")
class SplitKL(KL):
    """DreamerV3: dynamics loss KL(sg(post) || prior) and representation loss
    KL(post || sg(prior)), each clipped below at `free` bits per step (free bits), scaled
    separately (dyn 0.5, rep 0.1)."""

    def __init__(self, dyn: float = 0.5, rep: float = 0.1, free: float = 1.0) -> None:
        super().__init__()
        self.free, self.scales = free, {"dyn": dyn, "rep": rep}

    def forward(self, kl_fn, post: State, prior: State, pair_fn=None):
        dyn, rep = _pair(kl_fn, post, prior, pair_fn)
        losses = {"dyn": torch.clamp(dyn, min=self.free).mean(),
                  "rep": torch.clamp(rep, min=self.free).mean()}
        return losses, {"kl": dyn.mean().detach()}
