"""Environment adapters: one contract for every backend, picked by an id ``suite:task``.

Every env returned by :func:`make` is a ``gymnasium.Env`` whose observation space is a
``Dict`` with ``vector`` (float32, 1-D) and/or ``image`` (uint8, HxWx3) and whose action space
is ``Box(-1, 1, (n,), float32)`` or ``Discrete(n)``. ``terminated`` is a true terminal,
``truncated`` a time limit; ``info['env_steps']`` counts the simulator steps of one step.
Backends import lazily, so importing this package is cheap.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import numbers
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gymnasium

__all__ = [
    "BACKENDS", "Backend", "EnvError", "OPTIONS", "backend_status", "make", "make_vector",
    "parse_id",
]


class EnvError(ValueError):
    """A user-caused error; the message says what was wrong and what would be right."""


@dataclass(frozen=True)
class Backend:
    """One environment suite: its adapter module, pip extra and what it provides."""

    module: str
    extra: str | None  # None: the dependency comes with the core install
    summary: str
    requires: tuple[str, ...] = ()  # top-level modules that must be importable


BACKENDS: dict[str, Backend] = {
    "gym": Backend("worldzoo.envs.gym", None, "any registered gymnasium id, e.g. gym:Pendulum-v1 "
                   "(MuJoCo ids: [mujoco], Gymnasium-Robotics: [robotics])", ("gymnasium",)),
    "dmc": Backend("worldzoo.envs.dmc", "dmc", "DeepMind Control Suite domain-task, "
                   "e.g. dmc:walker-walk", ("dm_control", "mujoco")),
    "mujoco": Backend("worldzoo.envs.mujoco", "mujoco", "MuJoCo MJCF/MJB model, "
                      "e.g. mujoco:path/to/model.xml or mujoco:crawler", ("mujoco",)),
    "brax": Backend("worldzoo.envs.brax", "brax", "Brax environment on JAX (batched step), "
                    "e.g. brax:ant", ("brax", "jax")),
    "unity": Backend("worldzoo.envs.unity", "unity", "Unity ML-Agents player or Editor, "
                     "e.g. unity:path/to/Build.x86_64, unity:editor", ("mlagents_envs",)),
}


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


# name -> (check, what a right value is). Each backend lists the options it accepts in DEFAULTS.
OPTIONS: dict[str, tuple[Any, str]] = {
    "obs": (lambda v: v in ("vector", "pixels", "both"), "one of 'vector', 'pixels', 'both'"),
    "size": (lambda v: _is_int(v) and v >= 1, "a positive int (image side in pixels)"),
    "action_repeat": (lambda v: _is_int(v) and v >= 1, "a positive int"),
    "time_limit": (lambda v: v is None or (_is_int(v) and v >= 1),
                   "None or a positive int (env steps, counting action repeat)"),
    "camera": (lambda v: v is None or (_is_int(v) and v >= 0) or (isinstance(v, str) and v),
               "None, a camera index >= 0 or a camera name"),
    "shadows": (lambda v: isinstance(v, bool), "True or False"),
    # mujoco
    "frame_skip": (lambda v: _is_int(v) and v >= 1, "a positive int (physics steps per step)"),
    "reward": (lambda v: v is None or _is_ref(v), "None or 'module:function'"),
    "terminate": (lambda v: v is None or _is_ref(v), "None or 'module:function'"),
    "reset": (lambda v: v is None or _is_ref(v), "None or 'module:function'"),
    # brax
    "backend": (lambda v: v in ("generalized", "positional", "spring", "mjx"),
                "one of 'generalized', 'positional', 'spring', 'mjx'"),
    # unity
    "behavior": (lambda v: v is None or (isinstance(v, str) and v), "None or a behavior name"),
    "time_scale": (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and v > 0,
                   "a positive number (Unity simulation speed-up)"),
    "no_graphics": (lambda v: isinstance(v, bool), "True or False"),
    "port": (lambda v: v is None or (_is_int(v) and 0 <= v < 65536),
             "None (a free port; 5004 for the Editor) or a TCP port"),
    "timeout": (lambda v: _is_int(v) and v >= 1, "a positive int (seconds)"),
    # gym (Gymnasium-Robotics)
    "goal_keys": (lambda v: isinstance(v, bool),
                  "True (keep dict observations as named keys) or False (flatten into vector)"),
}


def _is_ref(value: Any) -> bool:
    return isinstance(value, str) and value.count(":") == 1 and all(value.split(":"))


def _installed(backend: Backend) -> bool:
    return all(importlib.util.find_spec(name) is not None for name in backend.requires)


def backend_status() -> list[dict]:
    """One row per backend: name, installed (dependencies importable), implemented, extra,
    summary; checked with ``find_spec``, so nothing heavy is imported."""
    return [{"name": name, "installed": _installed(b),
             "implemented": importlib.util.find_spec(b.module) is not None,
             "extra": b.extra, "summary": b.summary} for name, b in BACKENDS.items()]


def _install_hint(name: str) -> str:
    extra = BACKENDS[name].extra
    return f"pip install 'worldzoo[{extra}]'" if extra else "pip install worldzoo"


def _load(name: str):
    """Import the adapter module of a backend, or fail with the extra to install."""
    backend = BACKENDS[name]
    if importlib.util.find_spec(backend.module) is None:
        raise EnvError(f"env backend '{name}' is not implemented yet (it will need "
                       f"{_install_hint(name)}); implemented backends: "
                       f"{', '.join(_implemented())}")
    if not _installed(backend):
        raise EnvError(f"env backend '{name}' needs the optional dependency: "
                       f"{_install_hint(name)}")
    try:
        return importlib.import_module(backend.module)
    except ImportError as err:
        raise EnvError(f"env backend '{name}' needs the optional dependency: "
                       f"{_install_hint(name)} ({err})") from err


def _implemented() -> list[str]:
    return [n for n, b in BACKENDS.items() if importlib.util.find_spec(b.module) is not None]


def parse_id(env_id: str) -> tuple[str, str]:
    """Split ``suite:task``; a bare task resolves to the one suite that knows it."""
    if not isinstance(env_id, str) or not env_id:
        raise EnvError(f"env id must be a non-empty string like 'dmc:walker-walk', got {env_id!r}")
    if ":" in env_id:
        suite, task = env_id.split(":", 1)
        if suite not in BACKENDS:
            raise EnvError(f"unknown env suite '{suite}' in '{env_id}'; known suites: "
                           f"{', '.join(BACKENDS)} (e.g. dmc:walker-walk, gym:Pendulum-v1)")
        if not task:
            raise EnvError(f"env id '{env_id}' has no task after '{suite}:'")
        return suite, task
    found, names = [], []
    for suite in ("gym", "dmc"):  # suites whose task lists can be checked
        if not _installed(BACKENDS[suite]):
            continue
        module = _load(suite)
        if module.has_task(env_id):
            found.append(suite)
        names += [f"{suite}:{t}" for t in module.task_names()]
    if len(found) == 1:
        return found[0], env_id
    if found:
        raise EnvError(f"env id '{env_id}' is ambiguous; write one of: "
                       f"{', '.join(f'{s}:{env_id}' for s in found)}")
    by_task = {n.split(":", 1)[1]: n for n in names}
    close = difflib.get_close_matches(env_id, list(by_task), n=3)
    hint = f"; did you mean {', '.join(by_task[c] for c in close)}?" if close else ""
    raise EnvError(f"unknown env id '{env_id}': no installed suite has this task; write "
                   f"suite:task with suite in {', '.join(BACKENDS)}{hint}")


def make(env_id: str, seed: int | None = None, **opts: Any) -> gymnasium.Env:
    """Build a fresh env for ``suite:task`` with action repeat, time limit and seeding.

    ``seed`` is the base seed of :class:`SeedPerEpisode` (None: drawn once from OS entropy).
    Options (validated by ``OPTIONS``; each backend's ``DEFAULTS`` lists the ones it takes):
    obs, size, action_repeat, time_limit (env steps) everywhere; camera and shadows (dmc);
    camera, frame_skip, reward, terminate, reset (mujoco); backend (brax); behavior,
    time_scale, no_graphics, port, timeout (unity); goal_keys (gym). See docs/environments.md.
    """
    from worldzoo.envs.wrappers import ActionRepeat, SeedPerEpisode

    suite, task = parse_id(env_id)
    module = _load(suite)
    options = _options(suite, module, opts, seed)
    repeat = options.pop("action_repeat")
    env = module.make(task, **options)
    env = ActionRepeat(env, repeat)  # also with repeat 1: it sets info['env_steps']
    return SeedPerEpisode(env, seed)


def make_vector(env_id: str, num_envs: int, seed: int | None = None,
                **opts: Any) -> gymnasium.vector.VectorEnv | None:
    """The backend's own vector env of ``num_envs`` envs (e.g. Brax's one batched, jitted
    step), or None when the backend has none and gymnasium's vector envs over :func:`make`
    are the way. A native vector env keeps the contract of :func:`make` per env (dict obs,
    ``info['env_steps']``, next-step autoreset, per-episode seeds)."""
    if not _is_int(num_envs) or num_envs < 1:
        raise EnvError(f"num_envs must be a positive int, got {num_envs!r}")
    suite, task = parse_id(env_id)
    module = _load(suite)
    options = _options(suite, module, opts, seed)
    if not hasattr(module, "make_vector"):
        return None
    return module.make_vector(task, num_envs, seed, **options)


def _options(suite: str, module, opts: dict, seed: Any) -> dict:
    """The backend's defaults updated with ``opts``, every value checked."""
    known = module.DEFAULTS
    unknown = sorted(set(opts) - set(known))
    if unknown:
        raise EnvError(f"unknown option(s) {', '.join(unknown)} for env backend '{suite}'; "
                       f"known options: {', '.join(known)}")
    options = {**known, **opts}
    for name, value in options.items():
        check, right = OPTIONS[name]
        if not check(value):
            raise EnvError(f"env option {name}={value!r} is invalid; use {right}")
    if seed is not None and not _is_int(seed):
        raise EnvError(f"seed must be an int or None, got {seed!r}")
    return options
