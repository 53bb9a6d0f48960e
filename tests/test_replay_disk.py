"""The disk-backed replay: same windows as the in-memory one, chunk files under the run dir,
bounded disk use, resume from disk (also after a kill), anonymous memory that does not grow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from worldzoo.replay import Replay, make_replay
from worldzoo.replay_disk import DiskReplay


def steps(n: int, num_envs: int = 2, image: int = 8, start: int = 0):
    """Distinct vector steps: every value encodes (time, env)."""
    for t in range(start, start + n):
        env = np.arange(num_envs)
        yield {"image": np.full((num_envs, image, image, 3), (t + env[:, None, None, None]) % 251,
                                np.uint8),
               "vector": np.stack([np.full(3, t * 10 + e, np.float32) for e in env]),
               "action": np.full((num_envs, 1), t, np.float32),
               "reward": (t + env).astype(np.float32), "is_first": np.zeros(num_envs, np.float32),
               "is_last": np.zeros(num_envs, np.float32),
               "is_terminal": np.zeros(num_envs, np.float32)}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("n", [5, 40, 97])  # not full, full, wrapped around several times
def test_disk_samples_the_same_windows_as_memory(tmp_path, n):
    mem, disk = Replay(40, 2, seed=3), DiskReplay(40, 2, 3, tmp_path / "replay", chunk=6)
    for step in steps(n):
        mem.add(step)
        disk.add(step)
    assert len(mem) == len(disk)
    for _ in range(5):
        a, b = mem.sample(4, 5, "cpu"), disk.sample(4, 5, "cpu")
        assert same(a, b) and b["image"].dtype == torch.uint8


def test_round_trip_and_resume_after_a_kill(tmp_path):
    """Save, keep writing (then 'kill': drop the object), load the save: the replay continues
    exactly as the uninterrupted one does, reading the chunk files left on disk."""
    run = tmp_path / "replay"
    disk = DiskReplay(30, 2, 7, run, chunk=4)
    for step in steps(23):
        disk.add(step)
    disk.save(tmp_path / "ckpt")
    disk.committed()
    for step in steps(11, start=23):  # written after the checkpoint, then lost in a kill
        disk.add(step)
    del disk

    resumed = DiskReplay(30, 2, 7, run, chunk=4)
    resumed.load(tmp_path / "ckpt")
    reference = DiskReplay(30, 2, 7, tmp_path / "ref", chunk=4)
    for step in steps(23):
        reference.add(step)
    assert len(resumed) == len(reference) == 30  # 15 steps per env retained
    assert same(resumed.sample(3, 6, "cpu"), reference.sample(3, 6, "cpu"))
    for step in steps(20, start=23):
        resumed.add(step)
        reference.add(step)
    assert same(resumed.sample(5, 6, "cpu"), reference.sample(5, 6, "cpu"))


def test_old_chunks_are_deleted(tmp_path):
    disk = DiskReplay(20, 1, 0, tmp_path, chunk=4)
    for i, step in enumerate(steps(200, num_envs=1)):
        disk.add(step)
        if i % 25 == 0:
            disk.save(tmp_path / "ckpt")
            disk.committed()
    chunks = sorted(p.name for p in tmp_path.glob("vector.*.npy"))
    # capacity 20 = 5 chunks, plus those written since the last checkpoint (step 175)
    assert len(chunks) <= 5 + (200 - 175) // 4 + 2
    assert chunks[-1] == "vector.000049.npy"


def test_missing_chunk_is_a_clear_error(tmp_path):
    disk = DiskReplay(20, 1, 0, tmp_path / "replay", chunk=4)
    for step in steps(10, num_envs=1):
        disk.add(step)
    disk.save(tmp_path / "ckpt")
    (tmp_path / "replay" / "vector.000001.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"replay chunk .*vector.000001.npy is missing"):
        DiskReplay(20, 1, 0, tmp_path / "replay", chunk=4).load(tmp_path / "ckpt")


def test_storage_mismatch_is_refused(tmp_path):
    mem = Replay(20, 1, 0)
    for step in steps(5, num_envs=1):
        mem.add(step)
    mem.save(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="stored in memory; this run uses "
                                         "train.replay_storage=disk"):
        make_replay("disk", 20, 1, 0, tmp_path / "replay").load(tmp_path / "ckpt")


def rss_anon() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    pytest.skip("no /proc/self/status")


def test_pixels_on_disk_do_not_take_anonymous_memory(tmp_path):
    """150 MB of 64x64 pixel steps go to page cache (evictable), not to process memory."""
    disk = DiskReplay(12_000, 1, 0, tmp_path, chunk=1024)
    frame = next(steps(1, num_envs=1, image=64))
    before = rss_anon()
    for _ in range(12_000):
        disk.add(frame)
    disk.sample(16, 50, "cpu")
    grown = rss_anon() - before
    written = sum(p.stat().st_size for p in tmp_path.glob("image.*.npy"))
    assert written > 140e6 and grown < 20e6, (written, grown)
