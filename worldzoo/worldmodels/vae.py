"""V: the variational autoencoder of World Models (Ha & Schmidhuber 2018, appendix A.1).

`conv` is the paper's VAE of 64x64x3 frames (four stride-2 convs, z = 32, deconv decoder,
sigmoid output); `mlp` is the same objective for vector observations (inputs standardised
with statistics of the collected data). Both minimise the summed squared reconstruction
error plus a KL term clipped from below at `kl_tolerance * z` nats, as the paper's code does.
"""

from __future__ import annotations

import torch
from torch import nn

from worldzoo.config import ConfigError
from worldzoo.registry import define_slot, register

define_slot("vae", "V (World Models): VAE of one observation, conv (64x64 frames) or mlp")

Shapes = dict[str, tuple[int, ...]]


class VAE(nn.Module):
    """Shared objective: `encode` -> (mean, logvar), `decode` -> reconstruction of the
    normalised input, `loss` -> (total, metrics). `key` is the observation key it models."""

    key = ""

    def __init__(self, z: int, kl_tolerance: float) -> None:
        super().__init__()
        self.z_dim, self.kl_tolerance = z, kl_tolerance

    def prep(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def fit_normalizer(self, data: torch.Tensor) -> None:
        """Set input statistics from collected data (no-op where inputs are fixed-range)."""

    def embed(self, x: torch.Tensor, sample: bool = False) -> torch.Tensor:
        """z of raw observations: the posterior mean, or a sample."""
        mean, logvar = self.encode(self.prep(x))
        if not sample:
            return mean
        return mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)

    def loss(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Paper objective: sum of squared errors + max(KL, kl_tolerance * z), batch mean."""
        target = self.prep(x)
        mean, logvar = self.encode(target)
        z = mean + torch.exp(0.5 * logvar) * torch.randn_like(mean)
        recon = self.decode(z)
        r_loss = (recon - target).pow(2).flatten(1).sum(-1).mean()
        kl = kl_to_unit_normal(mean, logvar)
        kl_loss = torch.clamp(kl, min=self.kl_tolerance * self.z_dim).mean()
        total = r_loss + kl_loss
        return total, {"vae_recon": r_loss.detach(), "vae_kl": kl.mean().detach()}


def kl_to_unit_normal(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) summed over the last dim."""
    return -0.5 * (1 + logvar - mean.pow(2) - logvar.exp()).sum(-1)


@register("vae", "conv")
class ConvVAE(VAE):
    """The paper's VAE of 64x64x3 frames: conv 32-64-128-256 (k4 s2, ReLU) -> z; dense 1024
    -> deconv 128-64-32-3 (k5, k5, k6, k6, s2) -> sigmoid."""

    key = "image"

    def __init__(self, obs_space: Shapes, z: int = 32, kl_tolerance: float = 0.5) -> None:
        super().__init__(z, kl_tolerance)
        if obs_space.get("image") != (64, 64, 3):
            raise ConfigError(f"vae=conv needs 64x64x3 image observations, got {obs_space}; "
                              "use --set env.obs=pixels (env.size=64), or --set vae=mlp for "
                              "vector observations")
        relu = nn.ReLU
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 4, 2), relu(), nn.Conv2d(32, 64, 4, 2), relu(),
            nn.Conv2d(64, 128, 4, 2), relu(), nn.Conv2d(128, 256, 4, 2), relu(), nn.Flatten())
        self.stats = nn.Linear(2 * 2 * 256, 2 * z)
        self.dense = nn.Linear(z, 1024)
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(1024, 128, 5, 2), relu(), nn.ConvTranspose2d(128, 64, 5, 2),
            relu(), nn.ConvTranspose2d(64, 32, 6, 2), relu(), nn.ConvTranspose2d(32, 3, 6, 2),
            nn.Sigmoid())

    def prep(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [N, 64, 64, 3] -> float [N, 3, 64, 64] in [0, 1]."""
        return x.float().div(255.0).permute(0, 3, 1, 2)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.stats(self.encoder(x)).chunk(2, -1)
        return mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.dense(z)[:, :, None, None])


@register("vae", "mlp")
class MLPVAE(VAE):
    """The same objective for vector observations: MLP encoder/decoder of `units` x `layers`,
    on inputs standardised with the collected data's mean and std."""

    key = "vector"

    def __init__(self, obs_space: Shapes, z: int = 32, layers: int = 2, units: int = 256,
                 kl_tolerance: float = 0.5) -> None:
        super().__init__(z, kl_tolerance)
        if "vector" not in obs_space:
            raise ConfigError(f"vae=mlp needs vector observations, got keys {list(obs_space)}; "
                              "use --set env.obs=vector, or --set vae=conv for 64x64 frames")
        dim = int(obs_space["vector"][0])

        def mlp(inp: int, out: int) -> nn.Sequential:
            mods: list[nn.Module] = []
            for i in range(layers):
                mods += [nn.Linear(inp if i == 0 else units, units), nn.ReLU()]
            mods.append(nn.Linear(units if layers else inp, out))
            return nn.Sequential(*mods)

        self.encoder = mlp(dim, 2 * z)
        self.decoder = mlp(z, dim)
        self.register_buffer("loc", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))

    def fit_normalizer(self, data: torch.Tensor) -> None:
        data = data.float()
        self.loc.copy_(data.mean(0))
        self.scale.copy_(data.std(0).clamp(min=1e-3) if len(data) > 1 else torch.ones_like(
            self.scale))

    def prep(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.loc) / self.scale

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = self.encoder(x).chunk(2, -1)
        return mean, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)
