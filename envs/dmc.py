"""DeepMind Control Suite backend: ``dmc:domain-task`` adapted to the worldzoo env contract."""

from __future__ import annotations

import difflib
import os

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede dm_control imports

import gymnasium  # noqa: E402
import numpy as np  # noqa: E402
from dm_control import suite  # noqa: E402
from dm_control.mujoco import engine  # noqa: E402
from gymnasium import spaces  # noqa: E402

from worldzoo.envs import EnvError  # noqa: E402

DEFAULTS = {"obs": "vector", "size": 64, "action_repeat": 2, "time_limit": 1000,
            "camera": None, "shadows": False}
# Shadows and reflections off: ~3-5x faster frames at 64x64 on a CPU (Mesa llvmpipe).
_NO_SHADOWS = {"shadow": False, "reflection": False}


def task_names() -> list[str]:
    return [f"{domain}-{task}" for domain, task in suite.ALL_TASKS]


def has_task(task: str) -> bool:
    return task in task_names()


def split_task(task: str) -> tuple[str, str]:
    """``'ball_in_cup-catch'`` -> ``('ball_in_cup', 'catch')``, checked against the suite."""
    for domain, name in suite.ALL_TASKS:
        if task == f"{domain}-{name}":
            return domain, name
    domain = task.split("-", 1)[0]
    same = sorted(n for d, n in suite.ALL_TASKS if d == domain)
    if same:
        hint = f"; {domain} tasks: {', '.join(same)}"
    else:
        close = difflib.get_close_matches(task, task_names(), n=3)
        hint = f"; did you mean {', '.join('dmc:' + c for c in close)}?" if close else (
            f"; domains: {', '.join(sorted({d for d, _ in suite.ALL_TASKS}))}")
    raise EnvError(f"unknown dm_control task '{task}' (write domain-task){hint}")


def make(task: str, obs: str, size: int, time_limit: int | None, camera: int | str | None,
         shadows: bool) -> gymnasium.Env:
    """The adapter with a time limit in env steps (dm_control's own limit is switched off)."""
    env = DMCEnv(task, obs=obs, size=size, camera=camera, shadows=shadows)
    if time_limit is not None:
        env = gymnasium.wrappers.TimeLimit(env, max_episode_steps=time_limit)
    return env


class DMCEnv(gymnasium.Env):
    """One dm_control suite task as a gymnasium env with dict observations, [-1, 1] actions.

    ``terminated`` when the task ends with discount 0; this env itself never truncates
    (``make`` adds the time limit), so one env step is one dm_control control step.
    """

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, task: str, obs: str = "vector", size: int = 64,
                 camera: int | str | None = None, shadows: bool = False):
        domain, name = split_task(task)
        self._env = suite.load(domain, name, task_kwargs={"time_limit": float("inf")})
        self._size = size
        self._camera_id = camera if camera is not None else (2 if domain == "quadruped" else 0)
        ncam = self._env.physics.model.ncam
        if isinstance(self._camera_id, str):
            names = [self._env.physics.model.id2name(i, "camera") for i in range(ncam)]
            if self._camera_id not in names:
                raise EnvError(f"camera={self._camera_id!r} is not a camera of dmc:{task}; "
                               f"cameras: {', '.join(names)}")
            self._camera_id = names.index(self._camera_id)
        if self._camera_id >= ncam:
            raise EnvError(f"camera={self._camera_id} is out of range for dmc:{task}; "
                           f"it has cameras 0..{ncam - 1}")
        visual = self._env.physics.model.vis.global_  # offscreen buffer must fit the frame
        visual.offwidth, visual.offheight = max(visual.offwidth, size), max(visual.offheight, size)
        self._flags = None if shadows else _NO_SHADOWS
        self._camera = None  # built on first render: one GL context per env, reused
        self._obs = obs
        keys = {}
        if obs in ("vector", "both"):
            dim = sum(int(np.prod(s.shape)) for s in self._env.observation_spec().values())
            keys["vector"] = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        if obs in ("pixels", "both"):
            keys["image"] = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.observation_space = spaces.Dict(keys)
        spec = self._env.action_spec()
        self._low, self._high = spec.minimum.astype(np.float64), spec.maximum.astype(np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, spec.shape, np.float32)

    def _observe(self, time_step) -> dict[str, np.ndarray]:
        out = {}
        if "vector" in self.observation_space.spaces:
            out["vector"] = np.concatenate([np.asarray(v, np.float32).ravel()
                                            for v in time_step.observation.values()])
        if "image" in self.observation_space.spaces:
            out["image"] = self.render()
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:  # dm_control draws initial states from the task's RandomState
            self._env.task.random.seed(int(self.np_random.integers(2**32)))
        return self._observe(self._env.reset()), {}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float64), -1.0, 1.0)
        action = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        time_step = self._env.step(action)
        terminated = bool(time_step.last() and time_step.discount == 0)
        truncated = bool(time_step.last() and not terminated)
        reward = float(time_step.reward or 0.0)
        return self._observe(time_step), reward, terminated, truncated, {}

    def render(self) -> np.ndarray:
        """The task camera as size x size uint8 RGB (shadows and reflections off by default)."""
        if self._camera is None:
            self._camera = engine.Camera(self._env.physics, self._size, self._size,
                                         self._camera_id)
        return self._camera.render(render_flag_overrides=self._flags).copy()

    def close(self) -> None:
        if self._camera is not None:
            self._camera._scene.free()  # as dm_control's Physics.render does after each frame
            self._camera = None
        self._env.close()
