"""MuJoCo backend: ``mujoco:path/to/model.xml`` (MJCF) or ``.mjb`` with the ``mujoco`` bindings.

Observations: ``vector`` = qpos, qvel and sensordata (when the model has sensors); ``image`` =
a rendered camera (``camera``: a model camera name or index, or ``'track'``, a free camera
following the first body). One env step is ``frame_skip`` physics steps. Reward, termination
and reset are the defaults below unless given as ``'module:function'``:

- ``reward(model, data, action) -> float`` after the step (``action`` in the actuators'
  native ranges). Default: forward velocity of the centre of mass along +x over the step minus
  ``0.001 * sum(ctrl**2)`` (the gymnasium locomotion shape).
- ``terminate(model, data) -> bool`` after the step. Default: only when the state is not finite
  (the simulation diverged); episodes otherwise end at ``time_limit``.
- ``reset(model, data, rng) -> None`` sets ``data`` in place after ``mj_resetData`` (and the
  first keyframe, if any); ``rng`` is the env's seeded ``numpy.random.Generator``. Default:
  qpos and qvel plus uniform noise in [-0.01, 0.01].
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")  # headless rendering; must precede the first render

import gymnasium  # noqa: E402
import mujoco  # noqa: E402
import numpy as np  # noqa: E402
from gymnasium import spaces  # noqa: E402

from worldzoo.envs import EnvError  # noqa: E402

DEFAULTS = {"obs": "vector", "size": 64, "action_repeat": 1, "time_limit": 1000,
            "camera": None, "frame_skip": 4, "reward": None, "terminate": None, "reset": None}
ASSETS = Path(__file__).parent / "assets"
RESET_NOISE = 0.01
CTRL_COST = 1e-3


def task_names() -> list[str]:
    """The models shipped with worldzoo (``mujoco:crawler``); any path works too."""
    return sorted(p.stem for p in ASSETS.glob("*.xml"))


def has_task(task: str) -> bool:
    return task in task_names()


def load_model(task: str) -> mujoco.MjModel:
    """An MjModel from an .xml/.mjb path or the name of a shipped model."""
    path = ASSETS / f"{task}.xml" if has_task(task) else Path(task).expanduser()
    if not path.is_file():
        raise EnvError(f"mujoco model file '{task}' not found; give a path to an MJCF .xml or "
                       f"compiled .mjb file, or a shipped model: {', '.join(task_names())}")
    try:
        if path.suffix.lower() == ".mjb":
            return mujoco.MjModel.from_binary_path(str(path))
        return mujoco.MjModel.from_xml_path(str(path))
    except Exception as err:  # mujoco raises ValueError with the compiler's message
        raise EnvError(f"mujoco could not load '{path}': {err}") from err


def load_callable(ref: str | None, option: str) -> Callable | None:
    """``'package.module:function'`` -> the function (None stays None)."""
    if ref is None:
        return None
    module_name, name = ref.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise EnvError(f"env.{option}={ref!r}: cannot import module '{module_name}' ({err})") \
            from err
    fn = getattr(module, name, None)
    if not callable(fn):
        raise EnvError(f"env.{option}={ref!r}: module '{module_name}' has no function '{name}'")
    return fn


def make(task: str, obs: str, size: int, time_limit: int | None, camera: int | str | None,
         frame_skip: int, reward: str | None, terminate: str | None,
         reset: str | None) -> gymnasium.Env:
    env = MujocoEnv(load_model(task), obs=obs, size=size, camera=camera, frame_skip=frame_skip,
                    reward_fn=load_callable(reward, "reward"),
                    terminate_fn=load_callable(terminate, "terminate"),
                    reset_fn=load_callable(reset, "reset"))
    if time_limit is not None:
        env = gymnasium.wrappers.TimeLimit(env, max_episode_steps=time_limit)
    return env


def com_x(model: mujoco.MjModel, data: mujoco.MjData) -> float:
    """x of the whole model's centre of mass (valid after mj_forward)."""
    return float(data.subtree_com[0, 0])


