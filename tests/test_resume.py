"""Kill real runs (SIGKILL) at random moments, resume each with `--resume`, and check that the
finished run equals an uninterrupted one: the same metrics at the same env steps (no gaps, no
duplicates) and bit-identical final parameters and optimiser state (CPU)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from worldzoo import checkpoint

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"env_steps_per_s", "updates_per_s"}  # wall-clock metrics: the only ones that differ
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def command(results: Path, steps: int, storage: str) -> list[str]:
    return [sys.executable, "-m", "worldzoo", "run", "dreamerv1", "--env", "gym:Pendulum-v1",
            "--preset", "debug", "--device", "cpu", "--quiet", "--steps", str(steps),
            "--results", str(results), "--set", "env.time_limit=40",
            "--set", "train.checkpoint_every=40", "--set", "train.log_every=30",
            "--set", "train.eval_every=120", "--set", f"train.replay_storage={storage}"]


def run_dirs(results: Path) -> list[Path]:
    base = results / "runs"
    return sorted(p for p in base.iterdir() if p.name != "_sources") if base.exists() else []


def start(results: Path, steps: int, storage: str) -> subprocess.Popen:
    """Resume the run if it has a config (from its checkpoint, or from scratch when it has
    none yet); else (killed before it wrote one) start it afresh."""
    dirs = run_dirs(results)
    assert len(dirs) <= 1
    if dirs and not (dirs[0] / "config.json").exists():
        shutil.rmtree(dirs[0])
        dirs = []
    cmd = command(results, steps, storage)
    if dirs:
        cmd = [*cmd[:4], "--resume", str(dirs[0]), "--quiet"]
    return subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen) -> None:
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]


def resumes_from(results: Path) -> int | None:
    """Env step of the checkpoint the next resume starts from (None: from scratch)."""
    dirs = run_dirs(results)
    root = dirs[0] / "checkpoints" if dirs else None
    if root is None or not checkpoint.has_checkpoint(root):
        return None
    return int(checkpoint.load(checkpoint.latest(root))["counters"]["env_steps"])


def kill_and_resume(results: Path, steps: int, kills: int, seed: int, span: float,
                    storage: str = "memory", scale: float = 0.8
                    ) -> tuple[Path, list[tuple[float, int | None]]]:
    """Start the run, SIGKILL it `kills` times at random moments within `span` seconds (the
    time an uninterrupted run takes), resuming after each; then let it finish. Returns its
    directory and (kill time, step resumed from) of each kill."""
    rng = random.Random(seed)
    times = []
    startup = min(6.0, span / 2)  # imports and set-up, before the first env step
    proc = start(results, steps, storage)
    for _ in range(kills):
        left = 1 - (resumes_from(results) or 0) / steps  # the share of the run still to do
        delay = rng.uniform(0.2, 1.0) * scale * (startup + (span - startup) * left)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            times.append((round(delay, 2), resumes_from(results)))
        else:  # finished before the kill: nothing left to interrupt
            assert proc.returncode == 0, proc.stdout.read()[-3000:]
            break
        proc = start(results, steps, storage)
    if proc.returncode is None:
        finish(proc)
    (run,) = run_dirs(results)
    return run, times


def final_state(run: Path) -> dict:
    return checkpoint.load(checkpoint.latest(run / "checkpoints"))


def assert_same_run(run: Path, ref: Path, steps: int) -> None:
    metrics = json.loads((run / "metrics.json").read_text())
    expected = json.loads((ref / "metrics.json").read_text())
    assert metrics.keys() == expected.keys()
    for name, m in metrics.items():
        assert len(set(m["steps"])) == len(m["steps"]), f"{name}: duplicated env steps"
        assert m["steps"] == sorted(m["steps"]), f"{name}: steps out of order"
        assert m["steps"] == expected[name]["steps"], f"{name}: gaps or extra steps"
        if name not in TIMING:
            assert m["values"] == expected[name]["values"], f"{name}: values differ"
    assert metrics["eval_return"]["steps"][-1] == steps
    state, ref_state = final_state(run), final_state(ref)
    assert state["counters"] == ref_state["counters"]
    for part in ("agent",):
        for k, v in ref_state[part].items():
            assert torch.equal(state[part][k], v), f"{part}.{k} differs"
    assert str(state["optim"]) == str(ref_state["optim"])
    assert json.loads((run / "run.json").read_text())["status"] == "COMPLETED"


def reference(results: Path, steps: int) -> tuple[Path, float]:
    """An uninterrupted run and its wall time."""
    t0 = time.time()
    finish(start(results, steps, "memory"))
    (run,) = run_dirs(results)
    return run, time.time() - t0


def check_cycles(tmp_path: Path, ref: tuple[Path, float], steps: int, kills: int,
                 seeds: list[int], storage: str = "memory") -> int:
    """Kill-and-resume runs of each seed, each checked against `ref`; returns the kills."""
    total = 0
    ref, span = ref
    for seed in seeds:
        t0 = time.time()
        for attempt in range(3):  # a busy machine can slow the reference; then kill sooner
            run, times = kill_and_resume(tmp_path / f"kill{seed}-{attempt}", steps, kills,
                                         seed, span, storage, scale=0.8 / 2**attempt)
            if times:
                break
        assert_same_run(run, ref, steps)
        total += len(times)
        print(f"{storage} seed {seed}: (killed at s, resumed from env step) {times}; "
              f"finished in {time.time() - t0:.0f} s")
    return total


SHORT = 160


@pytest.fixture(scope="module")
def short_reference(tmp_path_factory) -> tuple[Path, float]:
    return reference(tmp_path_factory.mktemp("ref"), SHORT)


def test_kill_and_resume_short(tmp_path, short_reference):
    """CI: a run of 160 env steps killed up to 3 times (fewer if it finishes first)."""
    assert check_cycles(tmp_path, short_reference, SHORT, 3, [1]) >= 1


def test_kill_and_resume_disk_replay(tmp_path, short_reference):
    """The disk-backed replay resumes from its chunk files, to the same result as a run
    with the in-memory replay (both sample the same windows)."""
    assert check_cycles(tmp_path, short_reference, SHORT, 2, [2], storage="disk") >= 1


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_kill_and_resume_long(tmp_path):
    """Four runs of 400 env steps, each killed up to 6 times; two with the disk replay."""
    ref = reference(tmp_path / "ref", 400)
    kills = check_cycles(tmp_path, ref, 400, 6, [10, 11])
    kills += check_cycles(tmp_path, ref, 400, 6, [12, 13], storage="disk")
    assert kills >= 16


@pytest.mark.parametrize("sig", [signal.SIGINT,
                                 pytest.param(signal.SIGTERM, marks=pytest.mark.slow)])
def test_interrupt_saves_a_checkpoint_then_resume_finishes(tmp_path, sig):
    """Ctrl-C or SIGTERM: the run saves a checkpoint after the current step and exits 130;
    --resume finishes it with no duplicated or missing log points."""
    results, steps = tmp_path / "r", 160
    proc = start(results, steps, "memory")
    deadline = time.time() + 300
    while resumes_from(results) is None and time.time() < deadline:  # training has begun
        time.sleep(0.2)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 130, out[-2000:]
    assert f"{sig.name}: checkpoint saved to" in out and "--resume" in out
    stopped_at = resumes_from(results)
    assert 0 < stopped_at < steps
    finish(start(results, steps, "memory"))
    (run,) = run_dirs(results)
    metrics = json.loads((run / "metrics.json").read_text())
    logged = metrics["updates"]["steps"]
    assert logged == sorted(set(logged)) and logged[-1] == steps
    assert all(b - a <= 30 for a, b in zip(logged, logged[1:])), "a gap in the log points"
    assert json.loads((run / "run.json").read_text())["status"] == "COMPLETED"
