"""worldzoo.components.rssm_fused: the one-node posterior unroll gives the autograd unroll's
samples, values and gradients (float64, so that only summation order differs)."""

from __future__ import annotations

import pytest
import torch
from _fakes import categorical_rssm, fake_batch, spaces, trained_params

from worldzoo.components import rssm_fused, rssm_native
from worldzoo.components.rssm import CategoricalRSSM, GaussianRSSM


def _rssm(unimix: float, initial: str, act: str = "silu", norm: str = "layer"):
    return categorical_rssm(unimix, initial, act, norm).double()


def _inputs(start_rows: tuple[int, ...] = (0, 1, 2)):
    g = torch.Generator().manual_seed(1)
    B, T = 3, 9
    embed = torch.randn(B, T, 6, generator=g, dtype=torch.float64, requires_grad=True)
    action = (1.5 * torch.randn(B, T, 2, generator=g, dtype=torch.float64)).requires_grad_()
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[list(start_rows), 0] = True
    is_first[1, 4] = is_first[2, 6] = True  # episodes starting mid-sequence
    w = [torch.randn(B, T, *s, generator=g, dtype=torch.float64) for s in ((8,), (4, 5), (20,))]
    return embed, action, is_first, w


def _run(rssm, fused: bool, monkeypatch, state=None):
    monkeypatch.setattr(rssm_fused, "ENABLED", fused)
    embed, action, is_first, (wd, wl, ws) = _inputs((0, 1, 2) if state is None else (1,))
    rssm.zero_grad()
    torch.manual_seed(7)
    post, prior = rssm.observe(embed, action, is_first, state)
    loss = ((post["deter"] * wd).sum() + (post["logits"] * wl).sum()
            + (post["stoch"] * ws).sum() + (prior["logits"] * wl).sum()
            + rssm.kl(post, prior).pow(2).sum())
    loss.backward()
    grads = {n: p.grad.clone() for n, p in rssm.named_parameters() if p.grad is not None}
    grads.update(embed=embed.grad, action=action.grad)
    return post, grads


@pytest.mark.parametrize("unimix,initial,act,norm", [
    (0.01, "learned", "silu", "layer"),  # DreamerV3
    (0.0, "zeros", "elu", "none"),       # DreamerV2: ELU blocks with biases, no LayerNorm
    (0.0, "zeros", "elu", "layer"),
    (0.1, "zeros", "silu", "none"),
])
def test_fused_observe_matches_autograd(monkeypatch, unimix, initial, act, norm):
    rssm = _rssm(unimix, initial, act, norm)
    embed = torch.zeros(3, 9, 6, dtype=torch.float64)
    assert rssm_fused.fusable(rssm, embed)
    ref_post, ref = _run(rssm, False, monkeypatch)
    post, got = _run(rssm, True, monkeypatch)
    assert torch.equal(post["stoch"], ref_post["stoch"].round())  # the same samples
    for key in ("deter", "logits"):
        torch.testing.assert_close(post[key], ref_post[key], rtol=1e-10, atol=1e-12)
    assert got.keys() == ref.keys()
    assert "init_deter" in ref or initial == "zeros"
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-9, atol=1e-11, msg=name)


def test_fused_observe_from_a_given_state(monkeypatch):
    rssm = _rssm(0.01, "zeros")
    g = torch.Generator().manual_seed(3)
    deter = torch.randn(3, 8, generator=g, dtype=torch.float64, requires_grad=True)
    stoch = torch.rand(3, 20, generator=g, dtype=torch.float64, requires_grad=True)
    outs = []
    for fused in (False, True):
        deter.grad = stoch.grad = None
        _run(rssm, fused, monkeypatch, {"deter": deter, "stoch": stoch})
        outs.append((deter.grad.clone(), stoch.grad.clone()))
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=1e-9, atol=1e-11)
        assert a[1].abs().min() == 0 < a[0].abs().min()  # row 1 starts anew, rows 0, 2 go on


def test_fused_observe_float32_and_retained_graph(monkeypatch):
    monkeypatch.setattr(rssm_native, "ENABLED", False)  # the Python loop (C: test_native)
    rssm = _rssm(0.01, "learned").float()
    embed = torch.randn(2, 5, 6, requires_grad=True)
    post, prior = rssm.observe(embed, torch.zeros(2, 5, 2), torch.ones(2, 5, dtype=torch.bool))
    assert post["deter"].grad_fn.name().startswith("_Observe")
    loss = post["deter"].sum() + post["logits"].exp().sum() + post["stoch"].sum()
    loss.backward(retain_graph=True)
    first = embed.grad.clone()
    loss.backward()
    torch.testing.assert_close(embed.grad, 2 * first)


def test_weight_changed_before_backward_is_refused():
    rssm = _rssm(0.01, "zeros")
    embed = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    post, _ = rssm.observe(embed, torch.zeros(2, 4, 2, dtype=torch.float64),
                           torch.ones(2, 4, dtype=torch.bool))
    with torch.no_grad():
        rssm.cell.linear.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        post["deter"].sum().backward()


def test_other_layouts_keep_the_autograd_unroll():
    x = torch.zeros(2, 3, 6)
    assert not rssm_fused.fusable(_rssm(0.01, "zeros", "relu").float(), x)
    assert not rssm_fused.fusable(GaussianRSSM(6, 2, 4, 8, 7, "silu", "layer", "norm_gru"), x)
    assert not rssm_fused.fusable(CategoricalRSSM(6, 2, 4, 5, 8, 7, "silu", "rms"), x)
    assert not rssm_fused.fusable(CategoricalRSSM(6, 2, 4, 5, 8, 7, "silu", cell="gru"), x)
    rssm = _rssm(0.01, "zeros").float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not rssm_fused.fusable(rssm, x)


@pytest.mark.parametrize("recipe", ["dreamerv3", "dreamerv2"])
def test_whole_updates_match_the_autograd_unroll(recipe):
    """Three learner updates of the agent (world model, imagination, actor, critic) from one
    seed, fused against autograd unroll, in float64: the same training, not just one node."""
    from worldzoo.agent import Agent
    from worldzoo.config import apply_sets, get_recipe

    cfg = apply_sets(get_recipe(recipe, "debug"), ["train.horizon=3"])
    o, a = spaces("vector", "continuous")
    torch.manual_seed(0)
    batches = [{k: v.double() if v.is_floating_point() else v for k, v in
                fake_batch(o, a).items()} for _ in range(3)]
    params = {}
    try:
        for fused in (True, False):
            rssm_fused.ENABLED = fused
            torch.manual_seed(1)
            agent = Agent(cfg, o, a).double()
            assert rssm_fused.fusable(agent.wm.rssm, batches[0]["vector"]) == fused
            params[fused] = trained_params(agent, batches)
    finally:
        rssm_fused.ENABLED = True
    torch.testing.assert_close(params[True], params[False], rtol=1e-9, atol=1e-11)
