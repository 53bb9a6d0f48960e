"""Brax backend: ``brax:ant`` (any name in ``brax.envs``) on JAX, physics ``backend`` picked.

A Python loop over a jitted Brax step pays JAX's dispatch cost (milliseconds on a CPU) every
call, so :class:`BraxVectorEnv` runs ``num_envs`` envs as ONE jitted, vmapped step that also
does action repeat, the time limit and next-step autoreset: the dispatch cost is paid once per
batch. :func:`make` (one env, for evaluation and the gymnasium vector envs) jits the plain
step. Observations are flat vectors (``obs='vector'``); Brax's renderer is not wired up.
``step`` returns numpy (writable copies of a few KB: the gymnasium API, and what replay
stores); ``BraxVectorEnv.torch_obs()`` hands the same observations to torch through DLPack
without a copy (on a GPU they stay on the device). Compile time (seconds per function on a
CPU) is paid once, at the first reset and step.
"""

from __future__ import annotations

import difflib
import os

# JAX would take 75% of a GPU's memory at start-up; leave room for torch.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import gymnasium  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from brax import envs as brax_envs  # noqa: E402
from gymnasium import spaces  # noqa: E402
from gymnasium.vector import AutoresetMode, VectorEnv  # noqa: E402

from worldzoo.envs import EnvError  # noqa: E402
from worldzoo.envs.wrappers import episode_seed  # noqa: E402

DEFAULTS = {"obs": "vector", "action_repeat": 1, "time_limit": 1000, "backend": "generalized"}


def task_names() -> list[str]:
    return sorted(brax_envs._envs)


def has_task(task: str) -> bool:
    return task in brax_envs._envs


def load(task: str, backend: str):
    """The Brax env ``task`` on physics ``backend``."""
    if not has_task(task):
        close = difflib.get_close_matches(task, task_names(), n=3)
        hint = f"did you mean {', '.join('brax:' + c for c in close)}? " if close else ""
        raise EnvError(f"unknown brax env '{task}'; {hint}brax envs: {', '.join(task_names())}")
    try:
        return brax_envs.get_environment(task, backend=backend)
    except Exception as err:  # e.g. a backend the env does not support
        raise EnvError(f"brax:{task} cannot be made with backend={backend!r}: {err}") from err


def _check_obs(obs: str, task: str) -> None:
    if obs != "vector":
        raise EnvError(f"brax:{task} gives vector observations only; use obs='vector'")


def _flat(obs) -> jax.Array:
    """One env's Brax observation (an array or a dict of arrays) as one float32 vector."""
    leaves = [obs[k] for k in sorted(obs)] if isinstance(obs, dict) else [obs]
    return jnp.concatenate([jnp.ravel(x) for x in leaves]).astype(jnp.float32)


def _strong(tree):
    """Leaves without JAX's weak types, so a reset state and a stepped one have the same
    types and the jitted step compiles once (a weak-typed reward would compile it twice)."""
    def strong(x):
        x = jnp.asarray(x)
        return jax.lax.convert_element_type(x, x.dtype)
    return jax.tree_util.tree_map(strong, tree)


def _spaces(env) -> tuple[spaces.Dict, spaces.Box]:
    size = env.observation_size
    dim = sum(int(np.prod(v)) for v in size.values()) if isinstance(size, dict) else int(size)
    obs_space = spaces.Dict({"vector": spaces.Box(-np.inf, np.inf, (dim,), np.float32)})
    return obs_space, spaces.Box(-1.0, 1.0, (env.action_size,), np.float32)


def make(task: str, obs: str, time_limit: int | None, backend: str) -> gymnasium.Env:
    _check_obs(obs, task)
    env = BraxEnv(load(task, backend))
    if time_limit is not None:
        env = gymnasium.wrappers.TimeLimit(env, max_episode_steps=time_limit)
    return env


def make_vector(task: str, num_envs: int, seed: int | None, obs: str, action_repeat: int,
                time_limit: int | None, backend: str) -> BraxVectorEnv:
    _check_obs(obs, task)
    return BraxVectorEnv(load(task, backend), num_envs, seed, action_repeat, time_limit)


def _key(seed: int) -> jax.Array:
    return jax.random.PRNGKey(np.uint32(seed % 2**32))


class BraxEnv(gymnasium.Env):
    """One Brax env with jitted reset and step (one dispatch per step: for evaluation)."""

    metadata = {"render_modes": []}

    def __init__(self, env):
        self._env = env
        self.observation_space, self.action_space = _spaces(env)
        self._reset = jax.jit(lambda key: _strong(env.reset(key)))
        self._step = jax.jit(lambda state, action: _strong(env.step(state, action)))
        self._state = None

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._state = self._reset(_key(int(self.np_random.integers(2**32))))
        return {"vector": np.asarray(_flat(self._state.obs))}, {}

    def step(self, action):
        action = np.clip(np.asarray(action, np.float32), -1.0, 1.0)
        self._state = self._step(self._state, action)
        obs = {"vector": np.asarray(_flat(self._state.obs))}
        return obs, float(self._state.reward), bool(self._state.done), False, {}


