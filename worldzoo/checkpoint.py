"""Atomic checkpoints: each is written to a temporary directory, flushed, renamed into place,
and only then named in the `latest` pointer. A directory without its `COMPLETE` marker is never
taken for a checkpoint. Loading uses `torch.load(weights_only=True)` (no code execution)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch


class CheckpointError(RuntimeError):
    """A missing, partial or corrupt checkpoint."""


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (created, renamed files) durable."""
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


def _complete(path: Path) -> bool:
    return path.is_dir() and (path / "COMPLETE").exists()


def _unused_name(root: Path, name: str) -> str:
    """`name`, or `name.1`, `name.2`... when a checkpoint of that name exists (the same env
    step saved twice): a published checkpoint is never deleted before its successor is."""
    candidate, k = name, 0
    while (root / candidate).exists():
        k += 1
        candidate = f"{name}.{k}"
    return candidate


def save(root: Path, name: str, state: dict[str, Any], extra=None, keep: int = 1) -> Path:
    """Save `state` (torch-serialisable, weights_only-safe) as checkpoint `name` under `root`;
    `extra(dir)` may write more files (replay) into it before it is published. Keeps the
    newest `keep` checkpoints."""
    root.mkdir(parents=True, exist_ok=True)
    name = _unused_name(root, name)
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
    with open(tmp / "COMPLETE", "w") as f:
        f.write("ok\n")
        f.flush()
        os.fsync(f.fileno())
    fsync_dir(tmp)
    os.replace(tmp, final)
    fsync_dir(root)
    write_json_atomic(root / "latest.json", {"name": name})
    fsync_dir(root)
    olds = sorted((p for p in root.iterdir() if p.is_dir() and p.name != name),
                  key=lambda p: p.stat().st_mtime)
    stale_tmp = [p for p in olds if p.name.startswith(".")]
    published = [p for p in olds if not p.name.startswith(".")]
    for old in stale_tmp + published[: max(0, len(published) - (keep - 1))]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(root: Path) -> Path:
    """The directory of the newest complete checkpoint under `root`: the one `latest.json`
    names, or (pointer missing or naming an incomplete directory) the newest complete one."""
    pointer = root / "latest.json"
    if pointer.exists():
        try:
            path = root / json.loads(pointer.read_text())["name"]
        except (ValueError, KeyError, TypeError):
            path = None
        if path is not None and _complete(path):
            return path
    found = sorted((p for p in root.iterdir() if not p.name.startswith(".") and _complete(p)),
                   key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if found:
        return found[-1]
    raise CheckpointError(f"no complete checkpoint in {root}; pass a run directory that has "
                          "saved at least one checkpoint")


def has_checkpoint(root: Path) -> bool:
    """Whether `root` holds at least one complete checkpoint."""
    try:
        latest(root)
    except CheckpointError:
        return False
    return True


def load(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint's state with no code execution (`weights_only=True`)."""
    path = Path(path)
    file = path / "state.pt" if path.is_dir() else path
    if not file.exists():
        raise CheckpointError(f"no checkpoint at {file}; expected a run directory or a "
                              "checkpoint directory holding state.pt")
    if path.is_dir() and not (path / "COMPLETE").exists():
        raise CheckpointError(f"checkpoint {path} is incomplete (no COMPLETE marker: its "
                              "writer was interrupted); use the run directory to load the "
                              "newest complete one")
    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing
            warnings.simplefilter("ignore")
            return torch.load(file, map_location=device, weights_only=True)
    except Exception as e:  # corrupt, truncated, not a torch file, or code to execute
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"cannot read checkpoint {file} ({type(e).__name__}: "
                              f"{first[:200]}); it is corrupt or not a worldzoo checkpoint "
                              "(only tensors and plain data load, never code)") from None
