"""The training loop: prefill, act, store, update at the train ratio, evaluate, checkpoint.

Step accounting (DESIGN.md): env steps count simulator steps (action repeat included) and are
the x axis of every metric; policy steps are agent decisions (over all envs); updates are
gradient steps of the world model; train ratio = replayed (batch x length) steps per policy step.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from worldzoo import checkpoint, report
from worldzoo.agent import EVAL_POLICIES, PRECISIONS, Agent, action_spec, check_agent
from worldzoo.config import ConfigError
from worldzoo.driver import Driver, make_vector_env
from worldzoo.faults import (
    FaultGuard,
    FaultLimit,
    RunStoppedError,
    TrainingFaultError,
    UpdateGuard,
)
from worldzoo.graphs import GraphedTrainStep
from worldzoo.interrupts import Interrupts
from worldzoo.perf import cpu_bf16_native, tune_allocator
from worldzoo.replay import STORAGES, human_bytes, make_replay, step_bytes

Logger = Callable[[str, float, int], None]


def env_factory(env_id: str, opts: dict, seed: int, i: int, wrap=None):
    """A picklable factory for env i (seed + i), inside a `FaultGuard`; `wrap(env, i)` may
    wrap it first (tests inject faults this way)."""
    from worldzoo.envs import make

    def thunk():
        env = make(env_id, seed=seed + i, **opts)
        return FaultGuard(wrap(env, i) if wrap is not None else env)

    return thunk


# train.KEY -> (check, what a right value is); run before anything is written
TRAIN_CHECKS = {
    "steps": (lambda v: v >= 1, "an int >= 1"),
    "batch_size": (lambda v: v >= 1, "an int >= 1"),
    "batch_length": (lambda v: v >= 2, "an int >= 2"),
    "horizon": (lambda v: v >= 1, "an int >= 1"),
    "gamma": (lambda v: 0 < v <= 1, "a float in (0, 1]"),
    "lam": (lambda v: 0 <= v <= 1, "a float in [0, 1]"),
    "train_ratio": (lambda v: v > 0, "a float > 0"),
    "prefill": (lambda v: v >= 0, "an int >= 0"),
    "pretrain": (lambda v: v >= 0, "an int >= 0"),
    "replay_capacity": (lambda v: v >= 1, "an int >= 1"),
    "replay_storage": (lambda v: v in STORAGES, f"one of {', '.join(STORAGES)}"),
    "eval_every": (lambda v: v >= 1, "an int >= 1"),
    "eval_episodes": (lambda v: v >= 1, "an int >= 1"),
    "log_every": (lambda v: v >= 1, "an int >= 1"),
    "checkpoint_every": (lambda v: v >= 1, "an int >= 1"),
    "max_env_faults": (lambda v: v >= 1, "an int >= 1"),
    "threads": (lambda v: v >= 0, "an int >= 0 (0: torch's default)"),
    "precision": (lambda v: v in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
    "eval_policy": (lambda v: v in EVAL_POLICIES, f"one of {', '.join(EVAL_POLICIES)}"),
    "max_skipped_updates": (lambda v: v >= 1, "an int >= 1"),
}


def _training_fault(i: int, streak: int, reason: str) -> str:
    return (f"{streak} updates in a row were skipped (non-finite loss or gradient, or a "
            f"numerical error; last: {reason}); lower the learning rates, check the "
            "observations and rewards, or raise train.max_skipped_updates")


def train_envs(env_id: str, opts: dict, seed: int, num_envs: int, wrap_env=None):
    """The backend's native vector env (e.g. Brax's batched step) when it has one, else
    gymnasium's (worker processes for N > 1); env i is seeded seed + i either way."""
    from worldzoo.envs import make_vector

    if wrap_env is None:
        native = make_vector(env_id, num_envs, seed, **opts)
        if native is not None:
            return native
    fns = [env_factory(env_id, opts, seed, i, wrap_env) for i in range(num_envs)]
    return make_vector_env(fns, asynchronous=True)


