"""Faults a run survives, in one place: an env step that raises (dm_control's PhysicsError,
MuJoCo instability) or returns NaN/inf ends that episode (`FaultGuard`, inside each env); a
crashed vector-env worker is restarted (`Driver`, which uses `FaultLimit`); a non-finite loss or
gradient skips that update (`UpdateGuard`). Each is counted; only when one source faults
`limit` times in a row does the run stop, with a `RunStoppedError` saying why, keeping its last
good checkpoint."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable

import gymnasium as gym
import numpy as np
import torch


class RunStoppedError(RuntimeError):
    """A run stopped on purpose because faults kept repeating; its last checkpoint is kept."""


class EnvFaultError(RunStoppedError):
    """An env faulted too many episodes in a row."""


class TrainingFaultError(RunStoppedError):
    """Too many updates in a row had a non-finite loss or gradient."""


def describe(err: BaseException) -> str:
    """`Type: first line of the message` (short, for logs and error lines)."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def nonfinite(obs: dict | np.ndarray, reward: float = 0.0) -> str | None:
    """Which part of a step is NaN or inf (None when all is finite)."""
    if not math.isfinite(float(reward)):
        return f"reward is {reward}"
    items = obs.items() if isinstance(obs, dict) else [("obs", obs)]
    for key, value in items:
        arr = np.asarray(value)
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            return f"observation '{key}' has NaN/inf"
    return None


class FaultGuard(gym.Wrapper):
    """Turns a failing step into the end of the episode instead of the end of the run.

    A step that raises, or returns a NaN/inf observation or reward, returns the last good
    observation with reward 0 and `truncated=True` (the vector env's autoreset starts a fresh
    episode) and `info['env_fault'] = 1`, `info['env_fault_reason']`. A reset that fails
    raises: the driver then restarts the env.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self._last_obs = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        bad = nonfinite(obs)
        if bad is not None:
            raise FloatingPointError(f"reset returned a bad observation: {bad}")
        self._last_obs = obs
        return obs, info

    def step(self, action):
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception as err:  # noqa: BLE001 - any env failure ends the episode, counted
            return self._fault(describe(err), 0)
        bad = nonfinite(obs, reward)
        if bad is not None:
            return self._fault(bad, int(info.get("env_steps", 0)))
        self._last_obs = obs
        return obs, reward, terminated, truncated, info

    def _fault(self, reason: str, env_steps: int):
        info = {"env_fault": 1, "env_fault_reason": reason, "env_steps": env_steps}
        return self._last_obs, 0.0, False, True, info


class FaultLimit:
    """Counts faults of `n` sources (envs, or the update) and raises `error` when one source
    faults `limit` times in a row; `ok(i)` ends a source's streak."""

    def __init__(self, limit: int, n: int, error: type[RunStoppedError],
                 message: Callable[[int, int, str], str]) -> None:
        self.limit, self.error, self.message = int(limit), error, message
        self.total = 0
        self.streak = np.zeros(n, np.int64)

    def fault(self, i: int, reason: str) -> None:
        self.total += 1
        self.streak[i] += 1
        if self.streak[i] >= self.limit:
            raise self.error(self.message(i, int(self.streak[i]), reason))

    def ok(self, i: int) -> None:
        self.streak[i] = 0


def _loss_or_grad(key: str) -> bool:
    return "loss" in key or "grad" in key


def _all_finite(tensors) -> bool:
    flags = [torch.isfinite(t).all() for t in tensors]
    return bool(torch.stack(flags).all()) if flags else True


class UpdateGuard:
    """Runs one update and undoes it when a loss, a gradient norm or a parameter comes out
    non-finite: the module's state (parameters, buffers, target nets) and the optimiser's state
    are snapshot before and restored after such an update, so it is skipped as a whole."""

    def __init__(self, module: torch.nn.Module, optim, limit: FaultLimit) -> None:
        self.module, self.optim, self.limit = module, optim, limit

    @property
    def skipped(self) -> int:
        return self.limit.total

    def __call__(self, update: Callable[[], dict[str, torch.Tensor]]
                 ) -> dict[str, torch.Tensor] | None:
        """The update's metrics, or None when it was skipped."""
        params = {k: v.detach().clone() for k, v in self.module.state_dict().items()}
        opt_state = copy.deepcopy(self.optim.state_dict())
        metrics = update()
        bad = [k for k, v in metrics.items()
               if _loss_or_grad(k) and not bool(torch.isfinite(torch.as_tensor(v)).all())]
        if not bad and not _all_finite(self.module.parameters()):
            bad = ["parameters"]
        if not bad:
            self.limit.ok(0)
            return metrics
        self.module.load_state_dict(params)
        self.optim.load_state_dict(opt_state)
        values = ", ".join(f"{k}={float(torch.as_tensor(metrics[k]).float().mean()):g}"
                           for k in bad[:3] if k in metrics) or "parameters not finite"
        self.limit.fault(0, values)
        return None
