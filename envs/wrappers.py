"""Wrappers every env gets from ``make``: action repeat and per-episode seeding."""

from __future__ import annotations

import gymnasium
import numpy as np


class ActionRepeat(gymnasium.Wrapper, gymnasium.utils.RecordConstructorArgs):
    """Repeat each action ``repeat`` env steps, summing rewards; stop early at episode end.

    ``info['env_steps']`` is the number of simulator steps this step actually took.
    """

    def __init__(self, env: gymnasium.Env, repeat: int):
        gymnasium.utils.RecordConstructorArgs.__init__(self, repeat=repeat)
        super().__init__(env)
        if repeat < 1:
            raise ValueError(f"action repeat must be >= 1, got {repeat}")
        self.repeat = repeat

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        obs, info = self.env.reset(seed=seed, options=options)
        return obs, {**info, "env_steps": 0}

    def step(self, action):
        total, steps = 0.0, 0
        terminated = truncated = False
        obs, info = None, {}
        while steps < self.repeat and not (terminated or truncated):
            obs, reward, terminated, truncated, info = self.env.step(action)
            total += float(reward)
            steps += 1
        return obs, total, terminated, truncated, {**info, "env_steps": steps}


def episode_seed(base_seed: int, episode: int) -> int:
    """The reset seed of episode ``episode`` (0-based) of a run with ``base_seed``."""
    return int(np.random.SeedSequence(base_seed, spawn_key=(0, episode)).generate_state(1)[0])


class SeedPerEpisode(gymnasium.Wrapper, gymnasium.utils.RecordConstructorArgs):
    """Reseed every episode from (base seed, episode index), so runs are reproducible.

    ``reset()`` without a seed (as vector-env autoreset calls it) uses
    ``episode_seed(base_seed, episode_index)`` and advances the index; ``reset(seed=s)`` makes
    ``s`` the new base seed and restarts the count at 0, so ``make(id, seed=s).reset()`` equals
    ``make(id).reset(seed=s)``. To resume a run, build the env with the same base seed and call
    ``set_episode_index(k)`` with the index saved by ``get_episode_index()``; the ``episode_index``
    property does the same and works with ``VectorEnv.set_attr`` (one value per env).
    """

    def __init__(self, env: gymnasium.Env, seed: int | None = None):
        gymnasium.utils.RecordConstructorArgs.__init__(self, seed=seed)
        super().__init__(env)
        self._base_seed = self._draw_base() if seed is None else int(seed)
        self._episode = 0
        self._seed_spaces()

    @staticmethod
    def _draw_base() -> int:
        return int(np.random.SeedSequence().generate_state(1, np.uint64)[0])

    def _seed_spaces(self) -> None:
        space_seed = int(np.random.SeedSequence(self._base_seed, spawn_key=(1,))
                         .generate_state(1)[0])
        self.action_space.seed(space_seed)
        self.observation_space.seed(space_seed)

    @property
    def base_seed(self) -> int:
        """The seed every episode seed derives from (save it to resume a run)."""
        return self._base_seed

    def get_episode_index(self) -> int:
        """How many episodes were started; the next reset() uses this index."""
        return self._episode

    def set_episode_index(self, index: int) -> None:
        """Continue as if ``index`` episodes had been started already."""
        if int(index) < 0:
            raise ValueError(f"episode index must be >= 0, got {index}")
        self._episode = int(index)

    @property
    def episode_index(self) -> int:
        return self.get_episode_index()

    @episode_index.setter
    def episode_index(self, index: int) -> None:
        self.set_episode_index(index)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._base_seed, self._episode = int(seed), 0
            self._seed_spaces()
        episode = episode_seed(self._base_seed, self._episode)
        self._episode += 1
        return self.env.reset(seed=episode, options=options)
