"""Actor-critic learning in imagination: roll the prior forward from every posterior state,
compute lambda-returns, and train the actor and critic variants picked by the recipe."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from worldzoo.returns import discount_weights, lambda_return
from worldzoo.world_model import WorldModel, assemble


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """No parameter gradients for `modules` (activations still carry gradient through them)."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class ActorCritic(nn.Module):
    def __init__(self, cfg: dict, feat_dim: int, action_dim: int, discrete: bool) -> None:
        super().__init__()
        self.actor = assemble(cfg, "actor", feat_dim, action_dim, discrete)
        self.critic = assemble(cfg, "critic", feat_dim)
        self.critic_target = assemble(cfg, "critic_target", self.critic)
        self.return_norm = assemble(cfg, "return_norm")
        train = cfg["train"]
        self.horizon, self.gamma, self.lam = train["horizon"], train["gamma"], train["lam"]

    def imagine(self, wm: WorldModel, start: dict[str, torch.Tensor]):
        """Feature and action sequences [H+1, N, ...] from N start states. The actor sees
        stop-gradient features; gradients reach it through the dynamics when it needs them."""
        state = start
        feat = wm.rssm.feat(state)
        feats, actions = [feat], []
        for _ in range(self.horizon):
            action = self.actor(feat.detach()).sample()
            state = wm.rssm.img_step(state, action)
            feat = wm.rssm.feat(state)
            feats.append(feat)
            actions.append(action)
        actions.append(torch.zeros_like(actions[-1]))
        return torch.stack(feats), torch.stack(actions)

    def loss(self, wm: WorldModel, post: dict[str, torch.Tensor], is_terminal: torch.Tensor):
        """(actor loss, critic loss, metrics) from imagination starting at every posterior."""
        start = {k: v.detach().reshape(-1, *v.shape[2:]) for k, v in post.items()}
        start_cont = 1.0 - is_terminal.reshape(-1).float()
        with frozen(wm, self.critic), torch.set_grad_enabled(self.actor.backprop):
            feat, action = self.imagine(wm, start)
            reward = wm.reward(feat).mean
            disc = self.gamma * wm.cont(feat)
            value = self.critic_target.value(feat)
            ret = lambda_return(reward, value, disc, self.lam)
        weight = discount_weights(disc, start_cont).detach()
        scale = self.return_norm(ret)
        actor_losses, metrics = self.actor.loss(feat[:-1], action[:-1], ret, value[:-1].detach(),
                                                weight, scale)
        dist = self.critic(feat[:-1].detach())
        critic_terms = {"critic": dist.loss(ret.detach())}
        reg, _ = self.critic_target.loss(feat[:-1].detach(), dist)
        critic_terms.update(reg)
        scales = {"critic": 1.0, **self.critic_target.scales}
        assert critic_terms.keys() == scales.keys()
        critic_loss = sum(scales[k] * (weight * v).mean() for k, v in critic_terms.items())
        metrics.update({
            "imag_return": ret.mean().detach(), "imag_reward": reward.mean().detach(),
            "return_scale": scale.detach(), "loss_actor": actor_losses["actor"].detach(),
            **{f"loss_{k}": (weight * v).mean().detach() for k, v in critic_terms.items()},
        })
        return actor_losses["actor"], critic_loss, metrics
