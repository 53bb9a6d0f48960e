"""Gymnasium backend: any registered gymnasium id, adapted to the worldzoo env contract.

Gymnasium's MuJoCo ids (``gym:Walker2d-v5``) need the ``mujoco`` extra; the Gymnasium-Robotics
ids (``gym:FetchReach-v4``, Shadow Hand, Adroit, Franka kitchen, point/ant mazes) are
registered when ``gymnasium_robotics`` is installed (the ``robotics`` extra). Dict
observations, like the goal-conditioned ``observation``/``achieved_goal``/``desired_goal``,
are flattened into ``vector``; ``goal_keys=True`` also keeps each entry under its own name.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.util
import io
import os
import warnings

os.environ.setdefault("MUJOCO_GL", "egl")  # headless MuJoCo rendering (gym:Walker2d-v5 pixels)

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from worldzoo.envs import EnvError  # noqa: E402

DEFAULTS = {"obs": "vector", "size": 64, "action_repeat": 1, "time_limit": None,
            "goal_keys": False}


_robotics = {"tried": False}


def _register_robotics() -> None:
    """Register the Gymnasium-Robotics ids once, if that package is installed."""
    if _robotics["tried"]:
        return
    _robotics["tried"] = True
    if importlib.util.find_spec("gymnasium_robotics") is not None:
        # its import prints a notice about Adroit v1 rewards on every run: keep it quiet
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            import gymnasium_robotics
        gymnasium.register_envs(gymnasium_robotics)


def has_task(task: str) -> bool:
    if task not in gymnasium.registry:
        _register_robotics()
    return task in gymnasium.registry


def task_names() -> list[str]:
    _register_robotics()
    return list(gymnasium.registry)


def make(task: str, obs: str, size: int, time_limit: int | None,
         goal_keys: bool) -> gymnasium.Env:
    """``gymnasium.make`` (its own time limit unless ``time_limit`` is given) + the adapter."""
    if not has_task(task):
        close = difflib.get_close_matches(task, task_names(), n=3)
        hint = f"; did you mean {', '.join('gym:' + c for c in close)}?" if close else ""
        raise EnvError(f"unknown gymnasium id '{task}'{hint}")
    render_mode = None if obs == "vector" else "rgb_array"
    try:
        env = gymnasium.make(task, max_episode_steps=time_limit, render_mode=render_mode)
    except gymnasium.error.DependencyNotInstalled as err:
        raise EnvError(f"gym:{task} needs a dependency that is not installed: {err}") from err
    except gymnasium.error.Error as err:
        raise EnvError(f"gym:{task} cannot be made with obs={obs!r}: {err}") from err
    return GymAdapter(env, obs, size, goal_keys)


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """Resize an HxWx3 uint8 frame to size x size (PIL bilinear, else numpy nearest)."""
    if image.shape[:2] == (size, size):
        return image
    try:
        from PIL import Image
    except ImportError:
        rows = (np.arange(size) * image.shape[0] / size).astype(int)
        cols = (np.arange(size) * image.shape[1] / size).astype(int)
        return image[rows][:, cols]
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


class GymAdapter(gymnasium.Wrapper, gymnasium.utils.RecordConstructorArgs):
    """Dict observations (``vector`` and/or ``image``) and [-1, 1] Box or Discrete actions;
    with ``goal_keys`` also each entry of a dict observation under its own name."""

    def __init__(self, env: gymnasium.Env, obs: str = "vector", size: int = 64,
                 goal_keys: bool = False):
        gymnasium.utils.RecordConstructorArgs.__init__(self, obs=obs, size=size,
                                                       goal_keys=goal_keys)
        super().__init__(env)
        self._obs, self._size = obs, size
        native_obs, native_act = env.observation_space, env.action_space
        keys = {}
        if obs in ("vector", "both"):
            flat = spaces.flatten_space(native_obs)
            keys["vector"] = spaces.Box(flat.low.astype(np.float32), flat.high.astype(np.float32),
                                        dtype=np.float32)
        self._named = []
        if goal_keys:
            if not isinstance(native_obs, spaces.Dict):
                raise EnvError(f"goal_keys=True needs a dict observation space (e.g. a "
                               f"Gymnasium-Robotics goal env); this env has "
                               f"{type(native_obs).__name__}")
            for name, space in native_obs.spaces.items():
                if name in ("vector", "image"):
                    continue
                box = spaces.flatten_space(space)
                keys[name] = spaces.Box(box.low.astype(np.float32), box.high.astype(np.float32),
                                        dtype=np.float32)
                self._named.append(name)
        if obs in ("pixels", "both"):
            keys["image"] = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.observation_space = spaces.Dict(keys)
        if isinstance(native_act, spaces.Box):
            if not (np.all(np.isfinite(native_act.low)) and np.all(np.isfinite(native_act.high))):
                raise EnvError(f"gym env {env.spec.id if env.spec else env} has an unbounded Box "
                               "action space; only bounded Box or Discrete actions are supported")
            self.action_space = spaces.Box(-1.0, 1.0, (int(np.prod(native_act.shape)),),
                                           np.float32)
        elif isinstance(native_act, spaces.Discrete):
            self.action_space = spaces.Discrete(int(native_act.n))
        else:
            raise EnvError(f"gym env {env.spec.id if env.spec else env} has a "
                           f"{type(native_act).__name__} action space; only Box and Discrete "
                           "are supported")

    def _observe(self, native) -> dict[str, np.ndarray]:
        out = {}
        if "vector" in self.observation_space.spaces:
            out["vector"] = np.asarray(
                spaces.flatten(self.env.observation_space, native), np.float32)
        for name in self._named:
            out[name] = np.asarray(
                spaces.flatten(self.env.observation_space[name], native[name]), np.float32)
        if "image" in self.observation_space.spaces:
            frame = self.env.render()
            if frame is None:
                raise EnvError("gym env returned no frame from render(); use obs='vector'")
            out["image"] = resize(np.asarray(frame, np.uint8)[..., :3], self._size)
        return out

    def _native_action(self, action):
        native = self.env.action_space
        if isinstance(native, spaces.Discrete):
            return int(action) + int(native.start)
        action = np.clip(np.asarray(action, np.float64).reshape(native.shape), -1.0, 1.0)
        scaled = native.low + (action + 1.0) * 0.5 * (native.high - native.low)
        return scaled.astype(native.dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return self._observe(obs), info

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(self._native_action(action))
        return self._observe(obs), float(reward), bool(terminated), bool(truncated), info
