"""A faulty env wrapper for tests only: injects the faults a run must survive at given steps."""

from __future__ import annotations

import math
import os
from pathlib import Path

import gymnasium as gym
import numpy as np

KINDS = ("raise", "physics", "nan_obs", "inf_obs", "nan_reward", "inf_reward", "exit")


def physics_error(message: str) -> Exception:
    """dm_control's PhysicsError when installed (what an unstable simulation raises)."""
    try:
        from dm_control.rl.control import PhysicsError
    except ImportError:
        return RuntimeError(message)
    return PhysicsError(message)


class FaultyEnv(gym.Wrapper):
    """Injects `schedule[t]` at the env's t-th step (1-based, over its whole life):

    raise      the step raises RuntimeError
    physics    the simulation blows up: dm_control's PhysicsError, raised for real by corrupting
               the MuJoCo state when the env is a dm_control task, else raised directly
    nan_obs    inf_obs: a float observation gets NaN / inf
    nan_reward inf_reward: the reward is NaN / inf
    exit       the process running the env exits (a crashed vector-env worker); fires once,
               remembered by a marker file in `marker_dir`
    """

    def __init__(self, env: gym.Env, schedule: dict[int, str], marker_dir: str | None = None):
        super().__init__(env)
        assert set(schedule.values()) <= set(KINDS)
        self.schedule, self.marker_dir, self.t = dict(schedule), marker_dir, 0

    def step(self, action):
        self.t += 1
        kind = self.schedule.get(self.t)
        if kind == "raise":
            raise RuntimeError("injected env failure")
        if kind == "physics":
            inner = getattr(self.env.unwrapped, "_env", None)
            if inner is not None and hasattr(inner, "physics"):
                inner.physics.data.qpos[:] = 1e30  # the next mj_step flags mjWARN_BADQPOS
            else:
                raise physics_error("Physics state is invalid. Warning(s) raised: "
                                    "mjWARN_BADQACC (injected)")
        if kind == "exit":
            done = Path(self.marker_dir) / f"exited-{self.t}"
            if not done.exists():
                done.write_text(str(os.getpid()))
                os._exit(3)
        obs, reward, terminated, truncated, info = self.env.step(action)
        if kind in ("nan_obs", "inf_obs"):
            key = next(k for k, v in obs.items() if np.asarray(v).dtype.kind == "f")
            obs = dict(obs)
            obs[key] = np.array(obs[key], copy=True)
            obs[key][0] = math.nan if kind == "nan_obs" else math.inf
        if kind in ("nan_reward", "inf_reward"):
            reward = math.nan if kind == "nan_reward" else math.inf
        return obs, reward, terminated, truncated, info


class Wrap:
    """A picklable `wrap_env(env, i)` for the Trainer: FaultyEnv with env i's schedule."""

    def __init__(self, schedules: dict[int, dict[int, str]], marker_dir: str | None = None):
        self.schedules, self.marker_dir = schedules, marker_dir

    def __call__(self, env: gym.Env, i: int) -> gym.Env:
        return FaultyEnv(env, self.schedules.get(i, {}), self.marker_dir)
