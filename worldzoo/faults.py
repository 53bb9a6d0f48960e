"""Faults a run survives, in one place: an env step that raises (dm_control's PhysicsError,
MuJoCo instability) or returns NaN/inf ends that episode (`FaultGuard`, inside each env); a
crashed vector-env worker is restarted (`Driver`, which uses `FaultLimit`); a non-finite loss or
gradient, or an update that raises a numerical error, skips that update (`UpdateGuard`). Each
is counted; only when one source faults `limit` times in a row does the run stop, with a
`RunStoppedError` saying why, keeping its last good checkpoint."""

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
    """Too many updates in a row had a non-finite loss or gradient (or raised)."""


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


def _leaves(obj, tensors: list, others: list) -> None:
    """Tensor and other leaves of a nested dict/list, in a fixed order."""
    if isinstance(obj, torch.Tensor):
        tensors.append(obj)
    elif isinstance(obj, dict):
        for value in obj.values():
            _leaves(value, tensors, others)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            _leaves(value, tensors, others)
    else:
        others.append(obj)


def _rebuild(obj, tensors, others):
    """`obj`'s structure with its leaves taken from the iterators `tensors` and `others`."""
    if isinstance(obj, torch.Tensor):
        return next(tensors).clone()
    if isinstance(obj, dict):
        return {k: _rebuild(v, tensors, others) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_rebuild(v, tensors, others) for v in obj)
    return copy.deepcopy(next(others))


class Snapshot:
    """The state of a module and its optimiser, copied into buffers kept between updates (one
    fused copy per update; new buffers only when the optimiser's state changes shape, e.g. when
    Adam creates its moments)."""

    def __init__(self, module: torch.nn.Module, optim) -> None:
        self.module, self.optim = module, optim
        self.signature = None
        self.buffers: list[torch.Tensor] = []
        self.others: list = []
        self.structure = None

    def _live(self) -> tuple[list[torch.Tensor], list]:
        tensors, others = list(self.module.state_dict().values()), []
        _leaves(self.optim.state_dict(), tensors, others)
        return tensors, others

    @staticmethod
    def _signature(tensors: list[torch.Tensor]) -> list:
        return [(t.data_ptr(), t.shape, t.dtype) for t in tensors]

    def take(self) -> None:
        tensors, others = self._live()
        signature = self._signature(tensors)
        if signature != self.signature:
            self.buffers = [t.detach().clone() for t in tensors]
            self.signature = signature
            self.structure = copy.deepcopy(self.optim.state_dict())
        elif tensors:
            torch._foreach_copy_(self.buffers, [t.detach() for t in tensors])
        self.others = copy.deepcopy(others)

    @torch.no_grad()
    def restore(self) -> None:
        tensors, others = self._live()
        n = len(self.module.state_dict())
        if self._signature(tensors) == self.signature and others == self.others:
            if tensors:
                torch._foreach_copy_(tensors, self.buffers)
            return
        # the optimiser's state changed shape in the update: rebuild it from the snapshot
        torch._foreach_copy_(tensors[:n], self.buffers[:n])
        state = _rebuild(self.structure, iter(self.buffers[n:]), iter(self.others))
        self.optim.load_state_dict(state)


class UpdateGuard:
    """Runs one update and undoes it when a loss, a gradient norm or a parameter comes out
    non-finite, or it raises a numerical error: the module's state (parameters, buffers,
    target nets) and the optimiser's state are snapshot before and restored after such an
    update, so it is skipped as a whole."""

    def __init__(self, module: torch.nn.Module, optim, limit: FaultLimit) -> None:
        self.limit = limit
        self.snapshot = Snapshot(module, optim)
        self.module = module

    @property
    def skipped(self) -> int:
        return self.limit.total

    def __call__(self, update: Callable[[], dict[str, torch.Tensor]]
                 ) -> dict[str, torch.Tensor] | None:
        """The update's metrics, or None when it was skipped."""
        self.snapshot.take()
        try:
            metrics = update()
        except (ArithmeticError, RuntimeError, ValueError) as err:  # e.g. a NaN distribution
            self.snapshot.restore()  # parameter, or Adam's step size overflowing float32
            self.limit.fault(0, describe(err))
            return None
        bad = [k for k, v in metrics.items()
               if _loss_or_grad(k) and not bool(torch.isfinite(torch.as_tensor(v)).all())]
        if not bad and not _all_finite(self.module.parameters()):
            bad = ["parameters"]
        if not bad:
            self.limit.ok(0)
            return metrics
        self.snapshot.restore()
        values = ", ".join(f"{k}={float(torch.as_tensor(metrics[k]).float().mean()):g}"
                           for k in bad[:3] if k in metrics) or "parameters not finite"
        self.limit.fault(0, values)
        return None
