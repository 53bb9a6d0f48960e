"""Whole learner updates with the fused posterior unroll (`worldzoo.components.rssm_fused`)
against the autograd unroll: the same recipe, seed and batches (random-action episodes of the
real env, so episodes start mid-sequence), both in float64, and the largest parameter
difference after each update. A learning-curve A/B of the two paths in float32 compares two
draws of rounding-level chaos; this shows whether the paths compute the same training. Then,
on `--accuracy-batches` batches, the float32 world-model gradients of each path against the
float64 ones from the same initial parameters and the same uniforms (drawn in float64 for
both precisions, so the categorical samples agree): is either path less accurate?

    python benchmarks/fused_equivalence.py --recipe dreamerv3 --preset small --updates 100
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import torch

from worldzoo import gemm
from worldzoo.agent import Agent
from worldzoo.components import rssm, rssm_fused
from worldzoo.config import apply_sets, get_recipe
from worldzoo.driver import Driver, make_vector_env
from worldzoo.replay import Replay
from worldzoo.trainer import env_factory


def flat(agent: Agent) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in agent.parameters()]).clone()


def _sample_onehot64(probs: torch.Tensor) -> torch.Tensor:
    """`dists.sample_onehot` with its uniforms drawn in float64 whatever the probs' dtype, so
    float32 and float64 runs from one seed draw the same samples."""
    cdf = probs.cumsum(-1)
    u = torch.rand(cdf[..., :1].shape, dtype=torch.float64).to(cdf.dtype) * cdf[..., -1:]
    idx = torch.searchsorted(cdf, u, right=True).clamp_max(probs.shape[-1] - 1)
    return torch.zeros_like(probs).scatter_(-1, idx, 1.0)


def wm_grad(agent: Agent, batch: dict, fused: bool, dtype: torch.dtype, seed: int):
    """(world-model gradient as one float64 vector, posterior samples) on `batch` cast to
    `dtype`."""
    rssm_fused.ENABLED = fused
    agent.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in batch.items()}
    loss, post, _ = agent.wm.loss(cast)
    loss.backward()
    grad = torch.cat([p.grad.flatten().double() for p in agent.wm.parameters()
                      if p.grad is not None])
    return grad, post["stoch"].detach().double()


def accuracy(cfg: dict, spaces, batches: list[dict], seed: int) -> None:
    """Float32 gradient error of each path against float64 (module docstring)."""
    saved = rssm.sample_onehot, rssm_fused.sample_onehot
    rssm.sample_onehot = rssm_fused.sample_onehot = _sample_onehot64
    try:
        torch.manual_seed(seed)
        a32 = Agent(cfg, *spaces).float()
        a64 = copy.deepcopy(a32).double()
        print(f"\nfloat32 linears on {gemm.cpu_gemm()} (worldzoo.gemm)")
        print("\n| batch | float64: fused vs autograd | float32 error: fused | float32 error: "
              "autograd | float32: fused vs autograd | first sample unlike float64's: fused "
              "/ autograd |\n|---|---|---|---|---|---|")
        for i, b in enumerate(batches):
            s = seed * 7919 + i
            ref, z64 = wm_grad(a64, b, True, torch.float64, s)
            (g64a, _), (g32f, zf), (g32a, za) = (wm_grad(a, b, f, d, s) for a, f, d in (
                (a64, False, torch.float64), (a32, True, torch.float32),
                (a32, False, torch.float32)))
            err = [float((g - ref).norm() / ref.norm()) for g in (g64a, g32f, g32a)]
            both = float((g32f - g32a).norm() / g32a.norm())
            flips = " / ".join(_first_flip(z, z64) for z in (zf, za))
            print(f"| {i + 1} | {err[0]:.1e} | {err[1]:.2e} | {err[2]:.2e} | {both:.2e} | "
                  f"{flips} |")
    finally:
        rssm.sample_onehot, rssm_fused.sample_onehot = saved
        rssm_fused.ENABLED = True
    print("\n(errors: |g - g64| / |g64| over all world-model gradients, g64 the float64 fused "
          "path's. A categorical sample drawn with a uniform within float32 rounding of a class "
          "boundary can land in the neighbouring class in either float32 path; the "
          "sequence then continues from another state, and that batch's error is no longer "
          "rounding: the last column names the first such (row, step))")


def _first_flip(z: torch.Tensor, ref: torch.Tensor) -> str:
    """'-' when the samples [B, T, S] agree, else the (row, step) of the first that differs."""
    bad = ((z - ref).abs() > 0.5).any(-1).nonzero()
    if not len(bad):
        return "-"
    row, step = min(bad.tolist(), key=lambda rs: (rs[1], rs[0]))
    return f"({row}, {step})"


def trajectories(cfg: dict, spaces, batches: list[dict], a: argparse.Namespace) -> None:
    """Parameters after each float64 update, fused against autograd (module docstring)."""
    runs, init = {}, None
    for fused in (True, False):
        rssm_fused.ENABLED = fused
        torch.manual_seed(a.seed)
        agent = Agent(cfg, *spaces).double()
        init = flat(agent)
        start, snaps = time.perf_counter(), []
        for i, b in enumerate(batches):
            torch.manual_seed(a.seed * 100_003 + i)  # same sampling noise in both runs
            agent.train_step(b)
            snaps.append(flat(agent))
        runs[fused] = snaps
        print(f"{'fused' if fused else 'autograd'} unroll: {len(batches)} updates in "
              f"{time.perf_counter() - start:.0f} s", flush=True)
    rssm_fused.ENABLED = True
    starts = sum(int(b["is_first"][:, 1:].sum()) for b in batches)
    print(f"{a.recipe} ({a.preset}) on {a.env}, float64, seed {a.seed}; {starts} episode "
          "starts inside the batches' sequences\n")
    print("| after update | max abs difference | difference / parameter change |")
    print("|---|---|---|")
    marks = sorted({1, 2, 5, 10, 20, 50, 100, 200, 500, len(batches)})
    for n in (m for m in marks if m <= len(batches)):
        x, y = runs[True][n - 1], runs[False][n - 1]
        rel = float((x - y).norm() / (y - init).norm())
        print(f"| {n} | {float((x - y).abs().max()):.2e} | {rel:.2e} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="dreamerv3")
    p.add_argument("--preset", default="small")
    p.add_argument("--env", default="dmc:cartpole-balance")
    p.add_argument("--updates", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--accuracy-batches", type=int, default=3)
    a = p.parse_args()
    cfg = apply_sets(get_recipe(a.recipe, a.preset), ["env.obs=vector"])
    t = cfg["train"]
    opts = {k: v for k, v in cfg["env"].items() if k != "num_envs"}
    envs = make_vector_env([env_factory(a.env, opts, a.seed, 0)], False)
    spaces = envs.single_observation_space, envs.single_action_space
    probe = Agent(cfg, *spaces)
    if not rssm_fused.fusable(probe.wm.rssm, torch.zeros(1, 1, 1, dtype=torch.float64)):
        raise SystemExit(f"{a.recipe} ({a.preset}) does not take the fused unroll")
    driver, replay = Driver(envs, probe.action_dim, probe.discrete), Replay(100_000, 1, a.seed)
    rng, step = np.random.default_rng(a.seed), driver.reset()
    for _ in range(max(2000, 4 * t["batch_length"])):
        replay.add(step)
        env_act, agent_act = driver.random_actions(rng)
        if driver.all_last():
            env_act, agent_act = driver.zero_actions(), 0.0
        step, _ = driver.step(env_act, agent_act)
    envs.close()
    batches = [{k: v.double() if v.is_floating_point() else v for k, v in
                replay.sample(t["batch_size"], t["batch_length"], "cpu").items()}
               for _ in range(max(a.updates, a.accuracy_batches))]
    if a.updates:
        trajectories(cfg, spaces, batches[:a.updates], a)
    if a.accuracy_batches:
        accuracy(cfg, spaces, batches[:a.accuracy_batches], a.seed)


if __name__ == "__main__":
    main()
