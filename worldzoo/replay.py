"""Sequence replay: a ring buffer of steps per env, sampled as fixed-length windows.

Each env writes its own row, so episodes of different envs never mix; windows may cross episode
boundaries inside a row (the RSSM resets on `is_first`, as in DreamerV3). Pixels stay uint8.
`train.replay_storage` picks where the steps live: `memory` (this module) or `disk` (chunk
files under the run directory, `worldzoo.replay_disk`); both sample the same windows.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

KEYS_FLOAT = ("reward", "is_first", "is_last", "is_terminal")
STORAGES = ("memory", "disk")


def write_npy(path: Path, array: np.ndarray) -> None:
    """np.save, flushed to disk (a checkpoint must survive a power loss)."""
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def step_bytes(obs_space: gym.spaces.Dict, action_dim: int) -> int:
    """Bytes one env step takes in replay: observations (pixels uint8), action, 4 floats."""
    obs = sum(int(np.prod(s.shape)) * np.dtype(s.dtype).itemsize
              for s in obs_space.spaces.values())
    return obs + 4 * action_dim + 4 * len(KEYS_FLOAT)


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def window_sampler(rng: np.random.Generator, num_envs: int, size: int, batch: int,
                   length: int) -> tuple[np.ndarray, np.ndarray]:
    """(env of each window [B], offsets [B, T] from the oldest retained step)."""
    if size < length:
        raise RuntimeError(f"replay holds {size} steps per env, fewer than the sequence "
                           f"length {length}; raise train.prefill")
    envs = rng.integers(0, num_envs, batch)
    starts = rng.integers(0, size - length + 1, batch)
    return envs, starts[:, None] + np.arange(length)[None]


def make_replay(storage: str, capacity: int, num_envs: int, seed: int, directory: Path):
    """The replay of `train.replay_storage`: in memory, or chunk files under `directory`."""
    if storage == "disk":
        from worldzoo.replay_disk import DiskReplay

        return DiskReplay(capacity, num_envs, seed, directory)
    if storage != "memory":
        raise ValueError(f"train.replay_storage={storage!r}; use one of {', '.join(STORAGES)}")
    return Replay(capacity, num_envs, seed)


class Replay:
    """Capacity counts policy steps over all envs; the oldest steps are dropped first."""

    storage = "memory"

    def __init__(self, capacity: int, num_envs: int, seed: int) -> None:
        if capacity < num_envs:
            raise ValueError(f"train.replay_capacity ({capacity}) must be >= num_envs")
        self.num_envs, self.cap = num_envs, capacity // num_envs
        self.data: dict[str, np.ndarray] = {}
        self.ptr, self.size = 0, 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size * self.num_envs

    @property
    def steps_per_env(self) -> int:
        return self.size

    @staticmethod
    def step_nbytes(step: dict[str, np.ndarray]) -> int:
        """Bytes one env step takes in replay."""
        return sum(np.asarray(v[0]).nbytes for v in step.values())

    def add(self, step: dict[str, np.ndarray]) -> None:
        """Append one vector step: every value has a leading num_envs dim."""
        if not self.data:
            self.data = {k: np.zeros((self.num_envs, self.cap, *np.shape(v)[1:]),
                                     np.asarray(v).dtype) for k, v in step.items()}
        for k, v in step.items():
            self.data[k][:, self.ptr] = v
        self.ptr = (self.ptr + 1) % self.cap
        self.size = min(self.size + 1, self.cap)

    def sample(self, batch: int, length: int, device: torch.device | str) -> dict:
        """A batch of windows [B, T] as tensors on `device`."""
        envs, offsets = window_sampler(self.rng, self.num_envs, self.size, batch, length)
        oldest = self.ptr if self.size == self.cap else 0
        idx = (oldest + offsets) % self.cap
        out = {}
        for k, v in self.data.items():
            x = torch.from_numpy(v[envs[:, None], idx])
            out[k] = x.to(device, non_blocking=True)
        return out

    # -- persistence (for resume) --------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Write the filled part of every array (in time order) and the sampler's RNG."""
        directory.mkdir(parents=True, exist_ok=True)
        oldest = self.ptr if self.size == self.cap else 0
        order = (oldest + np.arange(self.size)) % self.cap
        for k, v in self.data.items():
            write_npy(directory / f"{k}.npy", v[:, order])
        meta = {"storage": self.storage, "size": self.size, "cap": self.cap,
                "num_envs": self.num_envs, "rng": self.rng.bit_generator.state,
                "keys": list(self.data)}
        with open(directory / "meta.json", "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())

    def committed(self) -> None:
        """The checkpoint holding the last `save` is published (nothing to do in memory)."""

    def load(self, directory: Path) -> None:
        meta = json.loads((directory / "meta.json").read_text())
        if meta.get("storage", "memory") != self.storage:
            raise ValueError(f"replay in {directory} is stored in {meta['storage']}; this "
                             f"run uses train.replay_storage={self.storage}")
        if meta["num_envs"] != self.num_envs or meta["cap"] != self.cap:
            raise ValueError(f"replay in {directory} has num_envs={meta['num_envs']}, "
                             f"capacity {meta['cap']} per env; the run expects "
                             f"{self.num_envs}, {self.cap}")
        self.data = {}
        for k in meta["keys"]:
            arr = np.load(directory / f"{k}.npy", mmap_mode="r", allow_pickle=False)
            full = np.zeros((self.num_envs, self.cap, *arr.shape[2:]), arr.dtype)
            full[:, : arr.shape[1]] = arr
            self.data[k] = full
        self.size = meta["size"]
        self.ptr = self.size % self.cap
        self.rng.bit_generator.state = meta["rng"]
