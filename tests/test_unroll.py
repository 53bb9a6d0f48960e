"""worldzoo.unroll: StepLinear inside `unrolled` gives nn.Linear's values and gradients."""

from __future__ import annotations

import contextlib
import gc
import weakref

import pytest
import torch
from torch import nn

import worldzoo.components.rssm as rssm_mod
from worldzoo.components.rssm import CategoricalRSSM
from worldzoo.unroll import StepLinear, unrolled


@pytest.fixture
def defer_all(monkeypatch):
    """Defer every StepLinear, whatever its size (the tests' layers are small)."""
    monkeypatch.setattr(StepLinear, "min_weight", 0)


def _grads(*tensors):
    return [torch.zeros_like(t) if t.grad is None else t.grad.clone() for t in tensors]


@pytest.mark.parametrize("bias", [True, False])
def test_step_linear_matches_linear(defer_all, bias):
    torch.manual_seed(0)
    layer = StepLinear(7, 5, bias=bias)
    xs = [torch.randn(3, 7, requires_grad=True) for _ in range(6)]
    weights = torch.randn(6)

    def loss(fast: bool):
        with unrolled(layer) if fast else contextlib.nullcontext():
            ys, h = [], torch.zeros(3, 5)
            for x in xs:  # a recurrence: each step's output feeds the next input
                h = torch.tanh(layer(x + h.sum(-1, keepdim=True)))
                ys.append(h)
        # the last step's output does not reach the loss: its gradient never arrives
        return sum(w * y.pow(2).sum() for w, y in zip(weights, ys[:-1]))

    ref = loss(False)
    ref.backward()
    params = [p for p in layer.parameters()]
    expected = _grads(*params, *xs)
    for t in (*params, *xs):
        t.grad = None
    out = loss(True)
    assert torch.allclose(out, ref)
    out.backward(retain_graph=True)
    got = _grads(*params, *xs)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    out.backward()  # a second backward through the retained graph adds the same again
    for a, p in zip(expected, params):
        torch.testing.assert_close(p.grad, 2 * a, rtol=1e-4, atol=1e-5)


def test_weight_changed_before_backward_is_refused(defer_all):
    layer = StepLinear(4, 3)
    with unrolled(layer):
        y = layer(torch.randn(2, 4, requires_grad=True))
    with torch.no_grad():
        layer.weight.add_(1.0)  # an optimiser step before backward
    with pytest.raises(RuntimeError, match="modified in place"):
        y.sum().backward()


def test_falls_back_without_grad_or_under_autocast(defer_all):
    layer = StepLinear(4, 3)
    with torch.no_grad(), unrolled(layer):
        assert layer._tape is None
    with torch.autocast("cpu", dtype=torch.bfloat16), unrolled(layer):
        assert layer._tape is None
    with unrolled(layer):
        assert layer._tape is not None
        with torch.no_grad():  # acting inside: plain nn.Linear
            assert layer(torch.randn(2, 4)).grad_fn is None
    assert layer._tape is None
    big = StepLinear(16, 8)
    big.min_weight = 1 << 30  # below the size threshold: never deferred
    with unrolled(big):
        assert big._tape is None
    assert isinstance(big, nn.Linear)  # parameters and checkpoints are nn.Linear's


def test_observe_gradients_unchanged(defer_all, monkeypatch):
    """The world model's posterior unroll with deferred weight gradients gives the same
    gradients for every RSSM parameter (float32 rounding apart)."""
    torch.manual_seed(0)
    rssm = CategoricalRSSM(embed=6, action=2, stoch=3, classes=4, deter=8, hidden=8,
                           act="silu", norm="layer", unimix=0.01, initial="learned",
                           action_clip=1.0)
    B, T = 4, 9
    embed = torch.randn(B, T, 6, requires_grad=True)
    action = torch.rand(B, T, 2) * 2 - 1
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[1, 4] = True

    def grads(fast: bool):
        if not fast:
            monkeypatch.setattr(rssm_mod, "unrolled", lambda m: contextlib.nullcontext())
        torch.manual_seed(1)  # the same posterior samples both times
        post, prior = rssm.observe(embed, action, is_first)
        loss = rssm.kl(post, prior).mean() + post["deter"].pow(2).mean() + post["stoch"].std()
        loss.backward()
        out = [p.grad.clone() for p in rssm.parameters()] + [embed.grad.clone()]
        for p in (*rssm.parameters(), embed):
            p.grad = None
        monkeypatch.undo()
        monkeypatch.setattr(StepLinear, "min_weight", 0)
        return out

    expected, got = grads(False), grads(True)
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-6)


def test_unroll_leaves_no_reference_cycle():
    """A finished unroll's tape (and the step inputs it holds) is freed by reference counting
    once its graph is: no cycle through the autograd graph keeps an update alive (it leaked
    the inputs of every update, and a CUDA graph capture trips on the leftover nodes)."""
    layer = StepLinear(6, 6)
    layer.min_weight = 0
    x = torch.randn(4, 6, requires_grad=True)
    gc.disable()
    try:
        with unrolled(layer):
            tape = weakref.ref(layer._tape)
            h = x
            for _ in range(3):
                h = torch.tanh(layer(h))
        h.sum().backward()
        del h
        assert tape() is None
    finally:
        gc.enable()
