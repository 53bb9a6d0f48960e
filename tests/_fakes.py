"""Observation/action spaces and a fake batch of sequences [B, T] for agent tests."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch


def spaces(obs: str, act: str):
    o = ({"image": gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)} if obs == "pixel" else
         {"vector": gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)})
    a = gym.spaces.Discrete(3) if act == "discrete" else gym.spaces.Box(-1, 1, (2,), np.float32)
    return gym.spaces.Dict(o), a


def fake_batch(obs_space, act_space, b: int = 3, t: int = 6) -> dict:
    out = {}
    for k, s in obs_space.spaces.items():
        out[k] = (torch.randint(0, 256, (b, t, *s.shape), dtype=torch.uint8) if k == "image"
                  else torch.randn(b, t, *s.shape))
    if isinstance(act_space, gym.spaces.Discrete):
        out["action"] = torch.nn.functional.one_hot(torch.randint(0, 3, (b, t)), 3).float()
    else:
        out["action"] = torch.rand(b, t, act_space.shape[0]) * 2 - 1
    out["reward"] = torch.randn(b, t)
    out["is_first"] = torch.zeros(b, t, dtype=torch.bool)
    out["is_first"][:, 0] = True
    out["is_first"][0, 3] = True
    out["is_terminal"] = torch.zeros(b, t, dtype=torch.bool)
    out["is_terminal"][0, 2] = True
    return out


def categorical_rssm(unimix: float, initial: str, act: str = "silu", norm: str = "layer"):
    """A small float32 CategoricalRSSM (embed 6, action 2, 4 x 5 latent, deter 8, hidden 7)
    with non-trivial LayerNorm affines and initial state, from seed 0."""
    from worldzoo.components.rssm import CategoricalRSSM

    torch.manual_seed(0)
    rssm = CategoricalRSSM(embed=6, action=2, stoch=4, classes=5, deter=8, hidden=7, act=act,
                           norm=norm, cell="norm_gru", unimix=unimix, initial=initial,
                           action_clip=1.0)
    with torch.no_grad():
        for name, p in rssm.named_parameters():
            if "norm" in name or name.startswith(("img_in.1", "post_net.1", "init")):
                p.add_(0.3 * torch.randn_like(p))
    return rssm


def trained_params(agent, batches: list[dict], seed: int = 10) -> torch.Tensor:
    """The agent's parameters, flattened, after one train step on each batch (seed + i
    before step i)."""
    for i, b in enumerate(batches):
        torch.manual_seed(seed + i)
        agent.train_step(b)
    return torch.cat([p.detach().flatten() for p in agent.parameters()])
