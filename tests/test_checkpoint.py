"""Checkpoints are atomic: a writer killed at any moment leaves the previous checkpoint (or the
new one) loadable, never a half-written one; resume truncates metrics to the checkpoint."""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from worldzoo import checkpoint, runs


def state(i: int) -> dict:
    # small tensors (no OpenMP work), so the forked writer below cannot hang on a thread pool
    return {"i": i, "w": [torch.full((64, 64), float(i)) for _ in range(40)],
            "counters": {"env_steps": i}}


def same(a: dict, b: dict) -> bool:
    return a["i"] == b["i"] and all(torch.equal(x, y) for x, y in zip(a["w"], b["w"]))


def test_save_load_and_keep(tmp_path):
    for i in range(3):
        checkpoint.save(tmp_path, f"step{i:03d}", state(i), keep=2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["step001", "step002"]
    assert same(checkpoint.load(checkpoint.latest(tmp_path)), state(2))


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    checkpoint.save(tmp_path, "step001", state(1))

    def crash(directory):
        raise OSError("disk full")

    with pytest.raises(OSError):
        checkpoint.save(tmp_path, "step002", state(2), extra=crash)
    assert checkpoint.latest(tmp_path).name == "step001"
    checkpoint.save(tmp_path, "step003", state(3))  # the stale temporary dir is cleaned up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.json", "step003"]


def test_same_name_twice_never_unpublishes(tmp_path):
    checkpoint.save(tmp_path, "step005", state(5))
    path = checkpoint.save(tmp_path, "step005", state(6))
    assert path.name == "step005.1" and checkpoint.latest(tmp_path) == path
    assert checkpoint.load(path)["i"] == 6


def test_pointer_missing_or_broken_falls_back_to_a_complete_one(tmp_path):
    checkpoint.save(tmp_path, "step001", state(1), keep=5)
    time.sleep(0.01)
    checkpoint.save(tmp_path, "step002", state(2), keep=5)
    (tmp_path / "step002" / "COMPLETE").unlink()  # as if the marker never got written
    assert checkpoint.latest(tmp_path).name == "step001"
    (tmp_path / "latest.json").unlink()
    assert checkpoint.latest(tmp_path).name == "step001"
    (tmp_path / "latest.json").write_text("{not json")
    assert checkpoint.latest(tmp_path).name == "step001"
    with pytest.raises(checkpoint.CheckpointError, match="incomplete"):
        checkpoint.load(tmp_path / "step002")


def _writer(root: str) -> None:  # pragma: no cover - runs in the killed child
    i = 0
    while True:
        i += 1
        checkpoint.save(Path(root), f"step{i:06d}", state(i))


def test_killed_writer_never_leaves_a_bad_checkpoint(tmp_path):
    """SIGKILL a process that saves checkpoints in a loop, 15 times at random moments."""
    rng, loaded = random.Random(0), 0
    for _ in range(15):
        pid = os.fork()
        if pid == 0:  # child: write until killed
            try:
                _writer(str(tmp_path))
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.05, 0.4))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        if not checkpoint.has_checkpoint(tmp_path):
            continue
        got = checkpoint.load(checkpoint.latest(tmp_path))
        assert same(got, state(got["i"])) and got["i"] >= 1
        loaded += 1
    assert loaded >= 10


def test_resume_truncates_metrics_to_the_checkpoint(tmp_path):
    metrics = {"loss": {"steps": [0, 10, 20, 30], "values": [1, 2, 3, 4],
                        "timestamps": ["a", "b", "c", "d"]}}
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    runs._truncate_metrics(tmp_path, runs._read_metrics(tmp_path), 20)
    assert json.loads((tmp_path / "metrics.json").read_text()) == {
        "loss": {"steps": [0, 10, 20], "values": [1, 2, 3], "timestamps": ["a", "b", "c"]}}
