"""A trained World Models agent (V, M and the CMA-ES mean of C) behind the same interface as a
trained Dreamer agent (`worldzoo.api.TrainedAgent`): `act` for batches of contract steps and
`evaluate` for whole episodes, so `worldzoo.load` and `worldzoo eval` work for every recipe."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from worldzoo.api import env_options
from worldzoo.report import write_video
from worldzoo.worldmodels.models import Job, WorldModels, run_episode


class TrainedController:
    """V, M and C with the controller parameters the run ended with (the CMA-ES mean)."""

    def __init__(self, wm: WorldModels, params: np.ndarray, meta: dict, device: str) -> None:
        self.wm, self.meta, self.device = wm.eval(), meta, device
        self.params = torch.as_tensor(np.asarray(params, np.float32))
        self.env_id = meta["env_id"]

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], state=None, explore: bool = False):
        """(env actions, next state) for a batch of observations with `is_first`; C is
        deterministic, so `explore` is accepted for the shared interface and ignored."""
        wm = self.wm
        frames = torch.as_tensor(np.asarray(obs[wm.key]))
        n = len(frames)
        first = torch.as_tensor(np.asarray(obs["is_first"], bool)).reshape(n, 1)
        init = wm.memory.initial(n)
        state = init if state is None else {k: torch.where(first, init[k], v)
                                            for k, v in state.items()}
        z = wm.vae.embed(frames)
        agent_action, env_action = wm.controller.act(self.params.expand(n, -1),
                                                     wm.feat(z, state))
        return env_action, wm.memory.step(state, z, agent_action)

    def evaluate(self, episodes: int = 10, env: str | None = None, seed: int = 12345,
                 video: str | Path | None = None) -> list[float]:
        """Returns of `episodes` real-env episodes; optionally writes the first as a video."""
        from worldzoo.envs import make

        opts = env_options(self.meta)
        if video is not None and self.wm.key != "image":
            opts["obs"] = "both"  # frames for the video; the agent still sees its key
        env_ = make(env or self.env_id, seed=seed, **opts)
        frames: list[np.ndarray] | None = [] if video is not None else None
        try:
            returns = [run_episode(env_, self.wm, Job(self.params.numpy(), seed + ep),
                                   video=frames if ep == 0 else None)["return"]
                       for ep in range(episodes)]
        finally:
            env_.close()
        if frames:
            write_video(video, frames)
        return returns


def load_controller(meta: dict, state: dict, device: str) -> TrainedController:
    """A TrainedController from a run's config.json and one of its checkpoints."""
    from worldzoo.envs import make

    env = make(meta["env_id"], seed=0, **env_options(meta))
    wm = WorldModels(meta["config"], env.observation_space, env.action_space)
    env.close()
    wm.load_state_dict(state["wm"])
    return TrainedController(wm.to("cpu"), state["params"].cpu().numpy(), meta, device)
