"""Actors (slot `actor`): how the policy gradient is estimated from imagined trajectories.
`dynamics` backpropagates lambda-returns through the learned model (V1), `reinforce` uses
score-function gradients with the critic as baseline (V2 discrete, V3), `mixed` is V2's
rho-weighted sum. All share the action head; the env's action space picks the distribution."""

from __future__ import annotations

import torch
from torch import nn

from worldzoo.components.action_dist import CONTINUOUS, OneHot
from worldzoo.nets import MLP
from worldzoo.registry import define_slot, register

define_slot("actor", "policy gradient: dynamics backprop (V1), reinforce (V2/V3), mixed (V2 rho)")


class Actor(nn.Module):
    """Action head + exploration; subclasses define `rho` (share of the REINFORCE term)."""

    rho: float = 0.0

    def __init__(self, inp: int, action: int, discrete: bool, layers: int, units: int,
                 act: str, norm: str, dist: str, init_std: float, min_std: float,
                 max_std: float, unimix: float, ent_scale: float, expl_noise: float) -> None:
        super().__init__()
        if not discrete and dist not in CONTINUOUS:
            raise ValueError(f"unknown actor.dist '{dist}'; known: {', '.join(CONTINUOUS)}")
        self.discrete, self.dist_name, self.action_dim = discrete, dist, action
        self.init_std, self.min_std, self.max_std = init_std, min_std, max_std
        self.unimix, self.ent_scale, self.expl_noise = unimix, ent_scale, expl_noise
        out = action if discrete else CONTINUOUS[dist][1] * action
        self.net = MLP(inp, out, layers, units, act, norm)

    @property
    def backprop(self) -> bool:
        """Whether the loss needs gradients through the imagined dynamics."""
        return self.rho < 1.0

    def forward(self, feat: torch.Tensor):
        return self.dist(self.net(feat))

    def dist(self, raw: torch.Tensor):
        """The action distribution from the net's raw outputs."""
        if self.discrete:
            return OneHot(raw, self.unimix)
        if self.dist_name == "tanh_normal":
            return CONTINUOUS["tanh_normal"][0](raw, self.init_std, self.min_std)
        return CONTINUOUS[self.dist_name][0](raw, self.min_std, self.max_std)

    def explore(self, action: torch.Tensor) -> torch.Tensor:
        """Training-time exploration on top of sampling: Gaussian noise (V1, continuous) or
        epsilon-random actions (discrete), both with scale `expl_noise`."""
        if self.expl_noise <= 0:
            return action
        if self.discrete:
            rand = torch.randint(0, self.action_dim, action.shape[:-1], device=action.device)
            rand = torch.nn.functional.one_hot(rand, self.action_dim).to(action.dtype)
            pick = torch.rand(action.shape[:-1], device=action.device) < self.expl_noise
            return torch.where(pick.unsqueeze(-1), rand, action)
        return (action + self.expl_noise * torch.randn_like(action)).clamp(-1, 1)

    def loss(self, feat: torch.Tensor, action: torch.Tensor, ret: torch.Tensor,
             base: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor, dist=None):
        """Actor loss over imagined steps t = 0..H-1. ret: lambda-returns (with gradient through
        the dynamics when `backprop`), base: critic values, scale: return normaliser; `dist`:
        the policy on stop-gradient `feat` if imagination already computed it."""
        losses, metrics = {}, {}
        objective = torch.zeros_like(ret)
        if self.rho < 1:
            objective = objective + (1 - self.rho) * ret / scale
        if self.rho > 0 or self.ent_scale > 0:  # the pure dynamics loss needs no log-probs
            dist = dist if dist is not None else self(feat.detach())
            if self.rho > 0:
                adv = ((ret - base) / scale).detach()
                objective = objective + self.rho * dist.log_prob(action.detach()) * adv
            ent = dist.entropy()
            objective = objective + self.ent_scale * ent
            metrics["actor_entropy"] = ent.mean().detach()
        losses["actor"] = -(weight.detach() * objective).mean()
        return losses, metrics


def _actor_kwargs(layers, units, act, norm, dist, init_std, min_std, max_std, unimix,
                  ent_scale, expl_noise):
    return dict(layers=layers, units=units, act=act, norm=norm, dist=dist, init_std=init_std,
                min_std=min_std, max_std=max_std, unimix=unimix, ent_scale=ent_scale,
                expl_noise=expl_noise)


@register("actor", "dynamics")
class DynamicsActor(Actor):
    """DreamerV1: maximise lambda-returns by backpropagating through the learned dynamics."""

    rho = 0.0

    def __init__(self, inp: int, action: int, discrete: bool, layers: int = 4, units: int = 400,
                 act: str = "elu", norm: str = "none", dist: str = "tanh_normal",
                 init_std: float = 5.0, min_std: float = 1e-4, max_std: float = 1.0,
                 unimix: float = 0.0, ent_scale: float = 0.0, expl_noise: float = 0.3) -> None:
        super().__init__(inp, action, discrete, **_actor_kwargs(
            layers, units, act, norm, dist, init_std, min_std, max_std, unimix, ent_scale,
            expl_noise))


@register("actor", "reinforce")
class ReinforceActor(Actor):
    """REINFORCE with the critic as baseline and an entropy bonus (V2 discrete, V3)."""

    rho = 1.0

    def __init__(self, inp: int, action: int, discrete: bool, layers: int = 4, units: int = 400,
                 act: str = "elu", norm: str = "none", dist: str = "bounded_normal",
                 init_std: float = 1.0, min_std: float = 0.1, max_std: float = 1.0,
                 unimix: float = 0.0, ent_scale: float = 3e-4, expl_noise: float = 0.0) -> None:
        super().__init__(inp, action, discrete, **_actor_kwargs(
            layers, units, act, norm, dist, init_std, min_std, max_std, unimix, ent_scale,
            expl_noise))


@register("actor", "mixed")
class MixedActor(Actor):
    """DreamerV2: rho * REINFORCE + (1 - rho) * dynamics backprop. `rho=None` is V2's `auto`:
    1 for discrete actions (Atari), 0 for continuous ones (DMC)."""

    def __init__(self, inp: int, action: int, discrete: bool, rho: float | None = None,
                 layers: int = 4, units: int = 400, act: str = "elu", norm: str = "none",
                 dist: str = "trunc_normal", init_std: float = 5.0, min_std: float = 0.1,
                 max_std: float = 1.0, unimix: float = 0.0, ent_scale: float = 1e-4,
                 expl_noise: float = 0.0) -> None:
        if rho is None:
            rho = 1.0 if discrete else 0.0
        if not 0.0 <= rho <= 1.0:
            raise ValueError(f"actor.rho must be in [0, 1], got {rho}")
        self.rho = rho
        super().__init__(inp, action, discrete, **_actor_kwargs(
            layers, units, act, norm, dist, init_std, min_std, max_std, unimix, ent_scale,
            expl_noise))
