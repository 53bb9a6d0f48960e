"""The world model: encoder -> RSSM (observe) -> decoder, reward and continue heads, KL.
Assembled from the recipe's slot variants; nothing here branches on which one it got."""

from __future__ import annotations

import torch
from torch import nn

from worldzoo.config import ConfigError
from worldzoo.nets import compute_dtype
from worldzoo.registry import RegistryError, build

Batch = dict[str, torch.Tensor]
OBS_KEYS = ("image", "vector")


def variant(cfg: dict, slot: str) -> tuple[str, dict]:
    """(variant name, kwargs) of a slot in a resolved config."""
    kwargs = dict(cfg[slot])
    return kwargs.pop("name"), kwargs


def assemble(cfg: dict, slot: str, *wiring):
    """Build a slot's variant; a variant that cannot work with the env or the other slots
    fails here, at start-up, with one line naming the slot, the variant and the reason."""
    name, kw = variant(cfg, slot)
    try:
        return build(slot, name, *wiring, **kw)
    except (ConfigError, RegistryError):
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{slot}={name} cannot be used here: {e}") from None


class WorldModel(nn.Module):
    def __init__(self, cfg: dict, obs_space: dict[str, tuple[int, ...]], action_dim: int) -> None:
        super().__init__()
        self.encoder = assemble(cfg, "encoder", obs_space)
        self.rssm = assemble(cfg, "rssm", self.encoder.out_dim, action_dim)
        feat = self.rssm.feat_dim
        self.decoder = assemble(cfg, "decoder", feat, obs_space)
        self.reward = assemble(cfg, "reward", feat)
        self.cont = assemble(cfg, "cont", feat)
        self.kl = assemble(cfg, "kl")
        self.scales = {**self.decoder.scales, "reward": self.reward.scale,
                       **self.cont.scales, **self.kl.scales}

    def loss(self, batch: Batch):
        """(total loss, posterior states, metrics) for a batch of sequences [B, T]."""
        obs = {k: batch[k] for k in OBS_KEYS if k in batch}
        embed = self.encoder(obs)
        post, prior = self.rssm.observe(embed, batch["action"], batch["is_first"])
        feat = compute_dtype(self.rssm.feat(post))  # read by nets only: cast once
        losses, metrics = {}, {}
        for part in (self.decoder.loss(feat, obs), self.cont.loss(feat, batch["is_terminal"]),
                     self.kl(self.rssm.kl, post, prior, pair_fn=self.rssm.kl_pair)):
            losses.update(part[0])
            metrics.update(part[1])
        losses["reward"] = self.reward(feat).loss(batch["reward"]).mean()
        assert losses.keys() == self.scales.keys(), (losses.keys(), self.scales.keys())
        total = sum(self.scales[k] * v for k, v in losses.items())
        metrics.update({f"loss_{k}": v.detach() for k, v in losses.items()})
        return total, post, metrics
