"""Actor-critic learning in imagination: roll the prior forward from every posterior state,
compute lambda-returns, and train the actor and critic variants picked by the recipe."""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from worldzoo.nets import compute_dtype
from worldzoo.returns import discount_weights, lambda_return
from worldzoo.world_model import WorldModel, assemble

Trajectory = dict[str, torch.Tensor]


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

    def imagine(self, wm: WorldModel, start: dict[str, torch.Tensor]) -> Trajectory:
        """Imagined trajectory from N start states: `feat` and `action` [H+1, N, ...] (the last
        action is zeros) and `actor_raw` [H, N, ...], the actor's outputs on stop-gradient
        features, kept with their graph so the actor loss does not run the actor again.
        Gradients reach the actor through the dynamics only when its loss needs them."""
        backprop = self.actor.backprop
        state = start
        feat = compute_dtype(wm.rssm.feat(state))  # only nets read it: cast once, not per net
        # where the RSSM offers it (no gradient through the dynamics): every step's features
        # written into one buffer (RSSM.feat_buffer), not concatenated and stacked
        buffer = None if backprop else wm.rssm.feat_buffer(start, self.horizon)
        if buffer is not None:
            buffer[0].copy_(feat)  # (before any view of it is saved)
            feat = buffer[0]
        feats, actions, raws = [feat], [], []
        for t in range(self.horizon):
            raw = self.actor.net(feat.detach())
            action = self.actor.dist(raw).sample()
            if buffer is not None:
                state = wm.rssm.img_step(state, action.detach(), out=buffer[t + 1])
                feat = buffer[t + 1]
            else:
                state = wm.rssm.img_step(state, action if backprop else action.detach())
                feat = compute_dtype(wm.rssm.feat(state))
            feats.append(feat)
            actions.append(action)
            raws.append(raw)
        actions.append(torch.zeros_like(actions[-1]))
        return {"feat": torch.stack(feats) if buffer is None else buffer,
                "action": torch.stack(actions), "actor_raw": torch.stack(raws)}

    def rollout(self, wm: WorldModel, post: dict[str, torch.Tensor],
                is_terminal: torch.Tensor) -> Trajectory:
        """Imagination from every posterior state [B, T] plus what both losses need: reward,
        discount, value, lambda-return `ret` and step `weight`, and the critic's raw outputs."""
        start = {k: v.detach().reshape(-1, *v.shape[2:]) for k, v in post.items()}
        start_cont = 1.0 - is_terminal.reshape(-1).float()
        with frozen(wm):
            traj = self.imagine(wm, start)
            feat = traj["feat"]
            traj["reward"] = wm.reward(feat).mean
            traj["disc"] = self.gamma * wm.cont(feat)
        if self.actor.backprop:  # values carry gradient through the dynamics: a frozen critic
            with frozen(self.critic):
                traj["value"] = self.critic_target.value(feat)
            traj["critic_raw"] = self.critic.net(feat[:-1].detach())
        else:  # one critic pass serves the returns (detached) and the critic loss
            raw = self.critic.net(feat.detach())
            traj["value"] = self.critic_target.value(feat, self.critic.dist(raw)).detach()
            traj["critic_raw"] = raw[:-1]
        traj["ret"] = lambda_return(traj["reward"], traj["value"], traj["disc"], self.lam)
        traj["weight"] = discount_weights(traj["disc"], start_cont).detach()
        return traj

    def actor_loss(self, traj: Trajectory) -> tuple[torch.Tensor, dict]:
        ret, value = traj["ret"], traj["value"]
        scale = self.return_norm(ret)
        dist = self.actor.dist(traj["actor_raw"])
        losses, metrics = self.actor.loss(traj["feat"][:-1], traj["action"][:-1], ret,
                                          value[:-1].detach(), traj["weight"], scale, dist)
        metrics.update({
            "imag_return": ret.mean().detach(), "imag_reward": traj["reward"].mean().detach(),
            "return_scale": scale.detach(), "loss_actor": losses["actor"].detach(),
        })
        return losses["actor"], metrics

    def critic_loss(self, traj: Trajectory) -> tuple[torch.Tensor, dict]:
        dist = self.critic.dist(traj["critic_raw"])
        weight = traj["weight"]
        terms = {"critic": dist.loss(traj["ret"].detach())}
        reg, _ = self.critic_target.loss(traj["feat"][:-1].detach(), dist)
        terms.update(reg)
        scales = {"critic": 1.0, **self.critic_target.scales}
        assert terms.keys() == scales.keys()
        loss = sum(scales[k] * (weight * v).mean() for k, v in terms.items())
        return loss, {f"loss_{k}": (weight * v).mean().detach() for k, v in terms.items()}

    def loss(self, wm: WorldModel, post: dict[str, torch.Tensor], is_terminal: torch.Tensor):
        """(actor loss, critic loss, metrics) from imagination starting at every posterior."""
        traj = self.rollout(wm, post, is_terminal)
        actor_loss, metrics = self.actor_loss(traj)
        critic_loss, critic_metrics = self.critic_loss(traj)
        return actor_loss, critic_loss, {**metrics, **critic_metrics}
