"""Env steps per second of the Brax adapter: one jitted, vmapped call per batch.

    python -m worldzoo.benchmarks.brax_speed --task ant --backend generalized --num-envs 1 16

Per batch size it reports the compile time (first reset and first step, paid once) and the
steady-state env steps/s over ``--seconds`` of zero-action steps (action repeat 1), beside the
cost of a plain Python loop over one jitted single-env step (the ``make`` path) for contrast.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def measure_vector(task: str, backend: str, num_envs: int, seconds: float) -> dict:
    from worldzoo.envs import make_vector

    env = make_vector(f"brax:{task}", num_envs, seed=0, backend=backend)
    t0 = time.perf_counter()
    env.reset()
    reset_s = time.perf_counter() - t0
    action = np.zeros(env.action_space.shape, np.float32)
    t0 = time.perf_counter()
    env.step(action)
    step_compile_s = time.perf_counter() - t0
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, _, _, info = env.step(action)
        calls += 1
    elapsed = time.perf_counter() - t0
    return {"path": "vector", "num_envs": num_envs, "compile_s": reset_s + step_compile_s,
            "ms_per_call": 1000 * elapsed / calls, "env_steps_per_s": calls * num_envs / elapsed}


def measure_single(task: str, backend: str, seconds: float) -> dict:
    from worldzoo.envs import make

    env = make(f"brax:{task}", seed=0, backend=backend)
    t0 = time.perf_counter()
    env.reset()
    env.step(env.action_space.sample() * 0)
    compile_s = time.perf_counter() - t0
    action = np.zeros(env.action_space.shape, np.float32)
    calls, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
        calls += 1
    elapsed = time.perf_counter() - t0
    return {"path": "single (make)", "num_envs": 1, "compile_s": compile_s,
            "ms_per_call": 1000 * elapsed / calls, "env_steps_per_s": calls / elapsed}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", default="ant")
    p.add_argument("--backend", default="generalized")
    p.add_argument("--num-envs", type=int, nargs="+", default=[1, 16])
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--no-single", action="store_true", help="skip the single-env loop")
    args = p.parse_args(argv)
    import jax
    print(f"brax:{args.task} backend={args.backend} jax {jax.__version__} "
          f"on {jax.devices()[0].platform}")
    rows = [] if args.no_single else [measure_single(args.task, args.backend, args.seconds)]
    rows += [measure_vector(args.task, args.backend, n, args.seconds) for n in args.num_envs]
    print(f"{'path':<14} {'envs':>5} {'compile s':>10} {'ms/call':>9} {'env steps/s':>12}")
    for r in rows:
        print(f"{r['path']:<14} {r['num_envs']:>5} {r['compile_s']:>10.1f} "
              f"{r['ms_per_call']:>9.2f} {r['env_steps_per_s']:>12.0f}")


if __name__ == "__main__":
    main()
