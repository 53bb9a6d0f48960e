"""Does a trained world model get the effects of actions right? A counterfactual probe for
Dreamer runs on dm_control tasks with vector observations.

From states visited by a policy (the run's own, with its exploration, or uniform random
actions), the simulator is saved; then both the simulator (restored each time) and the world
model (imagining from its posterior at that step) run `horizon` steps under constant action
+1 and constant action -1 on every action dimension. Reported per imagined step k: the mean
|true difference| between the two branches per observation dimension, the model's, their
correlation over the probed states, and the same for the cumulative reward difference. A model
that ignores actions shows predicted differences near 0; one that extrapolates badly shows
low correlations. The eval trace (`--trace`) prints one policy-mode episode step by step
(for the critic's calibration on any env: `benchmarks/critic_probe.py`).

    python benchmarks/wm_probe.py results/runs/RUN --episodes 3 --horizon 15
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

import worldzoo
from worldzoo.benchmarks.critic_probe import discounted
from worldzoo.envs.dmc import DMCEnv
from worldzoo.envs.wrappers import ActionRepeat


def _make_env(meta: dict) -> tuple[ActionRepeat, object]:
    """The run's dm_control task through the adapter and its action repeat (no time limit),
    and the MuJoCo physics whose state the probe saves and restores."""
    env = ActionRepeat(DMCEnv(meta["env_id"][4:], obs="vector"),
                       int(meta["config"]["env"].get("action_repeat", 2)))
    return env, env.unwrapped._env.physics


def _step(env: ActionRepeat, action: np.ndarray) -> tuple[np.ndarray, float]:
    obs, reward, *_ = env.step(action)
    return obs["vector"], float(reward)


@torch.no_grad()
def probe(run: str, episodes: int, horizon: int, every: int, length: int, samples: int,
          policy: str, seed: int) -> dict[int, dict[str, np.ndarray]]:
    """{k: {'true', 'pred': [N, obs_dim] differences (+1 minus -1), 'true_r', 'pred_r': [N]}}."""
    trained = worldzoo.load(run)
    agent, meta = trained.agent, trained.meta
    if not meta["env_id"].startswith("dmc:") or "vector" not in agent.obs_shapes:
        sys.exit(f"wm_probe needs a dmc: run with vector observations, got {meta['env_id']} "
                 f"with {sorted(agent.obs_shapes)}")
    wm, rng = agent.wm, np.random.default_rng(seed)
    env, physics = _make_env(meta)
    dim = agent.action_dim
    out: dict[int, dict[str, list]] = {k: {"true": [], "pred": [], "true_r": [], "pred_r": []}
                                       for k in range(horizon)}
    for ep in range(episodes):
        obs, state, first = env.reset(seed=seed + ep)[0]["vector"], None, 1.0
        for t in range(length):
            step = {"vector": obs[None], "is_first": np.array([first], np.float32)}
            if policy == "random":
                latent, prev = state if state is not None else agent.initial_state(1)
                embed = wm.encoder({"vector": torch.as_tensor(step["vector"])})
                latent = wm.rssm.obs_step(latent, prev, embed, torch.tensor([first]))
                action = rng.uniform(-1, 1, dim).astype(np.float32)
                state = (latent, torch.as_tensor(action)[None])
            else:
                env_action, _, state = agent.policy(step, state, explore=policy == "explore")
                action = env_action[0]
            first = 0.0
            if t % every == every // 2:
                snap = physics.get_state().copy()
                branches = {}
                for sign in (1.0, -1.0):
                    physics.set_state(snap)
                    true = [_step(env, np.full(dim, sign)) for _ in range(horizon)]
                    s = {k: v.expand(samples, *v.shape[1:]) for k, v in state[0].items()}
                    preds = []
                    for _ in range(horizon):
                        s = wm.rssm.img_step(s, torch.full((samples, dim), sign))
                        feat = wm.rssm.feat(s)
                        preds.append((wm.decoder(feat)["vector"].mean.mean(0).numpy(),
                                      wm.reward(feat).mean.mean().item()))
                    branches[sign] = (true, preds)
                physics.set_state(snap)
                for k in range(horizon):
                    for name, idx in (("true", 0), ("pred", 1)):
                        plus, minus = branches[1.0][idx], branches[-1.0][idx]
                        out[k][name].append(plus[k][0] - minus[k][0])
                        out[k][f"{name}_r"].append(sum(r for _, r in plus[:k + 1])
                                                   - sum(r for _, r in minus[:k + 1]))
            obs, _ = _step(env, action)
    env.close()
    return {k: {n: np.asarray(v) for n, v in d.items()} for k, d in out.items()}


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


@torch.no_grad()
def trace(run: str, seed: int, length: int) -> None:
    """One policy-mode episode: action, observation and reward every few steps, and the
    critic's value of each posterior state beside the discounted return that followed it."""
    trained = worldzoo.load(run)
    env, _ = _make_env(trained.meta)
    agent = trained.agent
    gamma = agent.ac.gamma
    obs, state, first = env.reset(seed=seed)[0]["vector"], None, 1.0
    rows, rewards, values = [], [], []
    for t in range(length):
        step = {"vector": obs[None], "is_first": np.array([first], np.float32)}
        action, _, state = agent.policy(step, state, explore=False)
        values.append(agent.ac.critic(agent.wm.rssm.feat(state[0])).mean.item())
        first = 0.0
        obs, reward = _step(env, action[0])
        rewards.append(reward)
        rows.append((t, action[0], obs, reward))
    togo = discounted(np.array(rewards), gamma, 0.0)
    for t, action, obs, reward in rows:
        if t < 60 and t % 5 == 0 or t % 50 == 0:
            print(f"t={t:3d} action={np.round(action, 2)} obs={np.round(obs, 2)} "
                  f"reward={reward:.2f} value={values[t]:.1f} return-to-go={togo[t]:.1f}")
    half = length // 2  # the return-to-go of later steps is cut short by the episode's end
    corr = _corr(np.array(values[:half]), togo[:half])
    print(f"return over {length} steps: {sum(rewards):.1f}; critic value vs discounted "
          f"return-to-go over the first half: corr {corr:.2f}")
    env.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="run directory (its newest checkpoint is loaded)")
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--length", type=int, default=120, help="agent steps per episode")
    ap.add_argument("--every", type=int, default=10, help="probe every N agent steps")
    ap.add_argument("--horizon", type=int, default=15)
    ap.add_argument("--samples", type=int, default=16, help="imagined samples per branch")
    ap.add_argument("--policy", choices=["random", "explore", "mode"], default="random")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--trace", action="store_true", help="print one policy-mode episode")
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    if args.trace:
        trace(args.run, args.seed, 500)
        return
    res = probe(args.run, args.episodes, args.horizon, args.every, args.length, args.samples,
                args.policy, args.seed)
    n = len(res[0]["true"])
    print(f"{n} probed states; differences are (constant +1) minus (constant -1)")
    print("| k | obs dim | mean abs true diff | mean abs model diff | corr |")
    print("|---|---|---|---|---|")
    for k in sorted({0, 2, 5, 9, args.horizon - 1} & set(res)):
        d = res[k]
        for i in range(d["true"].shape[1]):
            print(f"| {k + 1} | {i} | {np.abs(d['true'][:, i]).mean():.3f} | "
                  f"{np.abs(d['pred'][:, i]).mean():.3f} | "
                  f"{_corr(d['true'][:, i], d['pred'][:, i]):.2f} |")
        print(f"| {k + 1} | reward (sum to k) | {np.abs(d['true_r']).mean():.3f} | "
              f"{np.abs(d['pred_r']).mean():.3f} | {_corr(d['true_r'], d['pred_r']):.2f} |")


if __name__ == "__main__":
    main()