class MujocoEnv(gymnasium.Env):
    """A MuJoCo model as a gymnasium env with dict observations and [-1, 1] actions."""

    metadata = {"render_modes": ["rgb_array"]}
    render_mode = "rgb_array"

    def __init__(self, model: mujoco.MjModel, obs: str = "vector", size: int = 64,
                 camera: int | str | None = None, frame_skip: int = 4,
                 reward_fn: Callable | None = None, terminate_fn: Callable | None = None,
                 reset_fn: Callable | None = None):
        if model.nu == 0:
            raise EnvError("the mujoco model has no actuators, so there is nothing to act on; "
                           "add an <actuator> section")
        self.model, self.data = model, mujoco.MjData(model)
        self.frame_skip, self._size, self._obs = frame_skip, size, obs
        self.reward_fn, self.terminate_fn, self.reset_fn = reward_fn, terminate_fn, reset_fn
        self._camera = self._pick_camera(camera)
        self._renderer = None  # built on first render: one GL context per env, reused
        low, high = model.actuator_ctrlrange.T.astype(np.float64)
        limited = model.actuator_ctrllimited.astype(bool)
        self._low, self._high = np.where(limited, low, -1.0), np.where(limited, high, 1.0)
        self.action_space = spaces.Box(-1.0, 1.0, (model.nu,), np.float32)
        keys = {}
        if obs in ("vector", "both"):
            dim = model.nq + model.nv + model.nsensordata
            keys["vector"] = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        if obs in ("pixels", "both"):
            keys["image"] = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.observation_space = spaces.Dict(keys)

    def _pick_camera(self, camera: int | str | None) -> int | mujoco.MjvCamera:
        model = self.model
        names = [mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_CAMERA, i) for i in range(model.ncam)]
        if camera is None:
            camera = 0 if model.ncam else "track"
        if camera == "track":
            cam = mujoco.MjvCamera()
            mujoco.mjv_defaultFreeCamera(model, cam)
            cam.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            cam.trackbodyid = 1 if model.nbody > 1 else 0
            cam.distance = 2.0 * float(model.stat.extent)
            cam.elevation = -20.0
            return cam
        if isinstance(camera, str):
            if camera not in names:
                raise EnvError(f"camera={camera!r} is not a camera of this model; cameras: "
                               f"{', '.join(n or '(unnamed)' for n in names) or 'none'}, "
                               "or 'track'")
            return names.index(camera)
        if camera >= model.ncam:
            raise EnvError(f"camera={camera} is out of range; the model has {model.ncam} "
                           "camera(s); use a name, an index or 'track'")
        return camera

    def _observe(self) -> dict[str, np.ndarray]:
        out = {}
        if "vector" in self.observation_space.spaces:
            d = self.data
            out["vector"] = np.concatenate([d.qpos, d.qvel, d.sensordata]).astype(np.float32)
        if "image" in self.observation_space.spaces:
            out["image"] = self.render()
        return out

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        model, data = self.model, self.data
        mujoco.mj_resetData(model, data)
        if model.nkey:
            mujoco.mj_resetDataKeyframe(model, data, 0)
        if self.reset_fn is None:
            data.qpos[:] += self.np_random.uniform(-RESET_NOISE, RESET_NOISE, model.nq)
            data.qvel[:] += self.np_random.uniform(-RESET_NOISE, RESET_NOISE, model.nv)
        else:
            self.reset_fn(model, data, self.np_random)
        mujoco.mj_forward(model, data)
        return self._observe(), {}

    def step(self, action):
        model, data = self.model, self.data
        action = np.clip(np.asarray(action, np.float64).reshape(model.nu), -1.0, 1.0)
        ctrl = self._low + (action + 1.0) * 0.5 * (self._high - self._low)
        x_before = com_x(model, data)
        data.ctrl[:] = ctrl
        mujoco.mj_step(model, data, nstep=self.frame_skip)
        mujoco.mj_forward(model, data)  # positions, com and sensors of the new state
        diverged = not (np.all(np.isfinite(data.qpos)) and np.all(np.isfinite(data.qvel)))
        if self.reward_fn is None:
            velocity = (com_x(model, data) - x_before) / (self.frame_skip * model.opt.timestep)
            reward = velocity - CTRL_COST * float(np.sum(np.square(ctrl)))
        else:
            reward = float(self.reward_fn(model, data, ctrl))
        terminated = diverged or (self.terminate_fn is not None
                                  and bool(self.terminate_fn(model, data)))
        if diverged:
            reward = 0.0
        return self._observe(), float(reward), bool(terminated), False, {}

    def render(self) -> np.ndarray:
        """The chosen camera as size x size uint8 RGB."""
        if self._renderer is None:
            visual = self.model.vis.global_  # the offscreen buffer must fit the frame
            visual.offwidth = max(visual.offwidth, self._size)
            visual.offheight = max(visual.offheight, self._size)
            self._renderer = mujoco.Renderer(self.model, self._size, self._size)
        self._renderer.update_scene(self.data, camera=self._camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None
