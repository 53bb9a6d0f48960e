"""Disk-backed replay (`train.replay_storage=disk`): steps live in chunk files under the run
directory (`replay/<key>.<chunk>.npy`, numpy memmaps), so a pixel run's replay may exceed RAM;
the OS page cache keeps the hot part in memory.

Chunks are append-only: step t of every env goes to chunk t // chunk. A checkpoint stores only
the step count and the sampler's RNG (the chunks are flushed to disk first), so saving is cheap
and a resumed run reopens the same files. A chunk is deleted once it is older than the capacity
both now and at the newest checkpoint, so a resume always finds the steps it needs. It samples
exactly the windows the in-memory `Replay` samples (same RNG calls, same time order).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap

from worldzoo.checkpoint import fsync_dir
from worldzoo.replay import window_sampler

MAX_CHUNKS = 64  # open memmaps per key: capacity / chunk


class DiskReplay:
    """Capacity counts policy steps over all envs; the oldest steps are dropped first."""

    storage = "disk"

    def __init__(self, capacity: int, num_envs: int, seed: int, directory: Path,
                 chunk: int | None = None) -> None:
        if capacity < num_envs:
            raise ValueError(f"train.replay_capacity ({capacity}) must be >= num_envs")
        self.num_envs, self.cap = num_envs, capacity // num_envs
        self.chunk = int(chunk or max(256, -(-self.cap // MAX_CHUNKS)))
        self.dir = Path(directory)
        self.count = 0  # steps written per env since the start of the run
        self.saved: int | None = None  # count at the newest published checkpoint
        self.specs: dict[str, tuple[tuple[int, ...], str]] = {}
        self.maps: dict[tuple[str, int], np.memmap] = {}
        self.rng = np.random.default_rng(seed)

    @property
    def size(self) -> int:
        return min(self.count, self.cap)

    @property
    def steps_per_env(self) -> int:
        return self.size

    def __len__(self) -> int:
        return self.size * self.num_envs

    def _path(self, key: str, k: int) -> Path:
        return self.dir / f"{key}.{k:06d}.npy"

    def _map(self, key: str, k: int, create: bool = False) -> np.memmap:
        mm = self.maps.get((key, k))
        if mm is None:
            path = self._path(key, k)
            if path.exists():
                mm = open_memmap(path, mode="r+")
            elif create:
                shape, dtype = self.specs[key]
                mm = open_memmap(path, mode="w+", dtype=np.dtype(dtype),
                                 shape=(self.num_envs, self.chunk, *shape))
            else:
                raise FileNotFoundError(f"replay chunk {path} is missing; the run directory's "
                                        "replay/ folder was changed or deleted")
            self.maps[(key, k)] = mm
        return mm

    def add(self, step: dict[str, np.ndarray]) -> None:
        """Append one vector step: every value has a leading num_envs dim."""
        if not self.specs:
            self.specs = {k: (tuple(np.shape(v)[1:]), np.asarray(v).dtype.str)
                          for k, v in step.items()}
            self.dir.mkdir(parents=True, exist_ok=True)
        k, offset = divmod(self.count, self.chunk)
        for key, value in step.items():
            self._map(key, k, create=True)[:, offset] = value
        self.count += 1
        if offset == self.chunk - 1:
            self._drop_old()

    def sample(self, batch: int, length: int, device: torch.device | str) -> dict:
        """A batch of windows [B, T] as tensors on `device`."""
        envs, offsets = window_sampler(self.rng, self.num_envs, self.size, batch, length)
        t = self.count - self.size + offsets  # absolute step of each element
        chunk_of, within = np.divmod(t, self.chunk)
        rows = np.broadcast_to(envs[:, None], t.shape)
        out = {}
        for key, (shape, dtype) in self.specs.items():
            arr = np.empty((*t.shape, *shape), np.dtype(dtype))
            for k in np.unique(chunk_of):
                m = chunk_of == k
                arr[m] = self._map(key, int(k))[rows[m], within[m]]
            out[key] = torch.from_numpy(arr).to(device, non_blocking=True)
        return out

    def _drop_old(self) -> None:
        """Delete chunks older than the capacity now and at the newest checkpoint."""
        keep_from = (self.count if self.saved is None else self.saved) - self.cap
        for key, k in list(self.maps):
            if (k + 1) * self.chunk <= keep_from:
                del self.maps[(key, k)]
        for path in self.dir.glob("*.npy"):
            k = int(path.name.rsplit(".", 2)[1])
            if (k + 1) * self.chunk <= keep_from:
                path.unlink(missing_ok=True)

    # -- persistence (for resume) --------------------------------------------------------
    def save(self, directory: Path) -> None:
        """Flush the chunks to disk and write the step count and the sampler's RNG."""
        for mm in self.maps.values():
            mm.flush()
        if self.dir.exists():
            fsync_dir(self.dir)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"storage": self.storage, "count": self.count, "cap": self.cap,
                "num_envs": self.num_envs, "chunk": self.chunk,
                "specs": {k: [list(s), d] for k, (s, d) in self.specs.items()},
                "rng": self.rng.bit_generator.state}
        with open(directory / "meta.json", "w") as f:
            json.dump(meta, f)
            f.flush()
            os.fsync(f.fileno())
        self._pending = self.count

    def committed(self) -> None:
        """The checkpoint holding the last `save` is published: older chunks may go."""
        self.saved = getattr(self, "_pending", self.saved)
        self._drop_old()

    def load(self, directory: Path) -> None:
        meta = json.loads((directory / "meta.json").read_text())
        if meta.get("storage", "memory") != self.storage:
            raise ValueError(f"replay in {directory} is stored in "
                             f"{meta.get('storage', 'memory')}; this run uses "
                             f"train.replay_storage={self.storage}")
        if (meta["num_envs"], meta["cap"], meta["chunk"]) != (self.num_envs, self.cap,
                                                              self.chunk):
            raise ValueError(f"replay in {directory} has num_envs={meta['num_envs']}, "
                             f"capacity {meta['cap']} per env, chunk {meta['chunk']}; the run "
                             f"expects {self.num_envs}, {self.cap}, {self.chunk}")
        self.maps = {}
        self.specs = {k: (tuple(s), d) for k, (s, d) in meta["specs"].items()}
        self.count = self.saved = int(meta["count"])
        self.rng.bit_generator.state = meta["rng"]
        first, last = self.count - self.size, self.count - 1
        if self.count:
            for key in self.specs:  # every chunk the retained steps need must be there
                for k in range(first // self.chunk, last // self.chunk + 1):
                    self._map(key, k)