class BraxVectorEnv(VectorEnv):
    """``num_envs`` Brax envs stepped by one jitted, vmapped call (next-step autoreset).

    Per env it keeps the contract of ``make``: ``info['env_steps']`` counts the env steps
    taken (action repeat included, 0 on a reset step), ``truncated`` marks the time limit (in
    env steps), and env ``i`` seeds episode ``k`` with ``episode_seed(seed + i, k)`` like
    ``SeedPerEpisode``, so ``episode_index`` can be read and restored with get/set_attr.
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, env, num_envs: int, seed: int | None = None, action_repeat: int = 1,
                 time_limit: int | None = None):
        self._env, self.num_envs = env, num_envs
        self.single_observation_space, self.single_action_space = _spaces(env)
        self.observation_space = gymnasium.vector.utils.batch_space(
            self.single_observation_space, num_envs)
        self.action_space = gymnasium.vector.utils.batch_space(self.single_action_space,
                                                                num_envs)
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        self._base = np.arange(num_envs, dtype=np.int64) + int(seed)
        self._episode = np.zeros(num_envs, np.int64)
        self.repeat, self.time_limit = action_repeat, time_limit or np.iinfo(np.int32).max
        self._reset_fn = jax.jit(jax.vmap(self._reset_one))
        self._step_fn = jax.jit(self._batched_step)
        self._merge_fn = jax.jit(self._merge)
        self._state = self._t = self._obs = None
        self._done = np.zeros(num_envs, bool)

    # -- the one jitted call per step -------------------------------------------------------
    def _reset_one(self, seed):
        state = _strong(self._env.reset(jax.random.PRNGKey(seed)))
        return state, _flat(state.obs)

    def _batched_step(self, state, t, last, action):
        """Step every env ``repeat`` times, except those just reset (``last``: the previous
        step ended their episode, ``state`` already holds their fresh start)."""
        env = self._env
        action = jnp.clip(action, -1.0, 1.0)

        def one(state, t, last, action):
            def body(_, carry):
                s, reward, steps, done = carry
                nxt = env.step(s, action)
                live = ~done
                s = jax.tree_util.tree_map(lambda a, b: jnp.where(live, b, a), s, nxt)
                reward = reward + jnp.where(live, nxt.reward, 0.0)
                steps = steps + live.astype(jnp.int32)
                done = done | (nxt.done > 0) | (t + steps >= self.time_limit)
                return s, reward, steps, done

            init = (state, jnp.float32(0.0), jnp.int32(0), last)
            state, reward, steps, _ = jax.lax.fori_loop(0, self.repeat, body, init)
            t = jnp.where(last, 0, t + steps)
            terminated = ~last & (state.done > 0)
            truncated = ~last & ~terminated & (t >= self.time_limit)
            return (_strong(state), t, terminated | truncated, _flat(state.obs), reward,
                    terminated, truncated, steps)

        return jax.vmap(one)(state, t, last, action)

    @staticmethod
    def _merge(which, fresh, state):
        """``fresh`` where ``which`` else ``state``, leaf by leaf (batched)."""
        def pick(a, b):
            return jnp.where(which.reshape(which.shape + (1,) * (a.ndim - 1)), a, b)
        return jax.tree_util.tree_map(pick, fresh, state)

    def _seeds(self, which: np.ndarray) -> np.ndarray:
        """Reset seeds from (base seed, episode index) of the envs in ``which``; advances them."""
        seeds = np.zeros(self.num_envs, np.uint32)
        for i in np.flatnonzero(which):
            seeds[i] = episode_seed(int(self._base[i]), int(self._episode[i])) % 2**32
            self._episode[i] += 1
        return seeds

    # -- gymnasium VectorEnv ------------------------------------------------------------------
    def reset(self, *, seed: int | list[int] | None = None, options: dict | None = None):
        if seed is not None:
            seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else seed
            self._base, self._episode = np.asarray(seeds, np.int64), np.zeros_like(self._episode)
        self._state, self._obs = self._reset_fn(self._seeds(np.ones(self.num_envs, bool)))
        self._t = jnp.zeros(self.num_envs, jnp.int32)
        self._done = np.zeros(self.num_envs, bool)
        return {"vector": np.array(self._obs)}, {}

    def step(self, actions):
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        action = np.asarray(actions, np.float32).reshape(self.action_space.shape)
        if self._done.any():  # next-step autoreset: once per episode, not every step
            fresh, _ = self._reset_fn(self._seeds(self._done))
            self._state = self._merge_fn(jnp.asarray(self._done), fresh, self._state)
        (self._state, self._t, last, self._obs, reward, terminated, truncated,
         steps) = self._step_fn(self._state, self._t, jnp.asarray(self._done), action)
        self._done = np.asarray(last)
        info = {"env_steps": np.asarray(steps), "_env_steps": np.ones(self.num_envs, bool)}
        return ({"vector": np.array(self._obs)}, np.asarray(reward), np.asarray(terminated),
                np.asarray(truncated), info)

    def torch_obs(self) -> dict:
        """The last observations as torch tensors sharing JAX's buffer (DLPack, no copy)."""
        import torch
        return {"vector": torch.from_dlpack(self._obs)}

    # -- what the trainer reads and restores (as on gymnasium's vector envs) ----------------
    @property
    def episode_index(self) -> list[int]:
        return self._episode.tolist()

    def get_attr(self, name: str) -> tuple:
        if name == "episode_index":
            return tuple(int(i) for i in self._episode)
        return tuple(getattr(self, name) for _ in range(self.num_envs))

    def set_attr(self, name: str, values) -> None:
        if name != "episode_index":
            raise AttributeError(f"BraxVectorEnv cannot set {name!r}")
        values = list(values) if isinstance(values, list | tuple) else [values] * self.num_envs
        self._episode = np.asarray(values, np.int64)

    def call(self, name: str, *args, **kwargs) -> tuple:
        if name == "get_episode_index":
            return self.get_attr("episode_index")
        raise AttributeError(f"BraxVectorEnv has no per-env method {name!r}")
