"""Unity ML-Agents backend: ``unity:path/to/Build.x86_64`` (a built player) or ``unity:editor``.

Over ``mlagents_envs.UnityEnvironment`` (mlagents-envs 0.28.0, the newest release for
Python 3.11; its generated protocol files need ``protobuf==3.20.3``, which the ``unity`` extra
pins). Python is the gRPC server and Unity the client; the server here listens on 127.0.0.1
only (the library's default is every interface) and, for a player, on a free port handed to it
with ``--mlagents-port`` (``port`` fixes one; the Editor uses 5004 unless told).

One gymnasium env follows ONE agent of one behaviour (``behavior``: a name, or None when the
scene has only one): the first agent that asks for a decision. Other agents of the behaviour
get zero actions, and their episode ends are ignored. An episode of the followed agent ends
``terminated`` when Unity ends it and ``truncated`` when Unity interrupts it (max step
reached); the next episode starts when the agent asks for its next decision, without resetting
the scene. One env step is one decision of the followed agent. Observations: ``vector`` = the
rank-1 and rank-2 observations concatenated, ``image`` = the first visual observation
(HxWxC, scaled to uint8, resized to ``size``, grey repeated to RGB). Actions: a continuous
branch is ``Box(-1, 1)``; discrete branches are one ``Discrete`` over their product; hybrid
action specs are refused. Unity is seeded once, at launch (seed 0): ML-Agents has no
per-episode seed.
"""

from __future__ import annotations

import math
import os
import threading
from concurrent.futures import Executor, Future
from pathlib import Path

import gymnasium
import numpy as np
from gymnasium import spaces

from worldzoo.envs import EnvError
from worldzoo.envs.gym import resize

try:
    import grpc
    from mlagents_envs.base_env import ActionTuple
    from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import (
        add_UnityToExternalProtoServicer_to_server,
    )
    from mlagents_envs.environment import UnityEnvironment
    from mlagents_envs.exception import UnityException
    from mlagents_envs.rpc_communicator import (
        RpcCommunicator,
        UnityToExternalServicerImplementation,
    )
    from mlagents_envs.side_channel.engine_configuration_channel import (
        EngineConfigurationChannel,
    )
except TypeError as err:  # protobuf >= 4 refuses the old generated files
    raise ImportError(f"mlagents-envs 0.28.0 needs protobuf==3.20.3 ({err})") from err

DEFAULTS = {"obs": "vector", "size": 64, "action_repeat": 1, "time_limit": None,
            "behavior": None, "time_scale": 20.0, "no_graphics": False, "port": None,
            "timeout": 60}
EDITOR_PORT = 5004
MAX_WAIT_STEPS = 10_000  # Unity steps to wait for the followed agent's next decision


