"""The World Models pipeline (Ha & Schmidhuber 2018): collect rollouts -> train V -> train M ->
search C with CMA-ES (in the real env or in M's dream), repeated for `train.iterations`
(1 = the paper's CarRacing pipeline; more = its iterative procedure: collect with the current
C, retrain V and M, search again).

Step accounting: every simulator step counts as an env step (random and controller
collection, every CMA-ES candidate episode in the real env, evaluation) and is the x axis of
every metric, as for the Dreamers. Dream steps are counted separately as `dream_steps`.
Stages are 0 collect, 1 train V and M, 2 CMA-ES; checkpoints are taken at stage ends and every
`checkpoint_every` generations, and a resumed run continues from the stage it saved in."""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from worldzoo import checkpoint
from worldzoo.config import ConfigError
from worldzoo.envs import make
from worldzoo.worldmodels.data import Episodes, windows
from worldzoo.worldmodels.dream import DreamSim
from worldzoo.worldmodels.es import CMAES
from worldzoo.worldmodels.models import Job, WorldModels
from worldzoo.worldmodels.rollout import Rollouts

Logger = Callable[[str, float, int], None]
COLLECT, MODELS, SEARCH = 0, 1, 2


def job_seed(seed: int, kind: int, index: int) -> int:
    """The reset seed of episode `index` of stream `kind` (0 train, 1 eval) of a run."""
    return int(np.random.SeedSequence(seed, spawn_key=(7, kind, index)).generate_state(1)[0])


