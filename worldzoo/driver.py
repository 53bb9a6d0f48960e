"""The driver: steps N envs (a gymnasium vector env with next-step autoreset) and turns the
gymnasium 5-tuple into the contract's steps: obs keys, `action` (the action that led to this
step, zeros at `is_first`), `reward`, `is_first`, `is_last`, `is_terminal`.

Faults (see `worldzoo.faults`): an episode that `FaultGuard` ended is counted, not reported as
a finished episode; a vector env that fails as a whole (a worker process died, a reset raised)
is closed and rebuilt with `make_envs`, every env starting a fresh episode."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import gymnasium as gym
import numpy as np

from worldzoo.faults import EnvFaultError, FaultLimit, describe
from worldzoo.world_model import OBS_KEYS


def make_vector_env(env_fns: list[Callable[[], gym.Env]],
                    asynchronous: bool) -> gym.vector.VectorEnv:
    """Sync (one env, or asked) or async (worker processes) vector env, next-step autoreset."""
    mode = gym.vector.AutoresetMode.NEXT_STEP
    if asynchronous and len(env_fns) > 1:
        return gym.vector.AsyncVectorEnv(env_fns, autoreset_mode=mode, context="spawn")
    return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=mode)


def _fault_message(i: int, streak: int, reason: str) -> str:
    return (f"env {i} faulted {streak} episodes in a row (last: {reason}); fix the env or "
            "raise train.max_env_faults")


class Driver:
    """Holds the current contract step of every env and the running episode statistics.

    `envs` is a vector env, or a zero-argument function making one: then a failing vector
    env is rebuilt (up to `max_faults` faults in a row per env)."""

    def __init__(self, envs: gym.vector.VectorEnv | Callable[[], gym.vector.VectorEnv],
                 action_dim: int, discrete: bool, max_faults: int = 10,
                 on_fault: Callable[[int, str], None] | None = None) -> None:
        self.make_envs = None if isinstance(envs, gym.vector.VectorEnv) else envs
        self.envs = envs if self.make_envs is None else self.make_envs()
        self.n = self.envs.num_envs
        self.action_dim, self.discrete = action_dim, discrete
        self.faults = FaultLimit(max_faults, self.n, EnvFaultError, _fault_message)
        self.on_fault = on_fault
        self.last_env_steps = 0
        self.current: dict[str, np.ndarray] = {}
        self.ep_return = np.zeros(self.n)
        self.ep_length = np.zeros(self.n, np.int64)
        self.episode_index: np.ndarray | None = None  # mirror of SeedPerEpisode's counters

    def reset(self) -> dict[str, np.ndarray]:
        obs, _ = self.envs.reset()
        try:
            self.episode_index = np.array(self.envs.get_attr("episode_index"), np.int64)
        except AttributeError:
            self.episode_index = None
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
        """Step every env; returns (new current step, finished episodes as (return, length)).
        Episodes ended by a fault are counted in `faults`, not returned."""
        first = self.current["is_last"] > 0
        try:
            obs, reward, term, trunc, info = self.envs.step(env_action)
        except Exception as err:  # noqa: BLE001 - a worker died or an env failed outside FaultGuard
            if self.make_envs is None:
                raise
            return self._restart(err), []
        if self.episode_index is not None:
            self.episode_index += first
        if "env_steps" in info:  # simulator steps, action repeat included (reset steps: 0)
            self.last_env_steps = int(np.sum(np.where(info["_env_steps"], info["env_steps"], 0)))
        else:
            self.last_env_steps = int(np.sum(~first))
        faulted = np.zeros(self.n, bool)
        if "env_fault" in info:
            faulted = np.asarray(info["_env_fault"], bool) & (info["env_fault"] > 0)
        action = np.where(first[:, None], 0.0, agent_action)
        self.current = self._record(obs, action, reward, first, term | trunc, term)
        self.ep_return = np.where(first, 0.0, self.ep_return) + reward
        self.ep_length = np.where(first, 0, self.ep_length) + (~first).astype(np.int64)
        done = []
        for i in np.flatnonzero(term | trunc):
            if faulted[i]:
                self._fault(int(i), str(info["env_fault_reason"][i]))
            else:
                self.faults.ok(int(i))
                done.append((float(self.ep_return[i]), int(self.ep_length[i])))
        return self.current, done

    def _fault(self, i: int, reason: str) -> None:
        if self.on_fault is not None:
            self.on_fault(i, reason)
        self.faults.fault(i, reason)

    def _restart(self, err: Exception) -> dict[str, np.ndarray]:
        """Count the fault, close the broken vector env, build a fresh one and reset it
        (again, counted, while that fails)."""
        while True:
            dead = self._dead_workers() or list(range(self.n))
            for i in dead:
                self._fault(i, f"vector env failed ({describe(err)}); restarted it")
            try:
                with warnings.catch_warnings():  # "close while waiting for step": it is dead
                    warnings.simplefilter("ignore")
                    self.envs.close(terminate=True)
            except Exception:  # noqa: BLE001 - it is broken already; a new one replaces it
                pass
            self.envs = self.make_envs()
            if self.episode_index is not None:
                self.envs.set_attr("episode_index", [int(i) for i in self.episode_index])
            self.last_env_steps = 0
            try:
                return self.reset()
            except Exception as again:  # noqa: BLE001
                err = again

    def _dead_workers(self, wait: float = 2.0) -> list[int]:
        """Indices of worker processes that exited (waiting briefly for the OS to reap a
        worker whose pipe just closed); [] for a sync vector env."""
        procs = getattr(self.envs, "processes", None) or []
        deadline = time.monotonic() + (wait if procs else 0)
        while True:
            dead = [i for i, p in enumerate(procs) if not p.is_alive()]
            if dead or time.monotonic() >= deadline:
                return dead
            time.sleep(0.02)

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

    def close(self) -> None:
        self.envs.close()