class DaemonExecutor(Executor):
    """Runs each gRPC handler on a daemon thread. Unity's pending ``Exchange`` waits in its
    handler for Python's next message; in a ThreadPoolExecutor that thread is joined at
    interpreter exit BEFORE atexit closes the env, so an unclosed env would hang the exit."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as err:  # handed to the caller through the future
                future.set_exception(err)

        threading.Thread(target=run, daemon=True).start()
        return future


class LoopbackCommunicator(RpcCommunicator):
    """``RpcCommunicator`` whose gRPC server listens on 127.0.0.1 only; port 0 = a free one."""

    def create_server(self) -> None:
        if self.port:
            self.check_port(self.port)
        self.server = grpc.server(thread_pool=DaemonExecutor())
        self.unity_to_external = UnityToExternalServicerImplementation()
        add_UnityToExternalProtoServicer_to_server(self.unity_to_external, self.server)
        bound = self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        if not bound:
            raise EnvError(f"cannot listen on 127.0.0.1:{self.port} for Unity; "
                           "pick another env.port or leave it None")
        self.port = bound
        self.server.start()
        self.is_open = True


class LoopbackUnityEnvironment(UnityEnvironment):
    """``UnityEnvironment`` over :class:`LoopbackCommunicator` (tells the player its port)."""

    def _get_communicator(self, worker_id, base_port, timeout_wait):
        communicator = LoopbackCommunicator(worker_id, base_port, timeout_wait)
        self._port = communicator.port  # read by _executable_args: --mlagents-port
        return communicator


def make(task: str, obs: str, size: int, time_limit: int | None, behavior: str | None,
         time_scale: float, no_graphics: bool, port: int | None,
         timeout: int) -> gymnasium.Env:
    env = UnityEnv(task, obs=obs, size=size, behavior=behavior, time_scale=time_scale,
                   no_graphics=no_graphics, port=port, timeout=timeout)
    if time_limit is not None:
        env = gymnasium.wrappers.TimeLimit(env, max_episode_steps=time_limit)
    return env


def _launch(task: str, no_graphics: bool, port: int | None, timeout: int,
            channel: EngineConfigurationChannel) -> UnityEnvironment:
    editor = task == "editor"
    if not editor and not (Path(task).expanduser().exists() or Path(task + ".x86_64").exists()):
        raise EnvError(f"Unity player '{task}' not found; give the path of a built player "
                       "(e.g. unity:builds/3DBall.x86_64) or unity:editor")
    try:
        return LoopbackUnityEnvironment(
            None if editor else os.path.expanduser(task), worker_id=0,
            base_port=(EDITOR_PORT if editor else 0) if port is None else port,
            seed=0, no_graphics=no_graphics, timeout_wait=timeout, side_channels=[channel])
    except UnityException as err:
        where = "press Play in the Editor" if editor else "check the player starts"
        raise EnvError(f"unity:{task}: no connection ({type(err).__name__}: "
                       f"{str(err).splitlines()[0]}); {where}") from err


class UnityEnv(gymnasium.Env):
    """One agent of one ML-Agents behaviour as a gymnasium env (see the module docstring)."""

    metadata = {"render_modes": ["rgb_array"]}

    def __init__(self, task: str, obs: str = "vector", size: int = 64,
                 behavior: str | None = None, time_scale: float = 20.0,
                 no_graphics: bool = False, port: int | None = None, timeout: int = 60):
        channel = EngineConfigurationChannel()
        channel.set_configuration_parameters(time_scale=time_scale)
        self._env = _launch(task, no_graphics, port, timeout, channel)
        try:
            self._env.reset()  # behaviour specs are complete after the first reset
            self._fresh = True
            self._behavior = self._pick_behavior(behavior)
            spec = self._env.behavior_specs[self._behavior]
            self._setup_spaces(spec, obs, size)
        except BaseException:
            self._env.close()
            raise
        self._agent: int | None = None
        self._ended = False
        self._pending = None  # the followed agent's next first step, seen with its last one
        self._last_image = None

    def _pick_behavior(self, behavior: str | None) -> str:
        names = list(self._env.behavior_specs)
        if behavior is None:
            if len(names) != 1:
                raise EnvError(f"the Unity scene has behaviours {', '.join(names) or '(none)'}; "
                               "pick one with env.behavior=NAME")
            return names[0]
        for name in names:
            if behavior in (name, name.split("?")[0]):
                return name
        raise EnvError(f"env.behavior={behavior!r} is not in the Unity scene; behaviours: "
                       f"{', '.join(names)}")

    def _setup_spaces(self, spec, obs: str, size: int) -> None:
        shapes = [tuple(o.shape) for o in spec.observation_specs]
        self._vec_idx = [i for i, s in enumerate(shapes) if len(s) in (1, 2)]
        self._img_idx = next((i for i, s in enumerate(shapes) if len(s) == 3), None)
        self._size = size
        keys = {}
        if obs in ("vector", "both"):
            if not self._vec_idx:
                raise EnvError(f"behaviour {self._behavior} has no vector observations; "
                               "use env.obs=pixels")
            dim = sum(math.prod(shapes[i]) for i in self._vec_idx)
            keys["vector"] = spaces.Box(-np.inf, np.inf, (dim,), np.float32)
        if obs in ("pixels", "both"):
            if self._img_idx is None:
                raise EnvError(f"behaviour {self._behavior} has no visual observations; "
                               "use env.obs=vector")
            keys["image"] = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.observation_space = spaces.Dict(keys)
        act = spec.action_spec
        if act.continuous_size and act.discrete_size:
            raise EnvError(f"behaviour {self._behavior} has hybrid (continuous + discrete) "
                           "actions; only one kind is supported")
        self._branches = tuple(int(b) for b in act.discrete_branches)
        if act.continuous_size:
            self.action_space = spaces.Box(-1.0, 1.0, (act.continuous_size,), np.float32)
        else:
            self.action_space = spaces.Discrete(math.prod(self._branches))

    # -- observations and actions -----------------------------------------------------------
    def _observe(self, steps, index: int) -> dict[str, np.ndarray]:
        out = {}
        if "vector" in self.observation_space.spaces:
            out["vector"] = np.concatenate(
                [np.asarray(steps.obs[i][index], np.float32).ravel() for i in self._vec_idx])
        if self._img_idx is not None:
            frame = np.asarray(steps.obs[self._img_idx][index], np.float32)
            if frame.shape[-1] == 1:
                frame = np.repeat(frame, 3, -1)
            frame = np.clip(np.round(frame[..., :3] * 255.0), 0, 255).astype(np.uint8)
            self._last_image = resize(frame, self._size)
            if "image" in self.observation_space.spaces:
                out["image"] = self._last_image
        return out

    def _action_tuple(self, action) -> ActionTuple:
        if self._branches:
            index = np.unravel_index(int(action), self._branches)
            return ActionTuple(discrete=np.asarray([index], np.int32))
        cont = np.clip(np.asarray(action, np.float32).reshape(1, -1), -1.0, 1.0)
        return ActionTuple(continuous=cont)

    # -- episodes ---------------------------------------------------------------------------
    def _wait_for_decision(self):
        """Step Unity (zero actions) until the followed agent (or, with none followed, any
        agent) asks for a decision; returns (decision steps, index) and whether it ended."""
        for _ in range(MAX_WAIT_STEPS):
            decision, terminal = self._env.get_steps(self._behavior)
            if self._agent is not None and self._agent in terminal.agent_id_to_index:
                return terminal, terminal.agent_id_to_index[self._agent], True
            if self._agent is None and len(decision):
                self._agent = int(decision.agent_id[0])
            if self._agent is not None and self._agent in decision.agent_id_to_index:
                return decision, decision.agent_id_to_index[self._agent], False
            self._env.step()
        raise EnvError(f"no agent of behaviour {self._behavior} asked for a decision in "
                       f"{MAX_WAIT_STEPS} Unity steps")

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self._pending is not None:  # the followed agent began its next episode already
            steps, index = self._pending
        else:
            if self._fresh:
                self._fresh = False
            elif self._agent is None or not self._ended:
                self._env.reset()  # first episode, or reset in mid-episode: a fresh scene
            else:
                self._env.step()  # the agent's episode ended: wait for its next decision
            previous, self._agent = self._agent, None
            decision, _ = self._env.get_steps(self._behavior)
            if previous is not None and previous in decision.agent_id_to_index:
                self._agent = previous
            steps, index, _ = self._wait_for_decision()
        self._pending, self._ended = None, False
        return self._observe(steps, index), {}

    def step(self, action):
        if self._agent is None:
            raise RuntimeError("call reset() before step()")
        self._env.set_action_for_agent(self._behavior, self._agent, self._action_tuple(action))
        self._env.step()
        steps, index, ended = self._wait_for_decision()
        reward = float(steps.reward[index] + steps.group_reward[index])
        terminated = truncated = False
        if ended:
            self._ended = True
            truncated = bool(steps.interrupted[index])
            terminated = not truncated
            decision, _ = self._env.get_steps(self._behavior)
            if self._agent in decision.agent_id_to_index:  # next episode's first step
                self._pending = (decision, decision.agent_id_to_index[self._agent])
        return self._observe(steps, index), reward, terminated, truncated, {}

    def render(self) -> np.ndarray | None:
        """The followed agent's last visual observation (None without one)."""
        return self._last_image

    def close(self) -> None:
        """Tell Unity to quit, stop the gRPC server, and end the player process."""
        if getattr(self, "_env", None) is not None and self._env._loaded:
            self._env.close()
