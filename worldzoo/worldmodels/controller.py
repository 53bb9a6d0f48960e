"""C: the controller of World Models (Ha & Schmidhuber 2018, section 2.3), a = W [z, h] + b,
its parameters a flat vector searched by CMA-ES. Controllers are functional: `act(params,
feat)` takes a batch of parameter vectors [N, P] and features [N, F], so one call evaluates a
whole CMA-ES population (in the dream) or one candidate (in a real-env worker).

The action head maps the controller's outputs to the env's action space: tanh for Box
actions in [-1, 1] (the paper), argmax over logits for Discrete actions."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from worldzoo.config import ConfigError
from worldzoo.registry import define_slot, register

define_slot("controller", "C (World Models): policy on [z, h] searched by CMA-ES, linear or mlp")

TRAIN_IN = ("real", "dream")


class TanhHead:
    """Box actions: a = tanh(y); env action = a; exploration adds Gaussian noise."""

    def __init__(self, action_dim: int) -> None:
        self.out_dim = action_dim

    def __call__(self, y: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        a = torch.tanh(y)
        return a, a.cpu().numpy()

    def to_agent(self, env_action) -> torch.Tensor:
        return torch.as_tensor(np.asarray(env_action, np.float32)).reshape(-1, self.out_dim)

    def explore(self, env_action: np.ndarray, noise: float, rng: np.random.Generator):
        return np.clip(env_action + noise * rng.standard_normal(env_action.shape), -1, 1
                       ).astype(np.float32)

    def random(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.uniform(-1, 1, (n, self.out_dim)).astype(np.float32)


class ArgmaxHead:
    """Discrete actions: env action = argmax(y), fed to M as a one-hot; exploration takes a
    uniform action with probability `noise`."""

    def __init__(self, action_dim: int) -> None:
        self.out_dim = action_dim

    def __call__(self, y: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        idx = y.argmax(-1)
        return F.one_hot(idx, self.out_dim).float(), idx.cpu().numpy()

    def to_agent(self, env_action) -> torch.Tensor:
        idx = torch.as_tensor(np.asarray(env_action, np.int64)).reshape(-1)
        return F.one_hot(idx, self.out_dim).float()

    def explore(self, env_action: np.ndarray, noise: float, rng: np.random.Generator):
        flip = rng.random(env_action.shape) < noise
        return np.where(flip, rng.integers(0, self.out_dim, env_action.shape), env_action)

    def random(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.out_dim, n)


HEADS = {False: TanhHead, True: ArgmaxHead}  # keyed by "the env's actions are discrete"


class Controller:
    """Shared parts: the action head, `train_in` (where CMA-ES evaluates candidates) and the
    size of the flat parameter vector."""

    def __init__(self, feat_dim: int, action_dim: int, discrete: bool, train_in: str) -> None:
        if train_in not in TRAIN_IN:
            raise ConfigError(f"controller.train_in={train_in!r} is invalid; use one of "
                              f"{', '.join(TRAIN_IN)}")
        self.feat_dim, self.action_dim, self.train_in = feat_dim, action_dim, train_in
        self.head = HEADS[bool(discrete)](action_dim)
        self.n_params = 0

    def forward(self, params: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def act(self, params: torch.Tensor, feat: torch.Tensor) -> tuple[torch.Tensor, np.ndarray]:
        """(agent actions for M [N, A], env actions) of N candidates on N features."""
        return self.head(self.forward(params, feat))

    def initial_params(self) -> np.ndarray:
        """The CMA-ES start point: zeros (the paper's x0)."""
        return np.zeros(self.n_params)


def _affine(params: torch.Tensor, x: torch.Tensor, inp: int, out: int, offset: int):
    """y = W x + b with W, b read from params[:, offset:]; returns (y, next offset)."""
    n = params.shape[0]
    w = params[:, offset:offset + inp * out].reshape(n, out, inp)
    b = params[:, offset + inp * out:offset + inp * out + out]
    return torch.bmm(w, x.unsqueeze(-1)).squeeze(-1) + b, offset + inp * out + out


@register("controller", "linear")
class LinearController(Controller):
    """The paper's C: a single affine map from [z, h] to the action head's inputs."""

    def __init__(self, feat_dim: int, action_dim: int, discrete: bool,
                 train_in: str = "real") -> None:
        super().__init__(feat_dim, action_dim, discrete, train_in)
        self.n_params = (feat_dim + 1) * action_dim

    def forward(self, params: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        return _affine(params, feat, self.feat_dim, self.action_dim, 0)[0]


@register("controller", "mlp")
class MLPController(Controller):
    """The paper's ablation 'with a hidden layer': [z, h] -> tanh(`units`) -> action head."""

    def __init__(self, feat_dim: int, action_dim: int, discrete: bool,
                 train_in: str = "real", units: int = 40) -> None:
        super().__init__(feat_dim, action_dim, discrete, train_in)
        self.units = units
        self.n_params = (feat_dim + 1) * units + (units + 1) * action_dim

    def forward(self, params: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
        hidden, off = _affine(params, feat, self.feat_dim, self.units, 0)
        return _affine(params, torch.tanh(hidden), self.units, self.action_dim, off)[0]
