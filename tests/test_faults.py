"""Env faults end an episode and are counted; training faults skip an update; both stop the run
with a clear message only when they keep repeating, keeping the last good checkpoint."""

from __future__ import annotations

import importlib.util
from collections import defaultdict

import numpy as np
import pytest
import torch
from faulty_env import Wrap

from worldzoo import checkpoint
from worldzoo.agent import Agent
from worldzoo.config import apply_sets, get_recipe
from worldzoo.envs import make
from worldzoo.faults import (
    EnvFaultError,
    FaultGuard,
    FaultLimit,
    TrainingFaultError,
    UpdateGuard,
    nonfinite,
)
from worldzoo.trainer import Trainer

needs_dmc = pytest.mark.skipif(importlib.util.find_spec("dm_control") is None,
                               reason="needs pip install 'worldzoo[dmc]'")


class Log:
    """The trainer's logger: metric -> [(step, value)]."""

    def __init__(self):
        self.data = defaultdict(list)

    def __call__(self, name, value, step):
        self.data[name].append((step, float(value)))

    def last(self, name):
        return self.data[name][-1][1]


def trainer(tmp_path, schedules=None, env_id="gym:Pendulum-v1", steps=200, sets=()):
    cfg = apply_sets(get_recipe("dreamerv1", "debug"), [
        "env.time_limit=25", "train.eval_every=100000", "train.checkpoint_every=50",
        "train.log_every=50", *sets])
    log = Log()
    tr = Trainer(cfg, env_id, 0, "cpu", tmp_path / "run", log, steps=steps, quiet=True,
                 wrap_env=Wrap(schedules or {}, str(tmp_path)))
    return tr, log


def finite_replay(tr) -> bool:
    return all(np.isfinite(v).all() for v in tr.replay.data.values() if v.dtype.kind == "f")


# ------------------------------------------------------------------ env faults


def test_guard_turns_each_fault_into_an_episode_end():
    kinds = ["raise", "physics", "nan_obs", "inf_obs", "nan_reward", "inf_reward"]
    schedule = {3 + 4 * i: kind for i, kind in enumerate(kinds)}
    env = FaultGuard(Wrap({0: schedule})(make("gym:Pendulum-v1", seed=0), 0))
    obs, _ = env.reset()
    faults = []
    for _ in range(30):
        obs, reward, terminated, truncated, info = env.step(np.zeros(1, np.float32))
        assert nonfinite(obs, reward) is None
        if info.get("env_fault"):
            assert truncated and not terminated and reward == 0.0
            faults.append(info["env_fault_reason"])
            env.reset()
    assert len(faults) == len(kinds)
    assert faults[0] == "RuntimeError: injected env failure"
    assert "mjWARN_BADQACC" in faults[1]
    assert faults[2:] == ["observation 'vector' has NaN/inf"] * 2 + ["reward is nan",
                                                                    "reward is inf"]


@needs_dmc
def test_real_dm_control_physics_error_ends_the_episode():
    env = FaultGuard(Wrap({0: {4: "physics"}})(make("dmc:cartpole-balance", seed=0), 0))
    env.reset()
    infos = [env.step(np.zeros(1, np.float32))[4] for _ in range(4)]
    assert infos[-1]["env_fault_reason"].startswith("PhysicsError: Physics state is invalid")
    obs, _ = env.reset()  # the simulation is usable again after a reset
    assert nonfinite(obs) is None and nonfinite(env.step(np.zeros(1, np.float32))[0]) is None


def test_env_faults_are_counted_and_training_goes_on(tmp_path, capsys):
    schedule = {5: "raise", 30: "physics", 58: "nan_obs", 80: "inf_obs", 101: "nan_reward",
                130: "inf_reward"}
    tr, log = trainer(tmp_path, {0: schedule})
    result = tr.run()
    assert result["env_steps"] == 200 and tr.c["updates"] > 50
    assert tr.c["env_faults"] == 6 and log.last("env_faults") == 6
    assert finite_replay(tr)
    lines = [x for x in capsys.readouterr().out.splitlines() if x.startswith("env fault")]
    assert len(lines) == 6 and "RuntimeError: injected env failure" in lines[0]
    # an episode a fault ended is not reported as a finished one
    assert all(length == 25 for _, length in log.data["train_length"])


def test_crashed_worker_is_restarted(tmp_path, capsys):
    tr, log = trainer(tmp_path, {0: {12: "nan_obs"}, 1: {20: "exit"}}, steps=160,
                      sets=["env.num_envs=2"])
    first_workers = [p.pid for p in tr.envs.processes]
    result = tr.run()
    assert result["env_steps"] >= 160
    assert [p.pid for p in tr.envs.processes] != first_workers  # fresh worker processes
    out = [x for x in capsys.readouterr().out.splitlines() if x.startswith("env fault")]
    crashes = [x for x in out if "vector env failed" in x]
    assert len(crashes) == 1 and "(env 1)" in crashes[0]
    # env 0's NaN fires before the crash and again in its restarted worker (its count restarts)
    assert tr.c["env_faults"] == len(out) == 3
    assert log.last("env_faults") == 3 and finite_replay(tr)
    assert all(length == 25 for _, length in log.data["train_length"])
    tr.close()


