"""Python API for notebooks: load a trained agent from a run or checkpoint, act, evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from worldzoo import checkpoint
from worldzoo.agent import Agent
from worldzoo.driver import Driver, make_vector_env


def env_options(meta: dict) -> dict:
    """The env options a run was trained with (its config's `env`, without `num_envs`)."""
    return {k: v for k, v in meta["config"]["env"].items() if k != "num_envs"}


def _find_run_dir(path: Path) -> Path:
    for p in (path, *path.parents):
        if (p / "config.json").exists():
            return p
    raise checkpoint.CheckpointError(
        f"{path} is not inside a run directory (no config.json found above it); pass "
        "results/runs/RUN or a checkpoint directory inside it")


class TrainedAgent:
    """A trained agent with its env. `act(obs, state)` for one batch of contract steps;
    `evaluate(episodes)` runs full episodes with the policy's mode (or samples)."""

    def __init__(self, agent: Agent, meta: dict, device: str) -> None:
        self.agent, self.meta, self.device = agent, meta, device
        self.env_id = meta["env_id"]

    def act(self, obs: dict[str, np.ndarray], state=None, explore: bool = False):
        """(env actions, next state) for a batch of observations with `is_first`."""
        env_action, _, state = self.agent.policy(obs, state, explore)
        return env_action, state

    def evaluate(self, episodes: int = 10, env: str | None = None, seed: int = 12345,
                 video: str | Path | None = None, policy: str | None = None) -> list[float]:
        """Returns of `episodes` evaluation episodes acting with `policy` (`mode` or
        `sample`; default the run's `train.eval_policy`); optionally writes the first as a
        video."""
        from worldzoo.agent import EVAL_POLICIES
        from worldzoo.trainer import env_factory

        policy = policy or self.meta["config"].get("train", {}).get("eval_policy", "mode")
        if policy not in EVAL_POLICIES:
            raise ValueError(f"policy must be one of {', '.join(EVAL_POLICIES)}, got {policy!r}")

        opts = env_options(self.meta)
        if video is not None and "image" not in self.agent.obs_shapes:
            opts["obs"] = "both"  # frames for the video; the agent still sees its keys
        envs = make_vector_env([env_factory(env or self.env_id, opts, seed, 0)], False)
        driver = Driver(envs, self.agent.action_dim, self.agent.discrete)
        returns, frames = [], []
        for ep in range(episodes):
            cur, state, total = driver.reset(), None, 0.0
            while not cur["is_last"][0]:
                if ep == 0 and video is not None and "image" in cur:
                    frames.append(cur["image"][0])
                env_act, action, state = self.agent.policy(cur, state, explore=False,
                                                           sample=policy == "sample")
                cur, _ = driver.step(env_act, action.cpu().numpy())
                total += float(cur["reward"][0])
            returns.append(total)
        envs.close()
        if video is not None and frames:
            from worldzoo.report import write_video

            write_video(video, frames)
        return returns


def load(path: str | Path, device: str = "cpu") -> TrainedAgent:
    """Load a run directory (its newest checkpoint) or a checkpoint directory. World Models
    runs load as a `TrainedController` (V, M and the CMA-ES mean of C; same interface)."""
    from worldzoo.trainer import env_factory

    path = Path(path)
    if not path.exists():
        raise checkpoint.CheckpointError(f"no such run or checkpoint: {path}")
    run_dir = _find_run_dir(path)
    try:
        meta = json.loads((run_dir / "config.json").read_text())
        meta["env_id"], meta["config"]["env"]  # noqa: B018 - the keys a run must have
    except (ValueError, KeyError, TypeError):
        raise checkpoint.CheckpointError(f"{run_dir / 'config.json'} is corrupt or not a "
                                         "worldzoo run config; cannot load the agent") from None
    ckpt_dir = (checkpoint.latest(run_dir / "checkpoints")
                if path.resolve() == run_dir.resolve() else path)
    state = checkpoint.load(ckpt_dir, device)
    if meta["config"].get("pipeline") == "worldmodels":
        from worldzoo.worldmodels.policy import load_controller

        return load_controller(meta, state, device)
    env = env_factory(meta["env_id"], env_options(meta), 0, 0)()
    agent = Agent(meta["config"], env.observation_space, env.action_space).to(device)
    env.close()
    try:
        agent.load_state_dict(state["agent"])
    except (KeyError, TypeError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]
        raise checkpoint.CheckpointError(f"checkpoint {ckpt_dir} does not fit the run's config "
                                         f"in {run_dir} ({type(e).__name__}: {first}); load "
                                         "it with the run it was saved by") from None
    return TrainedAgent(agent, meta, device)
