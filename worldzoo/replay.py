"""Sequence replay: a ring buffer of steps per env, sampled as fixed-length windows.

Each env writes its own row, so episodes of different envs never mix; windows may cross episode
boundaries inside a row (the RSSM resets on `is_first`, as in DreamerV3). Pixels stay uint8.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

KEYS_FLOAT = ("reward", "is_first", "is_last", "is_terminal")


class Replay:
    """Capacity counts policy steps over all envs; the oldest steps are dropped first."""

    def __init__(self, capacity: int, num_envs: int, seed: int) -> None:
        if capacity < num_envs:
            raise ValueError(f"train.replay_capacity ({capacity}) must be >= num_envs")
        self.num_envs, self.cap = num_envs, capacity // num_envs
        self.data: dict[str, np.ndarray] = {}
        self.ptr, self.size = 0, 0
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return self.size * self.num_envs

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
        if self.size < length:
            raise RuntimeError(f"replay holds {self.size} steps per env, fewer than the "
                               f"sequence length {length}; raise train.prefill")
        envs = self.rng.integers(0, self.num_envs, batch)
        starts = self.rng.integers(0, self.size - length + 1, batch)
        oldest = self.ptr if self.size == self.cap else 0
        idx = (oldest + starts[:, None] + np.arange(length)[None]) % self.cap
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
            np.save(directory / f"{k}.npy", v[:, order], allow_pickle=False)
        meta = {"size": self.size, "cap": self.cap, "num_envs": self.num_envs,
                "rng": self.rng.bit_generator.state, "keys": list(self.data)}
        with open(directory / "meta.json", "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())

    def load(self, directory: Path) -> None:
        meta = json.loads((directory / "meta.json").read_text())
        if meta["num_envs"] != self.num_envs or meta["cap"] != self.cap:
            raise ValueError(f"replay in {directory} has num_envs={meta['num_envs']}, "
                             f"capacity {meta['cap']} per env; the run expects "
                             f"{self.num_envs}, {self.cap}")
        self.data = {}
        for k in meta["keys"]:
            arr = np.load(directory / f"{k}.npy", allow_pickle=False)
            full = np.zeros((self.num_envs, self.cap, *arr.shape[2:]), arr.dtype)
            full[:, : arr.shape[1]] = arr
            self.data[k] = full
        self.size = meta["size"]
        self.ptr = self.size % self.cap
        self.rng.bit_generator.state = meta["rng"]
