"""The dream: M used as the environment (Ha & Schmidhuber 2018, section 4.4). An episode starts
from the z of a recorded first frame; each step feeds (z, a) to M, samples the next z at
temperature tau, and takes M's reward and done predictions (done when p > 0.5).

`DreamSim` runs N dream episodes as one batch (a whole CMA-ES population at once);
`DreamEnv` is one dream episode behind the env contract (a gymnasium.Env with a `vector`
observation [z, h] and the real env's action space)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from worldzoo.worldmodels.models import WorldModels


class DreamSim:
    """Batched dream rollouts. `start_z` [K, Z]: the z's episodes may start from;
    `temperature` None uses the memory's own."""

    def __init__(self, wm: WorldModels, start_z: torch.Tensor, temperature: float | None,
                 max_steps: int, generator: torch.Generator) -> None:
        self.wm, self.start_z = wm, start_z
        self.temperature, self.max_steps, self.gen = temperature, max_steps, generator

    @torch.no_grad()
    def reset(self, n: int) -> torch.Tensor:
        idx = torch.randint(len(self.start_z), (n,), generator=self.gen)
        self.z = self.start_z[idx]
        self.state = self.wm.memory.initial(n, self.z.device)
        self.t = 0
        return self.wm.feat(self.z, self.state)

    @torch.no_grad()
    def step(self, agent_action: torch.Tensor):
        """(features, reward [N], terminated [N], truncated) after one dream step."""
        self.state = self.wm.memory.step(self.state, self.z, agent_action)
        self.z, reward, done_prob = self.wm.memory.dream(self.state, self.gen, self.temperature)
        self.t += 1
        return (self.wm.feat(self.z, self.state), reward, done_prob > 0.5,
                self.t >= self.max_steps)

    @torch.no_grad()
    def evaluate(self, params: torch.Tensor, rollouts: int) -> tuple[np.ndarray, int]:
        """Mean dream return of each of P parameter vectors over `rollouts` episodes, and the
        dream steps taken (alive episodes only)."""
        P = params.shape[0]
        flat = params.repeat_interleave(rollouts, 0)
        feat = self.reset(P * rollouts)
        alive = torch.ones(P * rollouts, dtype=torch.bool, device=feat.device)
        total = torch.zeros(P * rollouts, device=feat.device)
        steps = 0
        while alive.any():
            agent_action, _ = self.wm.controller.act(flat, feat)
            feat, reward, terminated, truncated = self.step(agent_action)
            steps += int(alive.sum())
            total += reward * alive
            alive &= ~terminated
            if truncated:
                break
        return total.reshape(P, rollouts).mean(1).cpu().numpy(), steps


class DreamEnv(gym.Env):
    """One dream episode behind the env contract: observation {'vector': [z, h]}, the real
    env's action space, reward and done from M, truncation after `max_steps`."""

    metadata = {"render_modes": []}

    def __init__(self, wm: WorldModels, start_z: torch.Tensor, action_space: gym.Space,
                 temperature: float | None = None, max_steps: int = 1000) -> None:
        self.wm = wm
        self.gen = torch.Generator(device=start_z.device)
        self.sim = DreamSim(wm, start_z, temperature, max_steps, self.gen)
        self.action_space = action_space
        self.observation_space = spaces.Dict({"vector": spaces.Box(
            -np.inf, np.inf, (wm.feat_dim,), np.float32)})

    def _obs(self, feat: torch.Tensor) -> dict[str, np.ndarray]:
        return {"vector": feat[0].cpu().numpy().astype(np.float32)}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.gen.manual_seed(int(seed))
        elif not hasattr(self, "_seeded"):
            self.gen.manual_seed(int(self.np_random.integers(2**31)))
        self._seeded = True
        return self._obs(self.sim.reset(1)), {"env_steps": 0}

    def step(self, action):
        agent_action = self.wm.controller.head.to_agent(action).to(self.sim.z.device)
        feat, reward, terminated, truncated = self.sim.step(agent_action)
        # dream steps are not simulator steps: they never count as env steps
        return (self._obs(feat), float(reward[0]), bool(terminated[0]), bool(truncated),
                {"env_steps": 0, "dream_steps": 1})
