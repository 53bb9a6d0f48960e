"""CMA-ES over the controller's parameter vector (the `cma` package), maximising mean return.
Its state is saved as tensors (mean, step size, covariance, evolution paths, counters), so
checkpoints load with `torch.load(weights_only=True)` and need no pickle."""

from __future__ import annotations

import cma
import numpy as np
import torch


class CMAES:
    """ask() -> [P, n] candidates; tell(candidates, returns); `mean` is the current estimate
    (what evaluation plays)."""

    def __init__(self, x0: np.ndarray, sigma: float, population: int, seed: int) -> None:
        opts = {"popsize": int(population), "seed": int(seed) % 2**31 + 1, "verbose": -9,
                "CMA_diagonal": False}
        self.es = cma.CMAEvolutionStrategy(np.asarray(x0, float), float(sigma), opts)
        self.best_return = -np.inf
        self.best = np.asarray(x0, float).copy()

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.es.mean, float).copy()

    @property
    def sigma(self) -> float:
        return float(self.es.sigma)

    def ask(self) -> np.ndarray:
        return np.asarray(self.es.ask(), float)

    def tell(self, candidates: np.ndarray, returns: np.ndarray) -> None:
        returns = np.asarray(returns, float)
        i = int(np.argmax(returns))
        if returns[i] > self.best_return:
            self.best_return, self.best = float(returns[i]), candidates[i].copy()
        self.es.tell(list(candidates), list(-returns))  # cma minimises

    def _parts(self) -> dict:
        es = self.es
        return {"es": es, "sm": es.sm, "csa": es.adapt_sigma, "sv": es.sigma_vec}

    def state(self) -> dict[str, torch.Tensor]:
        """Every numeric attribute of the search (mean, sigma, C, B, D, paths, counters...)."""
        out = {"best": torch.as_tensor(self.best), "best_return": torch.tensor(self.best_return),
               "np_rng": _np_rng_state()}
        for prefix, obj in self._parts().items():
            for key, value in vars(obj).items():
                if isinstance(value, (bool, int, float, np.number)):
                    out[f"{prefix}.{key}"] = torch.tensor(value)
                elif isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
                    out[f"{prefix}.{key}"] = torch.as_tensor(value.copy())
        return out

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Continue a saved search exactly where it stopped (same numbers, same RNG)."""
        parts = self._parts()
        for name, value in state.items():
            prefix, _, key = name.partition(".")
            if prefix not in parts:
                continue
            old = getattr(parts[prefix], key, None)
            if isinstance(old, np.ndarray) or value.dim() > 0:
                value = value.numpy().copy()
            else:
                value = value.item()
                if isinstance(old, (bool, np.bool_)):
                    value = bool(value)
            setattr(parts[prefix], key, value)
        self.es.timer = cma.utilities.utils.ElapsedWCTime()
        self.best = state["best"].numpy().astype(float).copy()
        self.best_return = float(state["best_return"])
        _set_np_rng_state(state["np_rng"])


def _np_rng_state() -> torch.Tensor:
    """numpy's global Mersenne Twister (what cma samples with) as one int64 tensor."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return torch.as_tensor(np.concatenate([keys.astype(np.int64), [pos, has_gauss],
                                           [np.float64(cached).view(np.int64)]]))


def _set_np_rng_state(t: torch.Tensor) -> None:
    arr = t.numpy()
    cached = np.int64(arr[-1]).view(np.float64)
    np.random.set_state(("MT19937", arr[:624].astype(np.uint32), int(arr[624]), int(arr[625]),
                         float(cached)))
