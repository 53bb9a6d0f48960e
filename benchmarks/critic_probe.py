"""Is a trained Dreamer critic calibrated? Its value along real episodes against the discounted
return that followed.

Runs `--episodes` episodes of the run's env with the policy's mode (`--explore`: the training
policy) from the run's newest checkpoint. At every policy step it records the critic's value of
the posterior state (the critic's mean, the same net the lambda-returns bootstrap from) and the
reward. The return that followed step t is G_t = sum_k gamma^k r_{t+k} with the run's
`train.gamma`; past the end of an episode cut by its time limit, the tail is the mean reward of
the episode's last `--tail-steps` steps continued forever (gamma^(T-t) * r_bar / (1 - gamma)),
or zero (`--tail zero`, and always after a true terminal). Reported per fifth of the episode:
the mean value V, the mean G, their ratio, and the mean reward per step; and over all steps the
correlation of V with G. A critic that lags the returns shows V/G well below 1; one that does
not tell good states from bad shows a low correlation.

    python benchmarks/critic_probe.py results/runs/RUN --episodes 3
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from worldzoo.api import env_options, load
from worldzoo.driver import Driver, make_vector_env
from worldzoo.trainer import env_factory


def discounted(rewards: np.ndarray, gamma: float, tail: float) -> np.ndarray:
    """G_t = sum_k gamma^k r_{t+k} + gamma^(T-t) * tail, for every t (one backward pass)."""
    out, acc = np.empty(len(rewards)), tail
    for t in range(len(rewards) - 1, -1, -1):
        acc = rewards[t] + gamma * acc
        out[t] = acc
    return out


def episode(agent, driver: Driver, explore: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """(values [T], rewards [T], ended by a true terminal) of one episode."""
    cur, state, values, rewards = driver.reset(), None, [], []
    while not cur["is_last"][0]:
        env_act, action, state = agent.policy(cur, state, explore=explore)
        with torch.no_grad():
            values.append(float(agent.ac.critic(agent.wm.rssm.feat(state[0])).mean[0]))
        cur, _ = driver.step(env_act, action.cpu().numpy())
        rewards.append(float(cur["reward"][0]))
    return np.array(values), np.array(rewards), bool(cur["is_terminal"][0])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a Dreamer run directory (results/runs/RUN)")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--explore", action="store_true", help="act with the training policy")
    p.add_argument("--tail", choices=("mean", "zero"), default="mean")
    p.add_argument("--tail-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=777)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    trained = load(args.run)
    agent, meta = getattr(trained, "agent", None), trained.meta
    if not hasattr(agent, "ac"):
        raise SystemExit(f"{args.run} is not a Dreamer run (no critic to probe)")
    gamma = float(agent.ac.gamma)
    envs = make_vector_env([env_factory(trained.env_id, env_options(meta), args.seed, 0)], False)
    driver = Driver(envs, agent.action_dim, agent.discrete)
    print(f"{args.run}: gamma {gamma:.4f}, {args.episodes} episodes "
          f"({'training policy' if args.explore else 'policy mode'}), tail {args.tail}")
    all_v, all_g = [], []
    for ep in range(args.episodes):
        v, r, terminal = episode(agent, driver, args.explore)
        tail = 0.0 if terminal or args.tail == "zero" else (
            r[-args.tail_steps:].mean() / (1 - gamma))
        g = discounted(r, gamma, tail)
        all_v.append(v)
        all_g.append(g)
        parts = np.array_split(np.arange(len(r)), 5)
        cells = [f"steps {i[0]}-{i[-1]}: V {v[i].mean():.1f} G {g[i].mean():.1f} "
                 f"V/G {v[i].mean() / g[i].mean():.2f} r {r[i].mean():.2f}" for i in parts]
        print(f"episode {ep}: return {r.sum():.1f}, {len(r)} steps"
              f"{', terminal' if terminal else ''}\n  " + "\n  ".join(cells))
    v, g = np.concatenate(all_v), np.concatenate(all_g)
    corr = np.corrcoef(v, g)[0, 1] if v.std() > 0 and g.std() > 0 else float("nan")
    print(f"all steps: V {v.mean():.1f}, G {g.mean():.1f}, V/G {v.mean() / g.mean():.2f}, "
          f"corr(V, G) {corr:.2f}")
    envs.close()


if __name__ == "__main__":
    main()
