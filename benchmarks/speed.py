"""Speed benchmark: seconds per update (world model + actor + critic), updates/s, policy and env
steps/s of acting, for recipes x presets on one env; prints a Markdown table.

    python benchmarks/speed.py --recipes dreamerv1 --presets small paper \
        --env dmc:cartpole-balance --updates 10 [--set KEY=VALUE ...] [--out results/speed.md]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from worldzoo.agent import Agent
from worldzoo.config import apply_sets, get_recipe
from worldzoo.driver import Driver, make_vector_env
from worldzoo.replay import Replay
from worldzoo.trainer import env_factory


def measure(recipe: str, preset: str | None, env_id: str, sets: list[str], updates: int,
            act_steps: int, device: str, seed: int = 0) -> dict:
    """Time `updates` train steps after warm-up and `act_steps` policy steps in the env."""
    torch.manual_seed(seed)
    cfg = apply_sets(get_recipe(recipe, preset), sets)
    t = cfg["train"]
    opts = {k: v for k, v in cfg["env"].items() if k != "num_envs"}
    envs = make_vector_env([env_factory(env_id, opts, seed, 0)], False)
    agent = Agent(cfg, envs.single_observation_space, envs.single_action_space).to(device)
    driver = Driver(envs, agent.action_dim, agent.discrete)
    replay = Replay(100_000, 1, seed)
    rng = np.random.default_rng(seed)
    step = driver.reset()
    fill = t["batch_length"] * 4
    for _ in range(fill):  # random data to learn from
        replay.add(step)
        env_act, agent_act = driver.random_actions(rng)
        if driver.all_last():
            env_act, agent_act = driver.zero_actions(), 0.0
        step, _ = driver.step(env_act, agent_act)
    # acting speed (policy + env)
    state, t0, env_steps = None, time.perf_counter(), 0
    for _ in range(act_steps):
        if driver.all_last():
            step, _ = driver.step(driver.zero_actions(), 0.0)
            state = None
            continue
        env_act, action, state = agent.policy(step, state, explore=True)
        step, _ = driver.step(env_act, action.cpu().numpy())
        env_steps += driver.last_env_steps
    act_time = time.perf_counter() - t0
    # update speed
    times = []
    for i in range(updates + 2):
        batch = replay.sample(t["batch_size"], t["batch_length"], device)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        agent.train_step(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i >= 2:  # skip warm-up
            times.append(time.perf_counter() - t0)
    envs.close()
    sec = statistics.median(times)
    seq = t["batch_size"] * t["batch_length"]
    policy_per_update = seq / t["train_ratio"]
    repeat = env_steps / max(1, act_steps)
    loop_policy_steps_s = policy_per_update / (sec + policy_per_update * act_time / act_steps)
    return {
        "recipe": recipe, "preset": preset or "paper", "env": env_id,
        "params_wm_M": sum(p.numel() for p in agent.wm.parameters()) / 1e6,
        "batch": f"{t['batch_size']}x{t['batch_length']}", "horizon": t["horizon"],
        "s_per_update": sec, "updates_per_s": 1 / sec,
        "act_policy_steps_per_s": act_steps / act_time,
        "loop_env_steps_per_s": loop_policy_steps_s * repeat,
        "train_ratio": t["train_ratio"],
    }


def to_markdown(rows: list[dict]) -> str:
    cols = ["recipe", "preset", "env", "params_wm_M", "batch", "horizon", "s_per_update",
            "updates_per_s", "act_policy_steps_per_s", "train_ratio", "loop_env_steps_per_s"]
    fmt = {"params_wm_M": "{:.2f}", "s_per_update": "{:.3f}", "updates_per_s": "{:.2f}",
           "act_policy_steps_per_s": "{:.0f}", "loop_env_steps_per_s": "{:.1f}",
           "train_ratio": "{:g}"}
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(fmt.get(c, "{}").format(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def machine() -> str:
    return (f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch "
            f"threads, torch {torch.__version__}, {platform.python_version()}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=["dreamerv1"])
    p.add_argument("--presets", nargs="+", default=["small", "paper"])
    p.add_argument("--env", default="dmc:cartpole-balance")
    p.add_argument("--set", dest="sets", action="append", default=[])
    p.add_argument("--updates", type=int, default=10)
    p.add_argument("--act-steps", type=int, default=200)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", help="also write the table to this Markdown file")
    a = p.parse_args()
    rows = []
    for recipe in a.recipes:
        for preset in a.presets:
            rows.append(measure(recipe, None if preset == "paper" else preset, a.env, a.sets,
                                a.updates, a.act_steps, a.device))
            print(to_markdown(rows[-1:]), flush=True)
    table = to_markdown(rows)
    text = (f"Machine: {machine()}. Median of {a.updates} updates after 2 warm-up; "
            f"loop env steps/s = whole loop at the recipe's train ratio.\n\n{table}\n")
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
