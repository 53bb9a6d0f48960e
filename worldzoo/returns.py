"""Lambda-returns (DreamerV1 eq. 6; V2/V3 with a continue head). Time is the first dim."""

from __future__ import annotations

import torch


def lambda_return(reward: torch.Tensor, value: torch.Tensor, disc: torch.Tensor,
                  lam: float) -> torch.Tensor:
    """TD(lambda) returns over an imagined trajectory of H+1 states.

    reward[t], disc[t]: reward and discount (gamma * continue) of arriving at state t;
    value[t]: value of state t. Returns R[0..H-1] with
        R[H] = value[H],
        R[t] = reward[t+1] + disc[t+1] * ((1 - lam) * value[t+1] + lam * R[t+1]).
    """
    H = reward.shape[0] - 1
    out = []
    ret = value[-1]
    interm = reward[1:] + disc[1:] * (1 - lam) * value[1:]
    for t in reversed(range(H)):
        ret = interm[t] + disc[t + 1] * lam * ret
        out.append(ret)
    return torch.stack(out[::-1], 0)


def discount_weights(disc: torch.Tensor, start_cont: torch.Tensor) -> torch.Tensor:
    """Weight of each imagined state t = 0..H-1 in the actor and critic losses: the product of
    the discounts before it, start_cont (1 - is_terminal of the real start state) at t = 0."""
    first = start_cont.unsqueeze(0)
    return torch.cumprod(torch.cat([first, disc[1:-1]], 0), 0)
