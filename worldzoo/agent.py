"""The Dreamer agent: world model + actor-critic + optimisers, a train step and a policy."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from contextlib import AbstractContextManager

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from worldzoo.behavior import ActorCritic
from worldzoo.config import ConfigError
from worldzoo.world_model import OBS_KEYS, WorldModel, assemble

# train.precision -> the autocast dtype of the learner step (None: plain float32)
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16}
EVAL_POLICIES = ("mode", "sample")  # train.eval_policy: how evaluation acts


def check_precision(precision: str, device: str) -> None:
    """Fail before a run starts when `device` cannot run `train.precision`."""
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision={precision!r} is out of range; use one of "
                          f"{', '.join(PRECISIONS)}")  # the wording of the train checks
    if precision == "bfloat16" and not (device == "cpu" or device.startswith("cuda")):
        raise ConfigError(f"train.precision=bfloat16 runs on cpu and cuda devices, not on "
                          f"{device}: use train.precision=float32")
    if precision == "bfloat16" and device.startswith("cuda") and not (
            torch.cuda.is_available() and torch.cuda.is_bf16_supported()):
        raise ConfigError(f"train.precision=bfloat16 needs a GPU with bfloat16 support; "
                          f"{device} has none: use train.precision=float32")


def _no_phase(name: str) -> AbstractContextManager:
    return contextlib.nullcontext()


def space_shapes(obs_space: gym.spaces.Dict) -> dict[str, tuple[int, ...]]:
    """{key: shape} of the contract's observation keys (image, vector)."""
    return {k: tuple(obs_space[k].shape) for k in OBS_KEYS if k in obs_space.spaces}


def action_spec(act_space: gym.Space) -> tuple[int, bool]:
    """(action dim, discrete) for a Box in [-1, 1] or a Discrete space."""
    if isinstance(act_space, gym.spaces.Discrete):
        return int(act_space.n), True
    if isinstance(act_space, gym.spaces.Box) and len(act_space.shape) == 1:
        return int(act_space.shape[0]), False
    raise ValueError(f"unsupported action space {act_space}; expected Box (n,) or Discrete")


def check_agent(cfg: dict, obs_space: gym.spaces.Dict, act_space: gym.Space) -> None:
    """Assemble the agent once on the meta device (no memory, no compute) so an impossible
    slot combination fails before a run starts, with the reason."""
    try:
        with torch.device("meta"):
            Agent(cfg, obs_space, act_space)
    except ValueError as e:  # action spaces, nets
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from None


class Agent(nn.Module):
    """Everything that learns. `train_step(batch)` does one world-model update followed by
    one actor and one critic update; `policy(obs, state, explore)` acts in the env."""

    def __init__(self, cfg: dict, obs_space: gym.spaces.Dict, act_space: gym.Space) -> None:
        super().__init__()
        self.obs_shapes = space_shapes(obs_space)
        self.action_dim, self.discrete = action_spec(act_space)
        self.wm = WorldModel(cfg, self.obs_shapes, self.action_dim)
        self.ac = ActorCritic(cfg, self.wm.rssm.feat_dim, self.action_dim, self.discrete)
        self.optim = assemble(cfg, "optim", {"model": self.wm, "actor": self.ac.actor,
                                             "critic": self.ac.critic})
        self.precision = cfg["train"].get("precision", "float32")  # runs saved before it
        self.wm.rssm.fused = bool(cfg["train"].get("fused_unroll", True))  # rssm_fused
        check_precision(self.precision, "cpu")

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def train_step(self, batch: dict[str, torch.Tensor],
                   phase: Callable[[str], AbstractContextManager] | None = None) -> dict:
        """One update of world model, actor and critic on a batch of sequences [B, T].
        `phase(name)`, if given, wraps each part (world_model, imagination, actor, critic):
        the speed benchmark times them with it."""
        phase = phase or _no_phase
        self.train()
        with phase("world_model"), self.autocast():
            wm_loss, post, metrics = self.wm.loss(batch)
            metrics.update(self.optim.step("model", wm_loss))
        with phase("imagination"), self.autocast():
            traj = self.ac.rollout(self.wm, post, batch["is_terminal"])
        with phase("actor"), self.autocast():
            actor_loss, actor_metrics = self.ac.actor_loss(traj)
            metrics.update(actor_metrics)
            metrics.update(self.optim.step("actor", actor_loss))
        with phase("critic"), self.autocast():
            critic_loss, critic_metrics = self.ac.critic_loss(traj)
            metrics.update(critic_metrics)
            metrics.update(self.optim.step("critic", critic_loss))
            self.ac.critic_target.update()
        metrics["loss_model"] = wm_loss.detach()
        return metrics

    def autocast(self) -> AbstractContextManager:
        """The learner step's matmuls and convolutions in `train.precision` (bfloat16: AMX or
        AVX512-BF16 on CPU, tensor cores on GPU); nets return float32, so distributions, losses,
        the recurrent state and the optimiser stay float32. One context per phase, so no cast
        of a weight outlives the optimiser step that changes it. Acting stays float32."""
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return contextlib.nullcontext()
        # no cast cache while a CUDA graph records (torch's rule for autocast in graphs)
        capturing = self.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        return torch.autocast(self.device.type, dtype=dtype, cache_enabled=not capturing)

    def initial_state(self, batch: int):
        """Policy state at the start of an episode: (RSSM state, previous action)."""
        dev = self.device
        return self.wm.rssm.initial(batch, dev), torch.zeros(batch, self.action_dim, device=dev)

    @torch.no_grad()
    def policy(self, obs: dict[str, np.ndarray], state, explore: bool, sample: bool = False):
        """Actions for a batch of observations (numpy, with `is_first`): a sample with the
        actor's exploration noise (`explore`), a plain sample (`sample`) or the mode. Returns
        (env actions as numpy, the agent's one-hot or [-1, 1] actions as a tensor, next state)."""
        self.eval()
        dev = self.device
        if state is None:
            state = self.initial_state(len(obs["is_first"]))
        latent, prev_action = state
        tens = {k: torch.as_tensor(obs[k], device=dev) for k in self.obs_shapes}
        is_first = torch.as_tensor(obs["is_first"], device=dev)
        embed = self.wm.encoder(tens)
        latent = self.wm.rssm.obs_step(latent, prev_action, embed, is_first)
        dist = self.ac.actor(self.wm.rssm.feat(latent))
        if explore:
            action = self.ac.actor.explore(dist.sample())
        else:
            action = dist.sample() if sample else dist.mode()
        action = action.detach()
        if not self.discrete:
            action = action.clamp(-1, 1)
        env_action = action.argmax(-1) if self.discrete else action
        return env_action.cpu().numpy(), action, (latent, action)
