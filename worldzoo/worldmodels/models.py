"""V, M and C assembled from a recipe's `vae`, `memory` and `controller` slots, and one
real-env episode with them (used in the main process and in rollout workers)."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from worldzoo.agent import action_spec, space_shapes
from worldzoo.registry import build
from worldzoo.world_model import variant


class WorldModels(nn.Module):
    """V (`vae`), M (`memory`) and C (`controller`, parameters kept outside as a vector).
    C sees [z, features(memory state)]."""

    def __init__(self, cfg: dict, obs_space: gym.spaces.Dict, act_space: gym.Space) -> None:
        super().__init__()
        self.action_dim, self.discrete = action_spec(act_space)
        name, kw = variant(cfg, "vae")
        self.vae = build("vae", name, space_shapes(obs_space), **kw)
        name, kw = variant(cfg, "memory")
        self.memory = build("memory", name, self.vae.z_dim, self.action_dim, **kw)
        name, kw = variant(cfg, "controller")
        self.feat_dim = self.vae.z_dim + self.memory.feat_dim
        self.controller = build("controller", name, self.feat_dim, self.action_dim,
                                self.discrete, **kw)

    @property
    def key(self) -> str:
        return self.vae.key

    def feat(self, z: torch.Tensor, state: dict) -> torch.Tensor:
        return torch.cat([z, self.memory.features(state)], -1)


@dataclass
class Job:
    """One real-env episode: `params` None means uniform random actions."""

    params: np.ndarray | None
    seed: int
    record: bool = False
    noise: float = 0.0


@torch.no_grad()
def run_episode(env: gym.Env, wm: WorldModels, job: Job,
                video: list[np.ndarray] | None = None) -> dict:
    """Play one episode; returns return, length, env_steps and (if `record`) the data:
    obs [T+1, ...], action [T, A] (as M sees it), reward [T], terminal [T]. `video`, if
    given, receives the env's `image` observation of every step (evaluation videos)."""
    rng = np.random.default_rng(job.seed)
    obs, _ = env.reset(seed=job.seed)
    head = wm.controller.head
    params = None if job.params is None else torch.as_tensor(job.params, dtype=torch.float32)[None]
    state = wm.memory.initial(1)
    frames, actions, rewards = [obs[wm.key]], [], []
    total, steps, length, terminal = 0.0, 0, 0, False
    while True:
        if video is not None and "image" in obs:
            video.append(obs["image"])
        if params is None:
            env_action = head.random(1, rng)
        else:
            z = wm.vae.embed(torch.from_numpy(np.array(obs[wm.key]))[None])
            agent_action, env_action = wm.controller.act(params, wm.feat(z, state))
            if job.noise > 0:
                env_action = head.explore(env_action, job.noise, rng)
        agent_action = head.to_agent(env_action)
        if params is not None:
            state = wm.memory.step(state, z, agent_action)
        obs, reward, terminated, truncated, info = env.step(env_action[0])
        total += float(reward)
        steps += int(info.get("env_steps", 1))
        length += 1
        if job.record:
            frames.append(obs[wm.key])
            actions.append(agent_action[0].numpy())
            rewards.append(reward)
        if terminated or truncated:
            terminal = bool(terminated)
            break
    out = {"return": total, "length": length, "env_steps": steps}
    if job.record:
        done = np.zeros(length, np.float32)
        done[-1] = float(terminal)
        out["data"] = {"obs": np.stack(frames), "action": np.stack(actions).astype(np.float32),
                       "reward": np.asarray(rewards, np.float32), "terminal": done}
    return out