def test_repeating_env_faults_stop_the_run_keeping_its_checkpoint(tmp_path):
    schedule = {t: "raise" for t in range(60, 10_000)}
    tr, _ = trainer(tmp_path, {0: schedule}, sets=["train.max_env_faults=3"])
    with pytest.raises(EnvFaultError, match=r"env 0 faulted 3 episodes in a row \(last: "
                       r"RuntimeError: injected env failure\); fix the env or raise "
                       r"train.max_env_faults; the run stops and keeps its last checkpoint "
                       r"\(step000000000025\): continue with `worldzoo run --resume .*run`"):
        tr.run()
    kept = checkpoint.load(checkpoint.latest(tr.ckpt_root))
    assert kept["counters"]["env_steps"] == 25 and tr.c["env_faults"] == 3


# ------------------------------------------------------------------ training faults


def agent_and_batch():
    cfg = get_recipe("dreamerv1", "debug")
    env = make("gym:Pendulum-v1", seed=0)
    agent = Agent(cfg, env.observation_space, env.action_space)
    g = torch.Generator().manual_seed(0)
    batch = {"vector": torch.randn(4, 8, 3, generator=g),
             "action": torch.rand(4, 8, 1, generator=g) * 2 - 1,
             "reward": torch.randn(4, 8, generator=g),
             "is_first": torch.zeros(4, 8), "is_last": torch.zeros(4, 8),
             "is_terminal": torch.zeros(4, 8)}
    batch["is_first"][:, 0] = 1
    return agent, batch


def snapshot(agent):
    return ({k: v.clone() for k, v in agent.state_dict().items()},
            str(agent.optim.state_dict()))


@pytest.mark.parametrize("fault", ["nan_reward", "inf_obs", "inf_grad"])
def test_nonfinite_update_is_skipped_exactly(fault):
    agent, batch = agent_and_batch()
    guard = UpdateGuard(agent, agent.optim, FaultLimit(5, 1, TrainingFaultError,
                                                       lambda i, n, r: r))
    assert guard(lambda: agent.train_step(batch)) is not None  # a good update first
    params, opt = snapshot(agent)
    bad = {k: v.clone() for k, v in batch.items()}
    hook = None
    if fault == "nan_reward":
        bad["reward"][1, 3] = float("nan")
    elif fault == "inf_obs":
        bad["vector"][0, 2, 1] = float("inf")
    else:  # finite loss, infinite gradient
        param = next(agent.wm.parameters())
        hook = param.register_hook(lambda grad: grad * float("inf"))
    assert guard(lambda: agent.train_step(bad)) is None
    if hook is not None:
        hook.remove()
    assert guard.skipped == 1 and guard.limit.streak[0] == 1
    after, opt_after = snapshot(agent)
    assert all(torch.equal(params[k], after[k]) for k in params) and opt == opt_after
    assert guard(lambda: agent.train_step(batch)) is not None  # training goes on
    assert guard.limit.streak[0] == 0
    assert not all(torch.equal(params[k], v) for k, v in agent.state_dict().items())


def test_update_that_raises_is_skipped_exactly():
    """E.g. torch.distributions refusing a NaN parameter after the model has stepped."""
    agent, batch = agent_and_batch()
    guard = UpdateGuard(agent, agent.optim, FaultLimit(2, 1, TrainingFaultError,
                                                       lambda i, n, r: f"stopped: {r}"))
    guard(lambda: agent.train_step(batch))
    params, opt = snapshot(agent)

    def failing():
        agent.train_step(batch)  # weights and Adam moments change, then it fails
        raise ValueError("Expected parameter loc (Tensor of shape (4, 8, 1)) to satisfy the "
                         "constraint Real(), but found invalid values")

    assert guard(failing) is None
    after, opt_after = snapshot(agent)
    assert all(torch.equal(params[k], after[k]) for k in params) and opt == opt_after
    with pytest.raises(TrainingFaultError, match="stopped: ValueError: Expected parameter loc"):
        guard(failing)


def poison(tr, updates: set[int]):
    """Make the batches of the given update numbers carry a NaN reward."""
    sample = tr.replay.sample

    def poisoned(*args):
        batch = sample(*args)
        if tr.c["updates"] in updates:
            batch["reward"][0, 0] = float("nan")
        return batch

    tr.replay.sample = poisoned


def test_skipped_updates_are_counted_and_training_goes_on(tmp_path):
    tr, log = trainer(tmp_path, steps=160)
    poison(tr, {5, 6, 20, 33})
    tr.run()
    assert tr.c["skipped_updates"] == 4 and log.last("skipped_updates") == 4
    assert all(np.isfinite(v) for name, vals in log.data.items() for _, v in vals
               if "loss" in name)


def test_repeating_training_faults_stop_the_run_keeping_its_checkpoint(tmp_path):
    tr, _ = trainer(tmp_path, steps=400, sets=["train.max_skipped_updates=4"])
    poison(tr, set(range(40, 10_000)))
    with pytest.raises(TrainingFaultError, match=r"4 updates in a row were skipped \(non-finite "
                       r"loss or gradient, or a numerical error; last: .*nan.*\); lower the "
                       r"learning rates.*; the run stops and keeps its last checkpoint"):
        tr.run()
    kept = checkpoint.load(checkpoint.latest(tr.ckpt_root))
    assert kept["counters"]["updates"] <= 40 and tr.c["skipped_updates"] == 4
    assert all(torch.isfinite(v).all() for v in kept["agent"].values() if v.is_floating_point())