class WorldModelsTrainer:
    @staticmethod
    def check(cfg: dict, obs_space, act_space) -> None:
        """Assemble V, M and C on the meta device before anything is written, so a part that
        does not fit the env (e.g. vae=mlp on pixels) fails with its message first."""
        precision = cfg["train"].get("precision", "float32")
        if precision != "float32":
            raise ConfigError(f"train.precision={precision!r}: World Models trains in float32 "
                              "(bfloat16 is a Dreamer learner-step option); drop the --set")
        if cfg["train"].get("cuda_graph", False):
            raise ConfigError("train.cuda_graph: World Models has no Dreamer update to capture "
                              "(its V, M and C train apart); drop the --set")
        if cfg["train"].get("eval_policy", "mode") != "mode":
            raise ConfigError("train.eval_policy: the World Models controller is deterministic "
                              "(a linear map, evaluated as is); drop the --set")
        with torch.device("meta"):
            WorldModels(cfg, obs_space, act_space)

    def __init__(self, cfg: dict, env_id: str, seed: int, device: str, run_dir: Path,
                 log: Logger, steps: int | None = None, quiet: bool = False) -> None:
        self.cfg, self.train = cfg, cfg["train"]
        self.env_id, self.seed, self.device, self.run_dir = env_id, seed, device, Path(run_dir)
        self.log, self.quiet = log, quiet
        self.total = int(steps if steps is not None else self.train["steps"])
        self.env_opts = {k: v for k, v in cfg["env"].items() if k != "num_envs"}
        if self.train["threads"] > 0:  # small CPU batches on a shared machine: 1 is fastest
            torch.set_num_threads(int(self.train["threads"]))
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        env = make(env_id, seed=seed, **self.env_opts)
        self.action_space = env.action_space
        self.wm = WorldModels(cfg, env.observation_space, env.action_space).to(device)
        env.close()
        t = self.train
        self.vae_opt = torch.optim.Adam(self.wm.vae.parameters(), lr=t["vae_lr"])
        self.memory_opt = torch.optim.Adam(self.wm.memory.parameters(), lr=t["memory_lr"])
        self.data = Episodes(self.run_dir / "data")
        self.params = self.wm.controller.initial_params()
        self.es: CMAES | None = None
        self.rng = np.random.default_rng(seed + 1)
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(seed + 2)
        self.c = {"env_steps": 0, "episodes": 0, "evals": 0, "iteration": 0, "stage": COLLECT,
                  "generation": 0, "generations": 0, "dream_steps": 0, "vae_updates": 0,
                  "memory_updates": 0, "data": 0}
        self.ckpt_root = self.run_dir / "checkpoints"
        self.before_save: Callable[[], None] | None = None  # e.g. flush logged metrics
        self._rollouts: Rollouts | None = None
        self._start = time.time()

    # -- persistence ------------------------------------------------------------------------
    def state(self) -> dict:
        return {"wm": self.wm.state_dict(), "vae_opt": self.vae_opt.state_dict(),
                "memory_opt": self.memory_opt.state_dict(),
                "params": torch.as_tensor(self.params), "es": self.es.state() if self.es else {},
                "counters": dict(self.c, data=len(self.data)),
                "torch_rng": torch.get_rng_state(), "gen_rng": self.gen.get_state(),
                "np_rng": json.dumps(self.rng.bit_generator.state)}

    def save(self) -> Path:
        if self.before_save is not None:
            self.before_save()
        name = f"step{self.c['env_steps']:012d}_g{self.c['generations']:06d}"
        return checkpoint.save(self.ckpt_root, name, self.state())

    def restore(self) -> int:
        """Load the newest checkpoint of this run; returns its env step."""
        state = checkpoint.load(checkpoint.latest(self.ckpt_root), self.device)
        self.wm.load_state_dict(state["wm"])
        self.vae_opt.load_state_dict(state["vae_opt"])
        self.memory_opt.load_state_dict(state["memory_opt"])
        self.params = state["params"].cpu().numpy().astype(float)
        self.c.update(state["counters"])
        self.data.load(int(self.c["data"]))
        if state["es"]:
            self.es = self._new_es()
            self.es.load_state({k: v.cpu() for k, v in state["es"].items()})
        torch.set_rng_state(state["torch_rng"].cpu())
        self.gen.set_state(state["gen_rng"].cpu())
        self.rng.bit_generator.state = json.loads(state["np_rng"])
        return int(self.c["env_steps"])

    # -- real-env episodes ------------------------------------------------------------------
    def rollouts(self) -> Rollouts:
        """The worker pool for the current V and M (rebuilt after they are retrained)."""
        if self._rollouts is None:
            self._rollouts = Rollouts(self.cfg, self.env_id, self.env_opts,
                                      self.wm.state_dict(), self.train["workers"])
        return self._rollouts

    def _drop_rollouts(self) -> None:
        if self._rollouts is not None:
            self._rollouts.close()
            self._rollouts = None

    def play(self, params: list[np.ndarray | None], kind: int = 0, record: bool = False,
             noise: float = 0.0) -> list[dict]:
        """Run one real episode per entry (None: random actions); counts their env steps."""
        key = "episodes" if kind == 0 else "evals"
        jobs = []
        for p in params:
            jobs.append(Job(p, job_seed(self.seed, kind, self.c[key]), record, noise))
            self.c[key] += 1
        results = self.rollouts().run(jobs)
        self.c["env_steps"] += sum(r["env_steps"] for r in results)
        return results

    # -- stages -----------------------------------------------------------------------------
    def collect(self) -> None:
        """Random rollouts (first iteration) or rollouts of the current C with exploration
        noise (later iterations) into the dataset, within the env-step budget."""
        t, c = self.train, self.c
        first = c["iteration"] == 0
        count = t["random_rollouts"] if first else t["collect_rollouts"]
        policy = None if first else self.params
        chunk = 2 * max(1, t["workers"])
        done = 0
        while done < count and c["env_steps"] < self.total:
            n = min(chunk, count - done)
            for r in self.play([policy] * n, record=True, noise=0.0 if first
                               else t["collect_noise"]):
                self.data.add(r["data"])
                self.log("train_return", r["return"], c["env_steps"])
                self.log("train_length", r["length"], c["env_steps"])
            done += n
        self._say(f"collected {done} episodes ({self.data.steps} steps in the dataset)")

    def train_models(self) -> None:
        """V on every recorded frame for `vae_epochs`, then M on windows of z sequences."""
        t, c, dev = self.train, self.c, self.device
        frames = torch.as_tensor(self.data.frames())
        self.wm.vae.fit_normalizer(frames.to(dev))
        updates = math.ceil(t["vae_epochs"] * len(frames) / t["vae_batch"])
        sums: dict[str, float] = {}
        self.wm.train()
        for _ in range(updates):
            idx = torch.as_tensor(self.rng.integers(0, len(frames), t["vae_batch"]))
            loss, metrics = self.wm.vae.loss(frames[idx].to(dev))
            self.vae_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.vae_opt.step()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) / updates
        c["vae_updates"] += updates
        zs = self._encode_episodes()
        for _ in range(t["memory_updates"]):
            batch = windows(self.data.episodes, zs, t["memory_batch"], t["memory_length"],
                            self.rng, dev)
            mean, std = batch["z"].chunk(2, -1)
            batch["z"] = mean + std * torch.randn_like(std)  # the paper samples z per batch
            loss, metrics = self.wm.memory.loss(batch)
            self.memory_opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.wm.memory.parameters(), t["memory_clip"])
            self.memory_opt.step()
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v) / max(1, t["memory_updates"])
        c["memory_updates"] += t["memory_updates"]
        self.wm.eval()
        for k, v in sums.items():
            self.log(k, v, c["env_steps"])
        self._say(f"trained V ({updates} updates) and M ({t['memory_updates']} updates): "
                  + ", ".join(f"{k} {v:.3g}" for k, v in sums.items()))
        self._drop_rollouts()  # workers must see the new V and M

    @torch.no_grad()
    def _encode_episodes(self) -> list[np.ndarray]:
        """[mean, std] of z for every frame of every episode, [T+1, 2Z] each."""
        out = []
        for ep in self.data.episodes:
            x = self.wm.vae.prep(torch.as_tensor(ep["obs"]).to(self.device))
            mean, logvar = self.wm.vae.encode(x)
            out.append(torch.cat([mean, torch.exp(0.5 * logvar)], -1).cpu().numpy())
        return out

    def _new_es(self) -> CMAES:
        t = self.train
        return CMAES(self.params, t["sigma"], t["population"],
                     self.seed * 1000 + self.c["iteration"])

    def search(self) -> None:
        """CMA-ES generations of this iteration, within the env-step budget."""
        t, c = self.train, self.c
        if self.es is None:
            self.es = self._new_es()
        dream = self.wm.controller.train_in == "dream"
        sim = self._dream_sim() if dream else None
        while c["generation"] < t["generations"] and c["env_steps"] < self.total:
            candidates = self.es.ask()
            if sim is not None:
                params = torch.as_tensor(candidates, dtype=torch.float32, device=self.device)
                fitness, steps = sim.evaluate(params, t["rollouts"])
                c["dream_steps"] += steps
                self.log("dream_return", float(np.mean(fitness)), c["env_steps"])
                self.log("dream_steps", c["dream_steps"], c["env_steps"])
            else:
                results = self.play([p for p in candidates for _ in range(t["rollouts"])])
                returns = np.array([r["return"] for r in results])
                fitness = returns.reshape(len(candidates), t["rollouts"]).mean(1)
                self.log("train_return", float(returns.mean()), c["env_steps"])
            self.es.tell(candidates, fitness)
            self.params = self.es.mean
            c["generation"] += 1
            c["generations"] += 1
            for name, value in (("es_mean_fitness", np.mean(fitness)),
                                ("es_best_fitness", np.max(fitness)),
                                ("es_sigma", self.es.sigma), ("generations", c["generations"])):
                self.log(name, float(value), c["env_steps"])
            self._say(f"generation {c['generations']}: fitness mean {np.mean(fitness):.2f} "
                      f"best {np.max(fitness):.2f} sigma {self.es.sigma:.3f}")
            if c["generations"] % t["eval_every"] == 0:
                self.evaluate()
            if c["generations"] % t["checkpoint_every"] == 0:
                self.save()

    def _dream_sim(self) -> DreamSim:
        with torch.no_grad():
            first = torch.as_tensor(self.data.first_frames()).to(self.device)
            start_z = self.wm.vae.embed(first)
        return DreamSim(self.wm, start_z, None, self.train["dream_length"], self.gen)

    def evaluate(self) -> float:
        """Mean real-env return of the CMA-ES mean over `eval_episodes` episodes (counted)."""
        results = self.play([self.params] * self.train["eval_episodes"], kind=1)
        mean = float(np.mean([r["return"] for r in results]))
        self.log("eval_return", mean, self.c["env_steps"])
        self._say(f"eval return {mean:.2f} over {len(results)} episodes "
                  f"at {self.c['env_steps']} env steps")
        return mean

    # -- loop -------------------------------------------------------------------------------
    def run(self) -> dict[str, float]:
        t, c = self.train, self.c
        stages = {COLLECT: self.collect, MODELS: self.train_models, SEARCH: self.search}
        try:
            while c["iteration"] < t["iterations"] and c["env_steps"] < self.total:
                stages[c["stage"]]()
                if c["stage"] == SEARCH:
                    c.update(iteration=c["iteration"] + 1, generation=0, stage=COLLECT)
                    self.es = None
                else:
                    c["stage"] += 1
                self.save()
            final = self.evaluate()
            self.log("env_steps_per_s", c["env_steps"] / max(1e-6, time.time() - self._start),
                     c["env_steps"])
            self.save()
        except KeyboardInterrupt:
            path = self.save()
            print(f"interrupted: checkpoint saved to {path}; continue with "
                  f"`worldzoo run --resume {self.run_dir}`", flush=True)
            raise
        finally:
            self._drop_rollouts()
        return {"eval_return": final, "env_steps": c["env_steps"],
                "dream_steps": c["dream_steps"], "generations": c["generations"]}

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(f"[{time.time() - self._start:7.1f}s it {self.c['iteration']}] {text}",
                  flush=True)
