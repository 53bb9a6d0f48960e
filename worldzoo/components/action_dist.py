"""Action distributions of the actor. Continuous: `tanh_normal` (V1), `trunc_normal` (V2),
`bounded_normal` (V3);
discrete: `onehot` categorical with straight-through samples and optional unimix (V3).
Interface: sample() (reparameterised or straight-through), log_prob(a), entropy(), mode()."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from worldzoo.dists import sample_onehot

_LOG2 = math.log(2.0)


class TanhNormal:
    """tanh(Normal(mean, std)); DreamerV1: mean = 5 tanh(raw / 5), std = softplus(raw + c) +
    min_std with c chosen so that the initial std is `init_std`."""

    def __init__(self, raw: torch.Tensor, init_std: float = 5.0, min_std: float = 1e-4,
                 mean_scale: float = 5.0) -> None:
        mean, std = raw.chunk(2, -1)
        self.mean = mean_scale * torch.tanh(mean / mean_scale)
        raw_init = math.log(math.expm1(init_std))
        self.std = F.softplus(std + raw_init) + min_std
        self._last_u: torch.Tensor | None = None

    def sample(self) -> torch.Tensor:
        u = self.mean + self.std * torch.randn_like(self.std)
        self._last_u = u
        return torch.tanh(u)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        u = torch.atanh(action.clamp(-1 + 1e-6, 1 - 1e-6))
        z = (u - self.mean) / self.std
        normal = -0.5 * z.pow(2) - self.std.log() - 0.5 * math.log(2 * math.pi)
        log_det = 2 * (_LOG2 - u - F.softplus(-2 * u))  # log(1 - tanh(u)^2), stable
        return (normal - log_det).sum(-1)

    def entropy(self) -> torch.Tensor:
        """Single-sample estimate -log p(a) (tanh-normal has no closed form)."""
        u = self.mean + self.std * torch.randn_like(self.std)
        return -self.log_prob(torch.tanh(u))

    def mode(self) -> torch.Tensor:
        return torch.tanh(self.mean)


class BoundedNormal:
    """DreamerV3 continuous actions: Normal(tanh(raw_mean), std in [min_std, max_std]); samples
    are clipped to [-1, 1] by the driver, not squashed."""

    def __init__(self, raw: torch.Tensor, min_std: float = 0.1, max_std: float = 1.0) -> None:
        mean, std = raw.chunk(2, -1)
        self.mean = torch.tanh(mean)
        self.std = (max_std - min_std) * torch.sigmoid(std + 2.0) + min_std

    def sample(self) -> torch.Tensor:
        return self.mean + self.std * torch.randn_like(self.std)

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        z = (action - self.mean) / self.std
        return (-0.5 * z.pow(2) - self.std.log() - 0.5 * math.log(2 * math.pi)).sum(-1)

    def entropy(self) -> torch.Tensor:
        return (0.5 + 0.5 * math.log(2 * math.pi) + self.std.log()).sum(-1)

    def mode(self) -> torch.Tensor:
        return self.mean


class TruncNormal:
    """DreamerV2 continuous actions: Normal(tanh(raw_mean), 2 sigmoid(raw_std / 2) + min_std)
    truncated to [-1, 1]; reparameterised samples by the inverse CDF."""

    def __init__(self, raw: torch.Tensor, min_std: float = 0.1, max_std: float = 1.0) -> None:
        mean, std = raw.chunk(2, -1)
        self.mean = torch.tanh(mean)
        self.std = 2 * torch.sigmoid(std / 2) + min_std
        self.alpha = (-1 - self.mean) / self.std
        self.beta = (1 - self.mean) / self.std
        self.cdf_a, self.cdf_b = _ndtr(self.alpha), _ndtr(self.beta)
        self.z = (self.cdf_b - self.cdf_a).clamp(min=1e-8)

    def sample(self) -> torch.Tensor:
        u = self.cdf_a + (self.cdf_b - self.cdf_a) * torch.rand_like(self.mean)
        x = self.mean + self.std * torch.special.ndtri(u.clamp(1e-6, 1 - 1e-6))
        clipped = x.clamp(-1 + 1e-6, 1 - 1e-6)
        return x + (clipped - x).detach()  # clip with straight-through gradient, as V2

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        z = (action - self.mean) / self.std
        logp = -0.5 * z.pow(2) - 0.5 * math.log(2 * math.pi) - self.std.log() - self.z.log()
        return logp.sum(-1)

    def entropy(self) -> torch.Tensor:
        pa, pb = _pdf(self.alpha), _pdf(self.beta)
        ent = (0.5 * math.log(2 * math.pi * math.e) + self.std.log() + self.z.log()
               + (self.alpha * pa - self.beta * pb) / (2 * self.z))
        return ent.sum(-1)

    def mode(self) -> torch.Tensor:
        return self.mean


def _ndtr(x: torch.Tensor) -> torch.Tensor:
    return torch.special.ndtr(x)


def _pdf(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(-0.5 * x.pow(2)) / math.sqrt(2 * math.pi)


class OneHot:
    """Categorical over `n` actions as one-hot vectors; straight-through gradients on sample;
    `unimix` mixes a uniform into the probabilities (V3: 1%)."""

    def __init__(self, raw: torch.Tensor, unimix: float = 0.0) -> None:
        probs = torch.softmax(raw, -1)
        if unimix > 0:
            probs = (1 - unimix) * probs + unimix / raw.shape[-1]
        self.probs = probs
        self.logp = torch.log(probs)

    def sample(self) -> torch.Tensor:
        probs = self.probs
        return sample_onehot(probs.detach()) + probs - probs.detach()

    def log_prob(self, action: torch.Tensor) -> torch.Tensor:
        return (action.detach() * self.logp).sum(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.probs * self.logp).sum(-1)

    def mode(self) -> torch.Tensor:
        idx = self.probs.argmax(-1)
        return F.one_hot(idx, self.probs.shape[-1]).to(self.probs.dtype)


CONTINUOUS = {"tanh_normal": (TanhNormal, 2), "bounded_normal": (BoundedNormal, 2),
              "trunc_normal": (TruncNormal, 2)}
