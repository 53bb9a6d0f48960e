"""M: the MDN-RNN of World Models (Ha & Schmidhuber 2018, appendix A.2).

An LSTM reads [z_t, a_t] and its hidden state h_{t+1} parameterises a mixture of `mixtures`
Gaussians *per latent dimension* for z_{t+1}, plus a reward and a done prediction. Sampling
uses the paper's temperature tau: mixture logits / tau and stds * sqrt(tau).

Interface shared by memory variants (what the controller, the dream and the trainer use):
`initial(B)`, `step(state, z, action) -> state`, `features(state) -> h` (`feat_dim`),
`dream(state, generator, temperature) -> (z, reward, done)`, `loss(batch) -> (total, metrics)`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from worldzoo.registry import define_slot, register

define_slot("memory", "M (World Models): recurrent model of z: mdnrnn (the paper)")

State = dict[str, torch.Tensor]
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


def mdn_nll(z: torch.Tensor, logit_pi: torch.Tensor, mean: torch.Tensor,
            log_std: torch.Tensor) -> torch.Tensor:
    """-log sum_k pi_k N(z | mean_k, std_k) per latent dim; mixture params [..., Z, K]."""
    log_pi = torch.log_softmax(logit_pi, -1)
    x = (z.unsqueeze(-1) - mean) * torch.exp(-log_std)
    log_normal = -0.5 * x.pow(2) - log_std - LOG_SQRT_2PI
    return -torch.logsumexp(log_pi + log_normal, -1)


def mdn_sample(logit_pi: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor,
               temperature: float = 1.0,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """A sample per latent dim with temperature tau: pi ~ softmax(logits / tau), std * sqrt(tau)
    (tau -> 0 gives the most likely component's mean)."""
    tau = max(float(temperature), 1e-6)
    probs = torch.softmax(logit_pi / tau, -1)
    flat = probs.reshape(-1, probs.shape[-1])
    k = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1] + (1,))
    mu = mean.gather(-1, k).squeeze(-1)
    std = torch.exp(log_std.gather(-1, k).squeeze(-1)) * math.sqrt(tau)
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + std * eps


@register("memory", "mdnrnn")
class MDNRNN(nn.Module):
    """LSTM(`hidden`) over [z, a]; heads: MDN of `mixtures` Gaussians per z dim, reward (MSE)
    and done (Bernoulli logit). Loss = NLL(z) averaged over dims + scaled reward/done terms."""

    def __init__(self, z_dim: int, action_dim: int, hidden: int = 256, mixtures: int = 5,
                 temperature: float = 1.0, reward_scale: float = 1.0,
                 done_scale: float = 1.0) -> None:
        super().__init__()
        self.z_dim, self.mixtures, self.temperature = z_dim, mixtures, temperature
        self.scales = {"mdn": 1.0, "reward": reward_scale, "done": done_scale}
        self.feat_dim = hidden
        self.lstm = nn.LSTM(z_dim + action_dim, hidden, batch_first=True)
        self.mdn = nn.Linear(hidden, 3 * mixtures * z_dim)
        self.reward = nn.Linear(hidden, 1)
        self.done = nn.Linear(hidden, 1)

    def initial(self, batch: int, device: torch.device | str = "cpu") -> State:
        zeros = torch.zeros(batch, self.feat_dim, device=device)
        return {"h": zeros, "c": zeros.clone()}

    def features(self, state: State) -> torch.Tensor:
        """h, the controller's view of the memory (the paper feeds [z, h] to C)."""
        return state["h"]

    def step(self, state: State, z: torch.Tensor, action: torch.Tensor) -> State:
        """h_{t+1}, c_{t+1} from (z_t, a_t) and the previous state."""
        x = torch.cat([z, action], -1).unsqueeze(1)
        _, (h, c) = self.lstm(x, (state["h"].unsqueeze(0), state["c"].unsqueeze(0)))
        return {"h": h[0], "c": c[0]}

    def heads(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        """Mixture params [..., Z, K], reward [...] and done logit [...] from h."""
        raw = self.mdn(h).reshape(*h.shape[:-1], self.z_dim, 3, self.mixtures)
        return {"logit_pi": raw[..., 0, :], "mean": raw[..., 1, :],
                "log_std": raw[..., 2, :].clamp(-7.0, 5.0),
                "reward": self.reward(h).squeeze(-1), "done": self.done(h).squeeze(-1)}

    def dream(self, state: State, generator: torch.Generator | None = None,
              temperature: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(z_{t+1} sampled at `temperature`, predicted reward, done probability) of a state
        that has just stepped."""
        out = self.heads(state["h"])
        tau = self.temperature if temperature is None else temperature
        z = mdn_sample(out["logit_pi"], out["mean"], out["log_std"], tau, generator)
        return z, out["reward"], torch.sigmoid(out["done"])

    def loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Batch of windows: z [B, L+1, Z], action [B, L, A], reward/done/mask [B, L]."""
        x = torch.cat([batch["z"][:, :-1], batch["action"]], -1)
        h, _ = self.lstm(x)
        out = self.heads(h)
        mask = batch["mask"]
        n = mask.sum().clamp(min=1.0)
        nll = mdn_nll(batch["z"][:, 1:], out["logit_pi"], out["mean"], out["log_std"]).mean(-1)
        losses = {
            "mdn": (nll * mask).sum() / n,
            "reward": ((out["reward"] - batch["reward"]).pow(2) * mask).sum() / n,
            "done": (F.binary_cross_entropy_with_logits(out["done"], batch["done"],
                                                        reduction="none") * mask).sum() / n,
        }
        total = sum(self.scales[k] * v for k, v in losses.items())
        return total, {f"memory_{k}": v.detach() for k, v in losses.items()}
