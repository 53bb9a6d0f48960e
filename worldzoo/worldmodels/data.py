"""The recorded episodes V and M learn from: kept in memory and written once each to
`run_dir/data/epNNNNNN.npz` (atomically), so a resumed run reloads the first N episodes its
checkpoint names. Batches: frames for V, windows of (z, action, reward, done) for M."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

KEYS = ("obs", "action", "reward", "terminal")


class Episodes:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.episodes: list[dict[str, np.ndarray]] = []

    def __len__(self) -> int:
        return len(self.episodes)

    def add(self, episode: dict[str, np.ndarray]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.root / f"ep{len(self.episodes):06d}.npz"
        tmp = self.root / f".{path.stem}.tmp.npz"
        np.savez_compressed(tmp, **{k: episode[k] for k in KEYS})
        os.replace(tmp, path)
        self.episodes.append({k: episode[k] for k in KEYS})

    def load(self, count: int) -> None:
        """Reload the first `count` episodes (resume)."""
        self.episodes = []
        for i in range(count):
            with np.load(self.root / f"ep{i:06d}.npz") as f:
                self.episodes.append({k: f[k] for k in KEYS})

    def frames(self) -> np.ndarray:
        """Every recorded observation, [N, ...]."""
        return np.concatenate([ep["obs"] for ep in self.episodes])

    def first_frames(self) -> np.ndarray:
        return np.stack([ep["obs"][0] for ep in self.episodes])

    @property
    def steps(self) -> int:
        return int(sum(len(ep["action"]) for ep in self.episodes))


def windows(episodes: list[dict[str, np.ndarray]], zs: list[np.ndarray], batch: int,
            length: int, rng: np.random.Generator, device: str) -> dict[str, torch.Tensor]:
    """`batch` windows of `length` steps from random episodes at random offsets; shorter
    episodes are zero-padded and masked. z [B, L+1, Z], action [B, L, A], reward/done/mask
    [B, L]."""
    A, Z = episodes[0]["action"].shape[-1], zs[0].shape[-1]
    out = {"z": np.zeros((batch, length + 1, Z), np.float32),
           "action": np.zeros((batch, length, A), np.float32),
           "reward": np.zeros((batch, length), np.float32),
           "done": np.zeros((batch, length), np.float32),
           "mask": np.zeros((batch, length), np.float32)}
    for b, i in enumerate(rng.integers(0, len(episodes), batch)):
        ep, z = episodes[i], zs[i]
        T = len(ep["action"])
        start = int(rng.integers(0, max(1, T - length + 1)))
        n = min(length, T - start)
        out["z"][b, :n + 1] = z[start:start + n + 1]
        out["action"][b, :n] = ep["action"][start:start + n]
        out["reward"][b, :n] = ep["reward"][start:start + n]
        out["done"][b, :n] = ep["terminal"][start:start + n]
        out["mask"][b, :n] = 1.0
    return {k: torch.as_tensor(v, device=device) for k, v in out.items()}
