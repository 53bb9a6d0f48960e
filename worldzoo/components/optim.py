"""Optimisers (slot `optim`): one optimiser per module group (model, actor, critic), each with
its own learning rate. `adam` with global-norm gradient clipping (V1/V2/V3 2023)."""

from __future__ import annotations

import torch
from torch import nn

from worldzoo.registry import define_slot, register

define_slot("optim", "optimiser: adam + global-norm clipping (V1-V3 2023)")


@register("optim", "adam")
class AdamOptim:
    """Adam per group; `clip` is the global gradient norm limit (0 disables it)."""

    def __init__(self, groups: dict[str, nn.Module], model_lr: float = 6e-4,
                 actor_lr: float = 8e-5, critic_lr: float = 8e-5, eps: float = 1e-7,
                 weight_decay: float = 0.0, clip: float = 100.0) -> None:
        lrs = {"model": model_lr, "actor": actor_lr, "critic": critic_lr}
        self.clip = clip
        self.params = {k: [p for p in m.parameters() if p.requires_grad]
                       for k, m in groups.items()}
        self.opts = {k: torch.optim.Adam(self.params[k], lr=lrs[k], eps=eps,
                                         weight_decay=weight_decay) for k in groups}

    def step(self, name: str, loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """Backpropagate `loss` into group `name`, clip, step; returns the gradient norm."""
        opt = self.opts[name]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(
            self.params[name], self.clip if self.clip > 0 else float("inf"))
        opt.step()
        return {f"{name}_grad_norm": norm.detach()}

    def state_dict(self) -> dict:
        return {k: o.state_dict() for k, o in self.opts.items()}

    def load_state_dict(self, state: dict) -> None:
        for k, o in self.opts.items():
            o.load_state_dict(state[k])
