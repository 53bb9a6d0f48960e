"""The training loop: prefill, act, store, update at the train ratio, evaluate, checkpoint.

Step accounting (DESIGN.md): env steps count simulator steps (action repeat included) and are
the x axis of every metric; policy steps are agent decisions (over all envs); updates are
gradient steps of the world model; train ratio = replayed (batch x length) steps per policy step.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from worldzoo import checkpoint, report
from worldzoo.agent import Agent, action_spec
from worldzoo.driver import Driver, make_vector_env
from worldzoo.replay import Replay

Logger = Callable[[str, float, int], None]


def env_factory(env_id: str, opts: dict, seed: int, i: int):
    """A picklable factory for env i (seed + i)."""
    from worldzoo.envs import make

    def thunk():
        return make(env_id, seed=seed + i, **opts)

    return thunk


def train_envs(env_id: str, opts: dict, seed: int, num_envs: int):
    """The backend's native vector env (e.g. Brax's batched step) when it has one, else
    gymnasium's (worker processes for N > 1); env i is seeded seed + i either way."""
    from worldzoo.envs import make_vector

    native = make_vector(env_id, num_envs, seed, **opts)
    if native is not None:
        return native
    fns = [env_factory(env_id, opts, seed, i) for i in range(num_envs)]
    return make_vector_env(fns, asynchronous=True)


class Trainer:
    def __init__(self, cfg: dict, env_id: str, seed: int, device: str, run_dir: Path,
                 log: Logger, steps: int | None = None, quiet: bool = False) -> None:
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
        self.envs = train_envs(env_id, opts, seed, self.num_envs)
        self.eval_envs = make_vector_env([env_factory(env_id, opts, seed + 10_000, 0)], False)
        obs_space = self.envs.single_observation_space
        act_space = self.envs.single_action_space
        self.action_dim, self.discrete = action_spec(act_space)
        self.agent = Agent(cfg, obs_space, act_space).to(device)
        self.driver = Driver(self.envs, self.action_dim, self.discrete)
        self.eval_driver = Driver(self.eval_envs, self.action_dim, self.discrete)
        self.replay = Replay(int(self.train["replay_capacity"]), self.num_envs, seed)
        self.rng = np.random.default_rng(seed + 1)
        self.c = {"env_steps": 0, "policy_steps": 0, "updates": 0, "episodes": 0,
                  "credit": 0.0, "pretrained": 0, "next_eval": 0, "next_ckpt": 0,
                  "next_log": 0}
        self.seq = self.train["batch_size"] * self.train["batch_length"]
        self.metrics: dict[str, list[float]] = defaultdict(list)
        self.last_return = float("nan")
        self._last_log_step = -1
        self.ckpt_root = self.run_dir / "checkpoints"
        self.before_save: Callable[[], None] | None = None  # e.g. flush logged metrics

    def close(self) -> None:
        """Close the training and evaluation envs."""
        self.envs.close()
        self.eval_envs.close()

    # -- persistence ------------------------------------------------------------------------
    def state(self) -> dict:
        ep_idx = [int(i) for i in self.envs.get_attr("episode_index")]
        ev_idx = [int(i) for i in self.eval_envs.get_attr("episode_index")]
        return {"agent": self.agent.state_dict(), "optim": self.agent.optim.state_dict(),
                "counters": dict(self.c), "torch_rng": torch.get_rng_state(),
                "np_rng": json.dumps(self.rng.bit_generator.state), "episode_index": ep_idx,
                "eval_episode_index": ev_idx}

    def save(self) -> Path:
        if self.before_save is not None:
            self.before_save()
        name = f"step{self.c['env_steps']:012d}"
        return checkpoint.save(self.ckpt_root, name, self.state(), extra=self._save_replay)

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
        self.replay.load(path / "replay")
        return int(self.c["env_steps"])

    # -- loop -------------------------------------------------------------------------------
    def update(self) -> None:
        batch = self.replay.sample(self.train["batch_size"], self.train["batch_length"],
                                   self.device)
        for k, v in self.agent.train_step(batch).items():
            self.metrics[k].append(float(v))
        self.c["updates"] += 1

    def run(self) -> dict[str, float]:
        c, t = self.c, self.train
        step = self.driver.reset()
        state = None
        bar = tqdm(total=self.total, initial=c["env_steps"], unit="step", smoothing=0.05,
                   disable=self.quiet, dynamic_ncols=True, mininterval=1.0)
        start, start_steps, start_updates = time.time(), c["env_steps"], c["updates"]
        try:
            while True:
                self.replay.add(step)
                c["policy_steps"] += self.num_envs
                if c["env_steps"] >= t["prefill"]:
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
        except KeyboardInterrupt:
            bar.close()
            path = self.save()
            print(f"interrupted: checkpoint saved to {path}; continue with "
                  f"`worldzoo run --resume {self.run_dir}`", flush=True)
            raise
        bar.close()
        self._flush_log(start, start_steps, start_updates)
        final = self.evaluate()
        self.save()
        return {"eval_return": final, "env_steps": c["env_steps"], "updates": c["updates"]}

    def _train_due(self) -> None:
        c, t = self.c, self.train
        if not c["pretrained"]:
            t0 = time.time()
            for _ in range(t["pretrain"]):
                self.update()
            c["pretrained"] = 1
            self._speed_notice((time.time() - t0) / max(1, t["pretrain"]))
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

    def evaluate(self) -> float:
        """Run eval episodes with the policy's mode; log their mean return (and videos).
        Runs on a forked torch RNG so evaluating never changes the training stream."""
        dev = self.agent.device
        with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
            return self._evaluate()

    def _evaluate(self) -> float:
        t, c = self.train, self.c
        returns, frames, episode = [], [], []
        want_video = bool(t.get("eval_video"))
        for ep in range(t["eval_episodes"]):
            cur = self.eval_driver.reset()
            state, total = None, 0.0
            while True:
                if ep == 0:
                    episode.append({k: v[0].copy() for k, v in cur.items()})
                    if want_video:
                        frames.append(self.eval_envs.call("render")[0])
                if cur["is_last"][0]:
                    break
                env_act, action, state = self.agent.policy(cur, state, explore=False)
                cur, _ = self.eval_driver.step(env_act, action.cpu().numpy())
                total += float(cur["reward"][0])
            returns.append(total)
        mean = float(np.mean(returns))
        self.log("eval_return", mean, c["env_steps"])
        if want_video:
            report.write_eval_media(self.run_dir / "videos", c["env_steps"], frames,
                                    episode, self.agent)
        return mean