class Trainer:
    @staticmethod
    def check(cfg: dict, obs_space, act_space) -> None:
        """Fail with a ConfigError (before anything is written) when the train settings are
        out of range or the model cannot be built from the config."""
        t = cfg["train"]
        for key, (ok, right) in TRAIN_CHECKS.items():
            if key in t and not ok(t[key]):
                raise ConfigError(f"train.{key}={t[key]!r} is out of range; use {right}")
        num_envs = cfg["env"].get("num_envs", 1)
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ConfigError(f"env.num_envs={num_envs!r} is invalid; use an int >= 1")
        if t["replay_capacity"] < num_envs * t["batch_length"]:
            raise ConfigError(f"train.replay_capacity={t['replay_capacity']} holds fewer than "
                              f"batch_length ({t['batch_length']}) steps per env; use at least "
                              f"{num_envs * t['batch_length']}")
        try:
            check_agent(cfg, obs_space, act_space)  # impossible slot pairs say why
        except ConfigError:
            raise
        except Exception as err:  # noqa: BLE001 - e.g. a size that is not positive
            first = (str(err).strip().splitlines() or [""])[0][:200]
            raise ConfigError(f"cannot build the model from this config "
                              f"({type(err).__name__}: {first}); check the sizes given "
                              "with --set (they must be positive)") from None

    def __init__(self, cfg: dict, env_id: str, seed: int, device: str, run_dir: Path,
                 log: Logger, steps: int | None = None, quiet: bool = False,
                 wrap_env=None) -> None:
        self.cfg, self.train = cfg, cfg["train"]
        self.env_id, self.seed, self.device, self.run_dir = env_id, seed, device, Path(run_dir)
        self.log, self.quiet = log, quiet
        self.total = int(steps if steps is not None else self.train["steps"])
        opts = dict(cfg["env"])
        self.num_envs = int(opts.pop("num_envs", 1))
        self.env_opts = opts
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        t = self.train
        if t.get("threads", 0) > 0:
            torch.set_num_threads(int(t["threads"]))
        tune_allocator()
        if (t.get("precision") == "bfloat16" and not str(device).startswith("cuda")
                and cpu_bf16_native() is False and not quiet):
            print("note: train.precision=bfloat16 on a CPU without AMX-BF16 or AVX512-BF16 is "
                  "emulated and slower than float32", flush=True)
        if str(device).startswith("cuda") and not t.get("cuda_graph") and not quiet:
            print("note: --set train.cuda_graph=true replays each update as one CUDA graph "
                  "(the same updates, 3-8x faster per update on an H200; README, Speed)",
                  flush=True)
        eval_fns = [env_factory(env_id, opts, seed + 10_000, 0)]
        max_faults = int(t.get("max_env_faults", 10))
        self.driver = Driver(lambda: train_envs(env_id, opts, seed, self.num_envs, wrap_env),
                             0, False,
                             max_faults, on_fault=self._on_env_fault)
        self.eval_driver = Driver(lambda: make_vector_env(eval_fns, False), 0, False,
                                  max_faults, on_fault=self._on_env_fault)
        obs_space = self.envs.single_observation_space
        act_space = self.envs.single_action_space
        self.action_dim, self.discrete = action_spec(act_space)
        for d in (self.driver, self.eval_driver):
            d.action_dim, d.discrete = self.action_dim, self.discrete
        self.agent = Agent(cfg, obs_space, act_space).to(device)
        # the learner step: eager, or one CUDA graph replayed per update (train.cuda_graph)
        self.train_step = (GraphedTrainStep(self.agent) if t.get("cuda_graph")
                           else self.agent.train_step)
        self.update_guard = UpdateGuard(self.agent, self.agent.optim, FaultLimit(
            int(t.get("max_skipped_updates", 20)), 1, TrainingFaultError, _training_fault))
        self.replay = make_replay(t.get("replay_storage", "memory"), int(t["replay_capacity"]),
                                  self.num_envs, seed, self.run_dir / "replay")
        self._replay_notice(step_bytes(obs_space, self.action_dim))
        self.rng = np.random.default_rng(seed + 1)
        self.c = {"env_steps": 0, "policy_steps": 0, "updates": 0, "episodes": 0,
                  "credit": 0.0, "pretrained": 0, "next_eval": 0, "next_ckpt": 0,
                  "next_log": 0, "env_faults": 0, "skipped_updates": 0}
        self.seq = self.train["batch_size"] * self.train["batch_length"]
        self.metrics: dict[str, list[float]] = defaultdict(list)
        self.last_return = float("nan")
        self._last_log_step = -1
        self._last_eval: tuple[int, float] | None = None  # (env step, mean return)
        self.ckpt_root = self.run_dir / "checkpoints"
        self.before_save: Callable[[], None] | None = None  # e.g. flush logged metrics

    @property
    def envs(self):
        return self.driver.envs

    @property
    def eval_envs(self):
        return self.eval_driver.envs

    def _replay_notice(self, per_step: int) -> None:
        """Print the replay's capacity and the memory (or disk) it will take when full."""
        cap = int(self.train["replay_capacity"])
        total = cap * per_step
        where = ("RAM" if self.replay.storage == "memory"
                 else f"disk, under {self.run_dir / 'replay'}")
        line = (f"replay: capacity {cap:,} steps x {human_bytes(per_step)} = "
                f"{human_bytes(total)} when full ({where})")
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        if self.replay.storage == "memory" and total > 0.8 * ram:
            line += (f"; more than this machine's {human_bytes(ram)} of RAM: use "
                     "--set train.replay_storage=disk or a smaller train.replay_capacity")
        print(line, flush=True)

    def _on_env_fault(self, i: int, reason: str) -> None:
        self.c["env_faults"] += 1
        print(f"env fault at env step {self.c['env_steps']} (env {i}): {reason}; the episode "
              f"ends, training goes on ({self.c['env_faults']} so far)", flush=True)

    # -- persistence ------------------------------------------------------------------------
    def state(self) -> dict:
        ep_idx = [int(i) for i in self.envs.get_attr("episode_index")]
        ev_idx = [int(i) for i in self.eval_envs.get_attr("episode_index")]
        return {"agent": self.agent.state_dict(), "optim": self.agent.optim.state_dict(),
                "counters": dict(self.c), "torch_rng": torch.get_rng_state(),
                "np_rng": json.dumps(self.rng.bit_generator.state), "episode_index": ep_idx,
                "eval_episode_index": ev_idx,
                "pending_metrics": {k: list(v) for k, v in self.metrics.items()}}

    def save(self) -> Path:
        if self.before_save is not None:
            self.before_save()
        name = f"step{self.c['env_steps']:012d}"
        path = checkpoint.save(self.ckpt_root, name, self.state(), extra=self._save_replay)
        self.replay.committed()
        return path

    def _save_replay(self, directory: Path) -> None:
        self.replay.save(directory / "replay")

    def restore(self) -> int:
        """Load the newest checkpoint of this run; returns its env step."""
        path = checkpoint.latest(self.ckpt_root)
        state = checkpoint.load(path, self.device)
        self.agent.load_state_dict(state["agent"])
        self.agent.optim.load_state_dict(state["optim"])
        self.c.update(state["counters"])
        torch.set_rng_state(state["torch_rng"].cpu())
        self.rng.bit_generator.state = json.loads(state["np_rng"])
        self.envs.set_attr("episode_index", state["episode_index"])
        self.eval_envs.set_attr("episode_index", state["eval_episode_index"])
        self.metrics = defaultdict(list, {k: list(v) for k, v in
                                          state.get("pending_metrics", {}).items()})
        self.replay.load(path / "replay")
        self.update_guard.limit.total = int(self.c["skipped_updates"])
        return int(self.c["env_steps"])

    # -- loop -------------------------------------------------------------------------------
    def update(self) -> None:
        """One update; a non-finite one is undone and counted (`skipped_updates`)."""
        batch = self.replay.sample(self.train["batch_size"], self.train["batch_length"],
                                   self.device)
        try:
            metrics = self.update_guard(lambda: self.train_step(batch))
        finally:
            self.c["skipped_updates"] = self.update_guard.skipped
        if metrics is not None:
            for k, v in metrics.items():
                self.metrics[k].append(float(v))
        self.c["updates"] += 1

    def run(self) -> dict[str, float]:
        """Train to `steps` env steps. Faults that keep repeating stop it with a
        RunStoppedError naming the checkpoint it keeps (none is saved after them)."""
        try:
            return self._run()
        except RunStoppedError as err:
            if checkpoint.has_checkpoint(self.ckpt_root):
                step = checkpoint.latest(self.ckpt_root).name
                kept = (f"keeps its last checkpoint ({step}): continue with "
                        f"`worldzoo run --resume {self.run_dir}`")
            else:
                kept = "has no checkpoint yet"
            raise type(err)(f"{err}; the run stops and {kept}") from None

    def _run(self) -> dict[str, float]:
        c, t = self.c, self.train
        step = self.driver.reset()
        state = None
        bar = tqdm(total=self.total, initial=c["env_steps"], unit="step", smoothing=0.05,
                   disable=self.quiet, dynamic_ncols=True, mininterval=1.0)
        start, start_steps, start_updates = time.time(), c["env_steps"], c["updates"]
        with Interrupts() as interrupts:
            while True:
                if interrupts.requested:
                    bar.close()
                    path = self.save()
                    print(f"{interrupts.requested}: checkpoint saved to {path}; continue with "
                          f"`worldzoo run --resume {self.run_dir}`", flush=True)
                    raise KeyboardInterrupt
                self.replay.add(step)
                c["policy_steps"] += self.num_envs
                if (c["env_steps"] >= t["prefill"]
                        and self.replay.steps_per_env >= t["batch_length"]):
                    self._train_due()
                if c["env_steps"] >= c["next_log"]:
                    self._flush_log(start, start_steps, start_updates)
                    c["next_log"] = c["env_steps"] + t["log_every"]
                if c["env_steps"] >= c["next_eval"] and c["updates"] > 0:
                    self.evaluate()
                    c["next_eval"] = c["env_steps"] + t["eval_every"]
                if c["env_steps"] >= self.total:
                    break
                boundary = self.driver.all_last()
                if c["env_steps"] >= c["next_ckpt"] and (boundary or self.num_envs > 1):
                    c["next_ckpt"] = c["env_steps"] + t["checkpoint_every"]
                    self.save()
                if boundary:  # every env is reset next: no decision to make
                    env_act, agent_act, state = self.driver.zero_actions(), 0.0, None
                elif c["env_steps"] < t["prefill"]:
                    env_act, agent_act = self.driver.random_actions(self.rng)
                else:
                    env_act, action, state = self.agent.policy(step, state, explore=True)
                    agent_act = action.cpu().numpy()
                prev = c["env_steps"]
                step, done = self.driver.step(env_act, agent_act)
                c["env_steps"] += self.driver.last_env_steps
                for ret, length in done:
                    c["episodes"] += 1
                    self.last_return = ret
                    self.log("train_return", ret, c["env_steps"])
                    self.log("train_length", length, c["env_steps"])
                bar.update(c["env_steps"] - prev)
                bar.set_postfix(updates=c["updates"], ret=f"{self.last_return:.1f}",
                                refresh=False)
            bar.close()
            self._flush_log(start, start_steps, start_updates)
            done_eval = self._last_eval is not None and self._last_eval[0] == c["env_steps"]
            final = self._last_eval[1] if done_eval else self.evaluate()
            self.save()
        return {"eval_return": final, "env_steps": c["env_steps"], "updates": c["updates"]}

    def close(self) -> None:
        """Close the envs (worker processes included)."""
        for d in (self.driver, self.eval_driver):
            try:
                d.close()
            except Exception:  # noqa: BLE001 - closing a broken env must not hide the cause
                pass

    def _train_due(self) -> None:
        c, t = self.c, self.train
        if not c["pretrained"]:
            t0 = time.time()
            for i in range(t["pretrain"]):
                self.update()
                if i == min(2, t["pretrain"] - 1):  # a few updates tell the speed
                    self._speed_notice((time.time() - t0) / (i + 1))
            c["pretrained"] = 1
        c["credit"] += self.num_envs * t["train_ratio"] / self.seq
        while c["credit"] >= 1.0:
            self.update()
            c["credit"] -= 1.0

    def _speed_notice(self, sec_per_update: float) -> None:
        """Say how long the run will take at the measured update speed when that is long."""
        t = self.train
        repeat = self.c["env_steps"] / max(1, self.c["policy_steps"]) * self.num_envs
        policy_steps = (self.total - self.c["env_steps"]) / max(1.0, repeat)
        updates = policy_steps * t["train_ratio"] / self.seq
        hours = updates * sec_per_update / 3600
        if hours > 12 and not self.quiet:
            hint = ("" if str(self.device).startswith("cuda") else
                    " On CPU, `--preset small` with vector observations (env.obs=vector) "
                    "is the practical size.")
            print(f"note: measured {sec_per_update:.2f} s/update; {updates:,.0f} updates "
                  f"remain, about {hours:,.0f} hours of updates.{hint}", flush=True)

    def _flush_log(self, start: float, start_steps: int, start_updates: int) -> None:
        c = self.c
        step = c["env_steps"]
        if step == self._last_log_step:  # at most one record per metric and env step
            return
        self._last_log_step = step
        for k, vals in self.metrics.items():
            if vals:
                self.log(k, float(np.mean(vals)), step)
        self.metrics.clear()
        elapsed = max(1e-6, time.time() - start)
        self.log("env_steps_per_s", (step - start_steps) / elapsed, step)
        self.log("updates_per_s", (c["updates"] - start_updates) / elapsed, step)
        self.log("updates", c["updates"], step)
        self.log("policy_steps", c["policy_steps"], step)
        replayed = c["updates"] * self.seq
        self.log("train_ratio", replayed / max(1, c["policy_steps"]), step)
        self.log("env_faults", c["env_faults"], step)
        self.log("skipped_updates", c["skipped_updates"], step)
        if self.before_save is not None:
            self.before_save()  # metrics on disk at every log point, not only at checkpoints

    def evaluate(self) -> float:
        """Run eval episodes with the policy's mode (`train.eval_policy=sample`: samples from
        the policy, without exploration noise); log their mean return (and videos). Runs on a
        forked torch RNG so evaluating never changes the training stream."""
        dev = self.agent.device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            return self._evaluate()

    def _evaluate(self) -> float:
        t, c = self.train, self.c
        returns, frames, episode = [], [], []
        want_video = bool(t.get("eval_video"))
        sample = t.get("eval_policy", "mode") == "sample"
        for ep in range(t["eval_episodes"]):
            cur = self.eval_driver.reset()
            state, total = None, 0.0
            while True:
                if ep == 0:
                    episode.append({k: v[0].copy() for k, v in cur.items()})
                    if want_video and "image" not in cur:  # pixel obs are the frames
                        frames.append(self.eval_envs.call("render")[0])
                if cur["is_last"][0]:
                    break
                env_act, action, state = self.agent.policy(cur, state, explore=False,
                                                           sample=sample)
                cur, _ = self.eval_driver.step(env_act, action.cpu().numpy())
                total += float(cur["reward"][0])
            returns.append(total)
        mean = float(np.mean(returns))
        self.log("eval_return", mean, c["env_steps"])
        self._last_eval = (c["env_steps"], mean)
        if want_video:
            report.write_eval_media(self.run_dir / "videos", c["env_steps"], frames,
                                    episode, self.agent)
        return mean

