"""Real-env rollouts in parallel: a process pool whose workers each hold one env and a CPU copy
of V and M; a job is one episode (a candidate's parameters and a seed). Jobs are seeded
explicitly, so results do not depend on which worker ran them. With `workers=1` episodes run
in the calling process."""

from __future__ import annotations

import multiprocessing as mp
from collections.abc import Sequence

import torch

from worldzoo.worldmodels.models import Job, WorldModels, run_episode

_WORKER: dict = {}


def _build(cfg: dict, env_id: str, opts: dict, weights: dict) -> dict:
    from worldzoo.envs import make

    env = make(env_id, seed=0, **opts)
    with torch.random.fork_rng():  # building here must not move the caller's torch RNG
        wm = WorldModels(cfg, env.observation_space, env.action_space)
    wm.load_state_dict(weights)
    wm.eval()
    return {"env": env, "wm": wm}


def _init(cfg: dict, env_id: str, opts: dict, weights: dict) -> None:
    """Build the worker's env and models once (a pool is made per V/M version)."""
    torch.set_num_threads(1)
    _WORKER.update(_build(cfg, env_id, opts, weights))


def _run(job: Job) -> dict:
    return run_episode(_WORKER["env"], _WORKER["wm"], job)


class Rollouts:
    """Runs episode jobs with the given V/M weights in `workers` processes."""

    def __init__(self, cfg: dict, env_id: str, opts: dict, weights: dict, workers: int) -> None:
        self.workers = max(1, int(workers))
        args = (cfg, env_id, opts, {k: v.cpu() for k, v in weights.items()})
        self.pool, self._local = None, {}
        if self.workers == 1:
            self._local = _build(*args)
        else:
            ctx = mp.get_context("spawn")
            self.pool = ctx.Pool(self.workers, initializer=_init, initargs=args)

    def run(self, jobs: Sequence[Job]) -> list[dict]:
        """Results of the jobs, in order."""
        if self.pool is None:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)  # per-step batches of one: threads only add contention
            try:
                return [run_episode(self._local["env"], self._local["wm"], job) for job in jobs]
            finally:
                torch.set_num_threads(threads)
        return self.pool.map(_run, list(jobs), chunksize=1)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()
            self.pool = None
        else:
            self._local["env"].close()

    def __enter__(self) -> Rollouts:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
