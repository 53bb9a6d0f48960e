"""Output distributions of the heads. One small interface, so nothing downstream branches:

    dist.loss(target) -> per-sample loss, summed over event dims (negative log-likelihood or
                         its equivalent; shape = batch shape)
    dist.mean         -> the prediction used as a value (reward, return, continue prob, image)

Plain tensors, no torch.distributions objects, so they are cheap inside the unroll.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def symlog(x: torch.Tensor) -> torch.Tensor:
    """sign(x) * log(|x| + 1) (DreamerV3 eq. 1)."""
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    """Inverse of symlog: sign(x) * (exp(|x|) - 1)."""
    return torch.sign(x) * torch.expm1(x.abs())


class NormalDist:
    """Unit-variance Gaussian (DreamerV1 heads): loss is the exact negative log-likelihood."""

    def __init__(self, mean: torch.Tensor, event_dims: int = 0, std: float = 1.0) -> None:
        self.mean, self.event_dims, self.std = mean, event_dims, std

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        z = (target - self.mean) / self.std
        nll = 0.5 * z.pow(2) + _HALF_LOG_2PI + math.log(self.std)
        return nll.sum(tuple(range(-self.event_dims, 0))) if self.event_dims else nll


class MSEDist:
    """Squared error summed over event dims; `transform='symlog'` compares in symlog space and
    returns predictions through symexp (DreamerV3 vector decoder)."""

    def __init__(self, pred: torch.Tensor, event_dims: int = 0, transform: str = "none") -> None:
        self.pred, self.event_dims, self.transform = pred, event_dims, transform

    @property
    def mean(self) -> torch.Tensor:
        return symexp(self.pred) if self.transform == "symlog" else self.pred

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        if self.transform == "symlog":
            target = symlog(target)
        err = (self.pred - target).pow(2)
        return err.sum(tuple(range(-self.event_dims, 0))) if self.event_dims else err


class BernoulliDist:
    """Bernoulli from logits (continue head): loss is binary cross-entropy."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    @property
    def mean(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)

    def loss(self, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(self.logits, target, reduction="none")
