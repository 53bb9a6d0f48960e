"""The named suites. Budgets and task lists of `dmc-proprio` / `dmc-vision` follow DreamerV3
(Hafner et al. 2023): 500k env steps proprio, 1M vision, action repeat 2, the 11 DMC tasks that
../shared/reference-scores holds for DreamerV2/V3 and the baselines."""

from __future__ import annotations

from worldzoo.benchmarks import Suite

ALL = ("dreamerv1", "dreamerv2", "dreamerv3", "worldmodels")

DMC_TASKS = tuple(f"dmc:{t}" for t in (
    "cartpole-balance", "cartpole-balance_sparse", "cartpole-swingup", "cheetah-run",
    "ball_in_cup-catch", "finger-spin", "hopper-stand", "pendulum-swingup", "reacher-easy",
    "walker-stand", "walker-walk"))

SUITES = (
    Suite("smoke", "seconds per run: the test suite (DreamerV1, debug preset, Pendulum)",
          tasks=("gym:Pendulum-v1",), methods=("dreamerv1",), steps=300, seeds=2,
          preset="debug", eval_every=100, eval_episodes=1),
    Suite("cpu-proprio", "what 2 CPU cores can run: small nets, vector observations",
          tasks=("dmc:cartpole-balance", "dmc:cartpole-swingup", "dmc:walker-stand",
                 "dmc:pendulum-swingup", "gym:Pendulum-v1", "gym:CartPole-v1"),
          methods=ALL, steps=100_000, seeds=3, preset="small", eval_every=5_000,
          eval_episodes=5, budgets=(50_000, 100_000),
          reference=("dmc_proprio_curves10k.csv",)),
    Suite("dmc-proprio", "DreamerV3's DMC proprioceptive benchmark (GPU)",
          tasks=DMC_TASKS, methods=ALL, steps=500_000, seeds=5, preset="paper",
          eval_every=10_000, eval_episodes=10, sets=("env.obs=vector",),
          budgets=(100_000, 250_000, 500_000), cpus=2, gpus=1,
          reference=("dmc_proprio_curves10k.csv",)),
    Suite("dmc-vision", "DreamerV3's DMC visual benchmark, 64x64 pixels (GPU)",
          tasks=DMC_TASKS, methods=ALL, steps=1_000_000, seeds=5, preset="paper",
          eval_every=10_000, eval_episodes=10, sets=("env.obs=pixels",),
          budgets=(100_000, 500_000, 1_000_000), cpus=2, gpus=1,
          reference=("dmc_vision_curves10k.csv", "dreamerv2_dmc_vision.csv",
                     "dreamerv1_dmc_vision.csv")),
)
