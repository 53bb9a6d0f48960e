"""The RSSM's one-node autograd functions give the written-out ops' values and gradients bit
for bit (they exist for speed only: `observe` runs them at every step over 16 rows)."""

from __future__ import annotations

import pytest
import torch

from worldzoo.components.rssm import CategoricalRSSM, NormGRUCell, _GRUGates


def _backward(outputs, inputs, seed: int):
    """Gradients of a random linear function of `outputs` w.r.t. `inputs`."""
    gen = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outputs)
    return torch.autograd.grad(loss, inputs, retain_graph=True)


@pytest.mark.parametrize("unimix", [0.01, 0.3])
def test_mixed_straight_through_matches_the_ops(unimix):
    rssm = CategoricalRSSM(embed=4, action=2, stoch=5, classes=7, deter=8, hidden=8,
                           unimix=unimix)
    raw = (3 * torch.randn(6, 35)).requires_grad_()
    torch.manual_seed(0)
    stats, sample = rssm._latent(raw)  # the fused node (gradients on, unimix > 0)
    assert stats["logits"].grad_fn.name() == "_MixedStraightThroughBackward"
    torch.manual_seed(0)  # the same uniforms, so the same one-hot samples
    logits, probs = rssm._probs(raw)
    expected = (logits, rssm._onehot(probs))
    for got, want in zip((stats["logits"], sample), expected):
        assert torch.equal(got, want)
    for seed in range(3):
        assert all(torch.equal(a, b) for a, b in zip(
            _backward((stats["logits"], sample), raw, seed), _backward(expected, raw, seed)))
    # one output unused: its gradient arrives as zeros
    assert torch.equal(_backward((sample,), raw, 5)[0], _backward(expected[1:], raw, 5)[0])


def test_gru_gates_match_the_ops():
    cell = NormGRUCell(3, 6)
    gates = torch.randn(5, 18, requires_grad=True)
    h = torch.randn(5, 6, requires_grad=True)
    out = _GRUGates.apply(gates, h)
    reset, cand, update = gates.chunk(3, -1)  # NormGRUCell.forward written out
    reset = torch.sigmoid(reset)
    want = torch.lerp(h, torch.tanh(reset * cand), torch.sigmoid(update - 1.0))
    assert torch.equal(out, want)
    for seed in range(3):
        got, expected = _backward((out,), (gates, h), seed), _backward((want,), (gates, h), seed)
        assert all(torch.equal(a, b) for a, b in zip(got, expected))
    x = torch.randn(5, 3)
    assert cell(x, h).grad_fn.name() == "_GRUGatesBackward"
    with torch.no_grad():  # acting and imagination without gradients: the ops as written
        assert torch.equal(cell(x, h), _GRUGates.apply(cell.norm(cell.linear(
            torch.cat([x, h], -1))), h))
