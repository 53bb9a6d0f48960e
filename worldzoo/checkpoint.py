"""Atomic checkpoints: each is written to a temporary directory, flushed, renamed into place,
and only then named in the `latest` pointer. Loading uses `torch.load(weights_only=True)`."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A missing, partial or corrupt checkpoint."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON to `path` via a unique temporary file and rename (safe across threads)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def save(root: Path, name: str, state: dict[str, Any], extra=None, keep: int = 1) -> Path:
    """Save `state` (torch-serialisable, weights_only-safe) as checkpoint `name` under `root`;
    `extra(dir)` may write more files (replay) into it before it is published."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with open(tmp / "state.pt", "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if extra is not None:
        extra(tmp)
    (tmp / "COMPLETE").write_text("ok\n")
    _fsync_dir(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    write_json_atomic(root / "latest.json", {"name": name})
    _fsync_dir(root)
    olds = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                   and p.name != name), key=lambda p: p.stat().st_mtime)
    for old in olds[: max(0, len(olds) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: Path) -> Path:
    """The directory of the newest complete checkpoint under `root`."""
    pointer = root / "latest.json"
    if not pointer.exists():
        raise CheckpointError(f"no checkpoint in {root} (latest.json missing); pass a run "
                              "directory that has saved at least one checkpoint")
    try:
        path = root / json.loads(pointer.read_text())["name"]
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"corrupt checkpoint pointer {pointer}: {e}") from None
    if not (path / "COMPLETE").exists():
        raise CheckpointError(f"checkpoint {path} is incomplete; it cannot be resumed")
    return path


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint's state with no code execution."""
    file = path / "state.pt" if path.is_dir() else path
    if not file.exists():
        raise CheckpointError(f"no checkpoint at {file}; expected a run directory or a "
                              "checkpoint directory holding state.pt")
    try:
        return torch.load(file, map_location=device, weights_only=True)
    except Exception as e:  # corrupt, truncated or not a torch file
        raise CheckpointError(f"cannot read checkpoint {file}: {type(e).__name__}: "
                              f"{str(e).splitlines()[0] if str(e) else ''}") from None
