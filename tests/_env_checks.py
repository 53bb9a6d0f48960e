"""Shared checks for the env-backend tests: the contract of one env, a short training run."""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

import worldzoo

KEYS = {"vector": ["vector"], "pixels": ["image"], "both": ["image", "vector"]}


def check_contract(env: gymnasium.Env, obs: str = "vector", size: int = 64,
                   env_steps: int = 1, steps: int = 3) -> dict:
    """Dict obs with the right keys and dtypes, [-1, 1] Box or Discrete actions, python
    float reward and bool flags, ``info['env_steps']``; returns the last observation."""
    assert isinstance(env, gymnasium.Env) and isinstance(env.observation_space, spaces.Dict)
    assert sorted(env.observation_space.spaces) == KEYS[obs]
    if "vector" in env.observation_space.spaces:
        box = env.observation_space["vector"]
        assert box.dtype == np.float32 and len(box.shape) == 1
    if "image" in env.observation_space.spaces:
        assert env.observation_space["image"] == spaces.Box(0, 255, (size, size, 3), np.uint8)
    act = env.action_space
    assert isinstance(act, spaces.Discrete) or (
        act.dtype == np.float32 and len(act.shape) == 1 and
        np.all(act.low == -1) and np.all(act.high == 1))
    ob, info = env.reset()
    assert ob in env.observation_space and info["env_steps"] == 0
    for _ in range(steps):
        ob, reward, terminated, truncated, info = env.step(act.sample())
        assert ob in env.observation_space and isinstance(reward, float)
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        assert info["env_steps"] == env_steps
        if terminated or truncated:
            env.reset()
    return ob


def train(tmp_path, env_id: str, sets: tuple[str, ...] = (), steps: int = 300):
    """A few hundred env steps of DreamerV1 (debug preset): prefill, updates, one eval."""
    res = worldzoo.run("dreamerv1", env_id, preset="debug", steps=steps, seed=0,
                       results=tmp_path, quiet=True, sets=list(sets))
    m = res.metrics
    assert res.result["env_steps"] >= steps
    assert m["updates"]["values"][-1] > 0 and "eval_return" in m
    assert np.isfinite(m["loss_kl"]["values"]).all()
    return res
