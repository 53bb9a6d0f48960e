"""The driver: steps N envs (a gymnasium vector env with next-step autoreset) and turns the
gymnasium 5-tuple into the contract's steps: obs keys, `action` (the action that led to this
step, zeros at `is_first`), `reward`, `is_first`, `is_last`, `is_terminal`."""

from __future__ import annotations

from collections.abc import Callable

import gymnasium as gym
import numpy as np

from worldzoo.world_model import OBS_KEYS


def make_vector_env(env_fns: list[Callable[[], gym.Env]],
                    asynchronous: bool) -> gym.vector.VectorEnv:
    """Sync (one env, or asked) or async (worker processes) vector env, next-step autoreset."""
    mode = gym.vector.AutoresetMode.NEXT_STEP
    if asynchronous and len(env_fns) > 1:
        return gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=mode, context="spawn")
    return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=mode)


class Driver:
    """Holds the current contract step of every env and the running episode statistics."""

    def __init__(self, envs: gym.vector.VectorEnv, action_dim: int, discrete: bool) -> None:
        self.envs, self.n = envs, envs.num_envs
        self.action_dim, self.discrete = action_dim, discrete
        self.last_env_steps = 0
        self.current: dict[str, np.ndarray] = {}
        self.ep_return = np.zeros(self.n)
        self.ep_length = np.zeros(self.n, np.int64)

    def reset(self) -> dict[str, np.ndarray]:
        obs, _ = self.envs.reset()
        zeros = np.zeros(self.n, np.float32)
        self.current = self._record(obs, np.zeros((self.n, self.action_dim), np.float32),
                                    zeros, np.ones(self.n, bool), np.zeros(self.n, bool),
                                    np.zeros(self.n, bool))
        self.ep_return[:] = 0
        self.ep_length[:] = 0
        return self.current

    def _record(self, obs, action, reward, first, last, terminal) -> dict[str, np.ndarray]:
        step = {k: obs[k] for k in OBS_KEYS if k in obs}
        step.update(action=action.astype(np.float32), reward=reward.astype(np.float32),
                    is_first=first.astype(np.float32), is_last=last.astype(np.float32),
                    is_terminal=terminal.astype(np.float32))
        return step

    def all_last(self) -> bool:
        return bool(self.current["is_last"].all())

    def step(self, env_action: np.ndarray, agent_action: np.ndarray):
        """Step every env; returns (new current step, finished episodes as (return, length))."""
        first = self.current["is_last"] > 0
        obs, reward, term, trunc, info = self.envs.step(env_action)
        if "env_steps" in info:  # simulator steps, action repeat included (reset steps: 0)
            self.last_env_steps = int(np.sum(np.where(info["_env_steps"], info["env_steps"], 0)))
        else:
            self.last_env_steps = int(np.sum(~first))
        action = np.where(first[:, None], 0.0, agent_action)
        self.current = self._record(obs, action, reward, first, term | trunc, term)
        self.ep_return = np.where(first, 0.0, self.ep_return) + reward
        self.ep_length = np.where(first, 0, self.ep_length) + (~first).astype(np.int64)
        done = []
        for i in np.flatnonzero(term | trunc):
            done.append((float(self.ep_return[i]), int(self.ep_length[i])))
        return self.current, done

    def random_actions(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Uniform random (env action, agent action) for prefill."""
        if self.discrete:
            idx = rng.integers(0, self.action_dim, self.n)
            return idx, np.eye(self.action_dim, dtype=np.float32)[idx]
        act = rng.uniform(-1, 1, (self.n, self.action_dim)).astype(np.float32)
        return act, act

    def zero_actions(self) -> np.ndarray:
        if self.discrete:
            return np.zeros(self.n, np.int64)
        return np.zeros((self.n, self.action_dim), np.float32)
