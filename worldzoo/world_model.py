"""The world model: encoder -> RSSM (observe) -> decoder, reward and continue heads, KL.
Assembled from the recipe's slot variants; nothing here branches on which one it got."""

from __future__ import annotations

import torch
from torch import nn

from worldzoo.registry import build

Batch = dict[str, torch.Tensor]
OBS_KEYS = ("image", "vector")


def variant(cfg: dict, slot: str) -> tuple[str, dict]:
    """(variant name, kwargs) of a slot in a resolved config."""
    kwargs = dict(cfg[slot])
    return kwargs.pop("name"), kwargs


class WorldModel(nn.Module):
    def __init__(self, cfg: dict, obs_space: dict[str, tuple[int, ...]], action_dim: int) -> None:
        super().__init__()
        name, kw = variant(cfg, "encoder")
        self.encoder = build("encoder", name, obs_space, **kw)
        name, kw = variant(cfg, "rssm")
        self.rssm = build("rssm", name, self.encoder.out_dim, action_dim, **kw)
        feat = self.rssm.feat_dim
        name, kw = variant(cfg, "decoder")
        self.decoder = build("decoder", name, feat, obs_space, **kw)
        name, kw = variant(cfg, "reward")
        self.reward = build("reward", name, feat, **kw)
        name, kw = variant(cfg, "cont")
        self.cont = build("cont", name, feat, **kw)
        name, kw = variant(cfg, "kl")
        self.kl = build("kl", name, **kw)
        self.scales = {**self.decoder.scales, "reward": self.reward.scale,
                       **self.cont.scales, **self.kl.scales}

    def loss(self, batch: Batch):
        """(total loss, posterior states, metrics) for a batch of sequences [B, T]."""
        obs = {k: batch[k] for k in OBS_KEYS if k in batch}
        embed = self.encoder(obs)
        post, prior = self.rssm.observe(embed, batch["action"], batch["is_first"])
        feat = self.rssm.feat(post)
        losses, metrics = {}, {}
        for part in (self.decoder.loss(feat, obs), self.cont.loss(feat, batch["is_terminal"]),
                     self.kl(self.rssm.kl, post, prior)):
            losses.update(part[0])
            metrics.update(part[1])
        losses["reward"] = self.reward(feat).loss(batch["reward"]).mean()
        assert losses.keys() == self.scales.keys(), (losses.keys(), self.scales.keys())
        total = sum(self.scales[k] * v for k, v in losses.items())
        metrics.update({f"loss_{k}": v.detach() for k, v in losses.items()})
        return total, post, metrics
