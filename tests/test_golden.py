"""Golden tests: every component difference between the Dreamer papers against numbers worked
out independently of the implementation (by hand, or a few lines of numpy that follow the
paper's equation), plus which parameters each loss term's gradient reaches."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worldzoo.behavior import frozen
from worldzoo.components.action_dist import OneHot, TruncNormal
from worldzoo.components.critic_target import SlowRegTarget, SlowTarget
from worldzoo.components.heads import TwoHotHead
from worldzoo.components.kl import BalancedKL, FreeNatsKL, SplitKL
from worldzoo.components.optim import LaProp
from worldzoo.components.return_norm import PercentileReturnNorm, quantiles
from worldzoo.components.rssm import CategoricalRSSM, clip_action
from worldzoo.dists import TwoHotDist, sample_onehot, symexp, symlog, symlog_bins, twohot
from worldzoo.returns import discount_weights, lambda_return

T = torch.tensor


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_kl(p, q):
    """KL(p || q) of categoricals over the last axis, summed over latents (axis -2)."""
    return (p * (np.log(p) - np.log(q))).sum((-2, -1))


# -- symlog / symexp (V3 eq. 1) ---------------------------------------------------------------
def test_symlog_symexp_by_hand():
    e = math.e
    x = T([0.0, e - 1, -(e**2 - 1), 1e6])
    assert torch.allclose(symlog(x), T([0.0, 1.0, -2.0, math.log(1e6 + 1)]), atol=1e-6)
    assert torch.allclose(symexp(T([0.0, 1.0, -2.0])), T([0.0, e - 1, -(e**2 - 1)]), atol=1e-6)
    y = T([-1e4, -3.3, -1e-3, 0.0, 2e-3, 7.0, 1e4])
    assert torch.allclose(symexp(symlog(y)), y, rtol=1e-5)


# -- two-hot encoding and decoding (V3) -------------------------------------------------------
def test_default_bins_are_255_over_symlog_minus20_20():
    bins = symlog_bins()
    assert len(bins) == 255
    assert torch.allclose(bins, torch.linspace(-20, 20, 255), atol=1e-5)
    assert bins[127] == 0.0 and torch.equal(bins, -bins.flip(0))


@pytest.mark.parametrize("x,expect", [
    (0.25, {2: 0.75, 3: 0.25}),     # between bins 0 and 1: weight by closeness
    (-1.0, {1: 1.0}),               # exactly on a bin
    (1.9, {3: 0.1, 4: 0.9}),
    (2.0, {4: 1.0}),                # the top edge bin
    (5.0, {4: 1.0}),                # above the range: all weight on the edge bin
    (-7.0, {0: 1.0}),               # below the range
])
def test_twohot_encoding_by_hand(x, expect):
    bins = symlog_bins(5, -2.0, 2.0)  # [-2, -1, 0, 1, 2]
    enc = twohot(T([x]), bins)[0].numpy()
    want = np.zeros(5)
    for i, w in expect.items():
        want[i] = w
    assert np.allclose(enc, want, atol=1e-6)


def test_twohot_decoding_and_loss_numpy():
    bins = symlog_bins(255)
    targets = T([0.0, 1.0, -3.5, 250.0, -12345.0])
    enc = twohot(symlog(targets), bins)
    # a prediction that puts exactly the two-hot weights on the bins decodes to the target
    dist = TwoHotDist(torch.log(enc.clamp(min=1e-30)), bins)
    assert torch.allclose(dist.mean, targets, rtol=1e-4, atol=1e-4)
    # cross-entropy against the two-hot target, numpy
    logits = np.random.default_rng(0).normal(size=(5, 255))
    d = TwoHotDist(T(logits, dtype=torch.float32), bins)
    b = np.linspace(-20, 20, 255)
    want_loss, want_mean = [], []
    for row, t in zip(logits, targets.numpy()):
        s = np.sign(t) * np.log1p(abs(t))
        k = np.searchsorted(b, s, side="right") - 1
        w = np.zeros(255)
        w[k] = (b[k + 1] - s) / (b[k + 1] - b[k])
        w[k + 1] = 1 - w[k]
        logp = row - np.log(np.exp(row - row.max()).sum()) - row.max()
        want_loss.append(-(w * logp).sum())
        m = (np_softmax(row) * b).sum()
        want_mean.append(np.sign(m) * np.expm1(abs(m)))
    assert np.allclose(d.loss(targets).numpy(), want_loss, rtol=1e-4)
    assert np.allclose(d.mean.numpy(), want_mean, rtol=1e-3, atol=1e-5)


def test_twohot_edge_target_outside_range_decodes_to_edge():
    bins = symlog_bins(255)
    enc = twohot(symlog(T([1e12])), bins)
    assert enc[0, -1] == 1.0
    dist = TwoHotDist(torch.log(enc.clamp(min=1e-30)), bins)
    assert torch.allclose(dist.mean, symexp(T([20.0])), rtol=1e-4)


def test_twohot_head_zero_init_predicts_exactly_zero():
    head = TwoHotHead(8, layers=1, units=8)
    assert torch.equal(head(torch.randn(3, 8)).mean, torch.zeros(3))


# -- KL: free nats (V1), balanced (V2), split with free bits (V3) -----------------------------
@pytest.fixture
def logits():
    rng = np.random.default_rng(1)
    return rng.normal(size=(6, 2, 3)), rng.normal(size=(6, 2, 3))  # [N, latents, classes]


def _kl_fn(a, b):
    lp, lq = torch.log_softmax(a["logits"], -1), torch.log_softmax(b["logits"], -1)
    return (lp.exp() * (lp - lq)).sum((-2, -1))


def _leaves(post, prior):
    a = T(post, dtype=torch.float64, requires_grad=True)
    b = T(prior, dtype=torch.float64, requires_grad=True)
    return a, b


def _grads_numpy(post, prior):
    """Analytic gradients of mean_n KL(softmax(a_n) || softmax(b_n)) w.r.t. a and b."""
    p, q = np_softmax(post), np_softmax(prior)
    n = len(post)
    kl_lat = (p * (np.log(p) - np.log(q))).sum(-1, keepdims=True)  # per latent
    d_post = p * (np.log(p) - np.log(q) - kl_lat) / n
    d_prior = (q - p) / n
    return d_post, d_prior


def test_balanced_kl_values_and_gradients(logits):
    post, prior = logits
    kl = np_kl(np_softmax(post), np_softmax(prior))
    a, b = _leaves(post, prior)
    loss, _ = BalancedKL(alpha=0.8, free=0.0)(_kl_fn, {"logits": a}, {"logits": b})
    assert np.isclose(loss["kl"].item(), kl.mean())
    loss["kl"].backward()
    d_post, d_prior = _grads_numpy(post, prior)
    # the prior learns with weight alpha, the posterior is regularised with 1 - alpha
    assert np.allclose(b.grad.numpy(), 0.8 * d_prior)
    assert np.allclose(a.grad.numpy(), 0.2 * d_post)


def test_balanced_kl_free_nats_clamp_after_averaging(logits):
    post, prior = logits
    kl = np_kl(np_softmax(post), np_softmax(prior))
    free = kl.mean() + 0.5  # above the mean KL: value = free, no gradient
    a, b = _leaves(post, prior)
    loss, _ = BalancedKL(alpha=0.8, free=free)(_kl_fn, {"logits": a}, {"logits": b})
    assert np.isclose(loss["kl"].item(), free)
    loss["kl"].backward()
    assert not a.grad.any() and not b.grad.any()


def test_free_nats_kl_v1_gradient_reaches_both(logits):
    post, prior = logits
    a, b = _leaves(post, prior)
    loss, _ = FreeNatsKL(free=0.0)(_kl_fn, {"logits": a}, {"logits": b})
    loss["kl"].backward()
    d_post, d_prior = _grads_numpy(post, prior)
    assert np.allclose(a.grad.numpy(), d_post) and np.allclose(b.grad.numpy(), d_prior)


def test_split_kl_free_bits_per_step_and_stop_gradients(logits):
    post, prior = logits
    kl = np_kl(np_softmax(post), np_softmax(prior))
    free = float(np.median(kl))  # some steps below, some above the free bits
    split = SplitKL(dyn=0.5, rep=0.1, free=free)
    assert split.scales == {"dyn": 0.5, "rep": 0.1}
    a, b = _leaves(post, prior)
    loss, _ = split(_kl_fn, {"logits": a}, {"logits": b})
    want = np.maximum(kl, free).mean()  # clipped per step, then averaged
    assert np.isclose(loss["dyn"].item(), want) and np.isclose(loss["rep"].item(), want)
    above = (kl > free)[:, None, None]
    d_post, d_prior = _grads_numpy(post, prior)
    loss["dyn"].backward(retain_graph=True)  # dynamics loss: the prior only
    assert a.grad is None or not a.grad.any()
    assert np.allclose(b.grad.numpy(), d_prior * above)
    b.grad = None
    loss["rep"].backward()  # representation loss: the posterior only
    assert b.grad is None or not b.grad.any()
    assert np.allclose(a.grad.numpy(), d_post * above)


def _grad_params(module, loss):
    module.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {n for n, p in module.named_parameters() if p.grad is not None and p.grad.any()}


def test_split_kl_terms_reach_prior_net_vs_posterior_net_and_encoder():
    torch.manual_seed(0)
    rssm = CategoricalRSSM(5, 2, stoch=3, classes=4, deter=8, hidden=8, unimix=0.0)
    encoder = torch.nn.Linear(4, 5)
    embed = encoder(torch.randn(3, 1, 4))
    post, prior = rssm.observe(embed, torch.zeros(3, 1, 2), torch.ones(3, 1, dtype=torch.bool))
    loss, _ = SplitKL(free=0.0)(rssm.kl, post, prior)
    whole = torch.nn.ModuleDict({"rssm": rssm, "encoder": encoder})
    dyn = _grad_params(whole, loss["dyn"])
    rep = _grad_params(whole, loss["rep"])
    assert any(n.startswith("rssm.prior_net") for n in dyn)
    assert not any(n.startswith(("rssm.post_net", "encoder")) for n in dyn)
    assert any(n.startswith("rssm.post_net") for n in rep)
    assert any(n.startswith("encoder") for n in rep)
    assert not any(n.startswith("rssm.prior_net") for n in rep)


# -- categorical latents: straight-through gradients and unimix -----------------------------
def test_straight_through_sample_is_onehot_with_softmax_gradient():
    torch.manual_seed(0)
    rssm = CategoricalRSSM(1, 1, stoch=2, classes=3, deter=4, hidden=4, unimix=0.0)
    raw = np.array([[0.5, -1.0, 2.0], [0.0, 0.3, -0.2]])
    w = np.array([[1.0, -2.0, 0.5], [3.0, 0.0, -1.0]])
    logits = T(raw, dtype=torch.float32, requires_grad=True)
    sample = rssm._sample({"logits": logits}).reshape(2, 3)
    assert torch.equal(sample.detach().sum(-1), torch.ones(2))
    assert set(sample.detach().flatten().tolist()) <= {0.0, 1.0}
    (sample * T(w, dtype=torch.float32)).sum().backward()
    p = np_softmax(raw)
    want = p * (w - (p * w).sum(-1, keepdims=True))  # d/dlogits sum(w * softmax(logits))
    assert np.allclose(logits.grad.numpy(), want, atol=1e-6)


@pytest.mark.parametrize("rows", [16, 4096])  # scatter_ below 2**16 elements, flat index above
def test_sample_onehot_is_inverse_cdf_with_one_uniform_per_categorical(rows):
    probs = torch.softmax(torch.randn(4, 16, generator=torch.Generator().manual_seed(1)) * 2, -1)
    probs = probs.expand(rows, 4, 16)
    torch.manual_seed(5)
    sample = sample_onehot(probs)
    torch.manual_seed(5)
    cdf = probs.cumsum(-1)
    u = torch.rand_like(cdf[..., :1]) * cdf[..., -1:]
    idx = (cdf <= u).sum(-1, keepdim=True).clamp_max(15)  # the count of cdf entries <= u
    assert sample.is_contiguous() and sample.shape == probs.shape
    assert torch.equal(sample, torch.zeros(rows, 4, 16).scatter_(-1, idx, 1.0))
    if rows > 16:  # frequencies within 5 standard errors of the probabilities
        freq, p = sample.mean(0), probs[0]
        assert ((freq - p).abs() <= 5 * (p * (1 - p) / rows).sqrt() + 1e-6).all()


def test_unimix_latent_and_action_probs():
    raw = np.array([[4.0, 0.0, -4.0, 1.0]])
    want = 0.99 * np_softmax(raw) + 0.01 / 4
    rssm = CategoricalRSSM(1, 1, stoch=1, classes=4, deter=4, hidden=4, unimix=0.01)
    stats = rssm._stats(T(raw, dtype=torch.float32))
    assert np.allclose(torch.softmax(stats["logits"], -1).numpy()[0], want, atol=1e-6)
    dist = OneHot(T(raw, dtype=torch.float32), unimix=0.01)
    assert np.allclose(dist.probs.numpy(), want, atol=1e-6)
    assert np.isclose(dist.entropy().item(), -(want * np.log(want)).sum(), atol=1e-6)
    assert dist.probs.min() >= 0.01 / 4 - 1e-7  # every action keeps some probability


# -- V3: actions entering the dynamics are clipped, a * sg(1 / max(1, |a|)) ------------------
def test_action_clip_values_gradient_and_where_it_applies():
    a = T([[-3.0, -0.5, 0.0, 1.0, 2.0]], requires_grad=True)
    out = clip_action(a, 1.0)
    assert np.allclose(out.detach().numpy(), [[-1.0, -0.5, 0.0, 1.0, 1.0]])
    out.sum().backward()  # d/da a * sg(1 / max(1, |a|)) = 1 / max(1, |a|)
    assert np.allclose(a.grad.numpy(), [[1 / 3, 1.0, 1.0, 1.0, 0.5]])
    assert clip_action(a, 0.0) is a  # V1/V2: off
    # the dynamics see the clipped action: a = 2.5 and a = 1.0 lead to the same next state
    torch.manual_seed(0)
    rssm = CategoricalRSSM(3, 1, stoch=2, classes=3, deter=4, hidden=4, action_clip=1.0)
    state = rssm.initial(1)
    assert torch.equal(rssm._core(state["deter"], state["stoch"], T([[2.5]])),
                       rssm._core(state["deter"], state["stoch"], T([[1.0]])))
    rssm.action_clip = 0.0
    assert not torch.equal(rssm._core(state["deter"], state["stoch"], T([[2.5]])),
                           rssm._core(state["deter"], state["stoch"], T([[1.0]])))


# -- lambda-returns with a continue head; imagined-step weights ------------------------------
def test_lambda_return_with_continue_by_hand():
    # H = 3 imagined steps after the start; the episode ends on arriving at state 2
    reward = T([0.0, 1.0, 2.0, 4.0])
    value = T([10.0, 20.0, 30.0, 40.0])
    cont = T([1.0, 1.0, 0.0, 1.0])
    gamma, lam = 0.9, 0.5
    disc = gamma * cont
    R2 = 4.0 + 0.9 * 40.0                                 # bootstrap from value[3]
    R1 = 2.0 + 0.0 * (0.5 * 30.0 + 0.5 * R2)              # terminal: no future
    R0 = 1.0 + 0.9 * (0.5 * 20.0 + 0.5 * R1)
    got = lambda_return(reward, value, disc, lam)
    assert torch.allclose(got, T([R0, R1, R2]))
    # weights: the start's own continue, then the discounts of the steps before
    w = discount_weights(disc.unsqueeze(-1), T([1.0])).squeeze(-1)
    assert torch.allclose(w, T([1.0, 0.9, 0.0]))


def test_lambda_one_is_discounted_sum_and_lambda_zero_is_td():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=6), rng.normal(size=6)
    d = 0.97 * (rng.uniform(size=6) > 0.2)
    mc = [sum(r[k] * np.prod(d[t + 1:k]) for k in range(t + 1, 6)) + np.prod(d[t + 1:]) * v[5]
          for t in range(5)]
    got = lambda_return(T(r), T(v), T(d), 1.0)
    assert np.allclose(got.numpy(), mc)
    td = r[1:] + d[1:] * v[1:]
    assert np.allclose(lambda_return(T(r), T(v), T(d), 0.0).numpy(), td)


# -- percentile return normalisation (V3) -----------------------------------------------------
def test_percentile_return_norm_ema_numpy():
    rng = np.random.default_rng(0)
    norm = PercentileReturnNorm(low=0.05, high=0.95, decay=0.99, limit=1.0)
    lo = hi = 0.0
    for _ in range(3):
        x = rng.normal(0, 300, size=500)
        lo = 0.99 * lo + 0.01 * np.percentile(x, 5)
        hi = 0.99 * hi + 0.01 * np.percentile(x, 95)
        scale = norm(T(x, dtype=torch.float32))
        assert np.isclose(scale.item(), max(1.0, hi - lo), rtol=1e-4)
    # small returns are not scaled up: max(1, S)
    small = PercentileReturnNorm()
    assert small(T(rng.normal(0, 0.1, size=100), dtype=torch.float32)).item() == 1.0
    # no update in eval mode
    norm.eval()
    before = norm.hi.clone()
    norm(T(rng.normal(0, 1e4, size=100), dtype=torch.float32))
    assert torch.equal(before, norm.hi)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_quantiles_match_torch_quantile(dtype):
    """The sync-free quantiles of the percentile norm are torch.quantile's (linear), bit for
    bit: runs from before the sync-free version repeat their numbers."""
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 1000, 15 * 1024, 15 * 1024 + 1):
        for scale in (1e-3, 300.0):
            x = (scale * torch.randn(n, generator=gen)).to(dtype)
            for q in (0.0, 0.05, 0.5, 0.95, 1.0):
                assert torch.equal(quantiles(x, (q,))[0], torch.quantile(x, q)), (n, q)
            both = torch.quantile(x, torch.tensor([0.05, 0.95], dtype=dtype))
            assert torch.equal(torch.stack(quantiles(x, (0.05, 0.95))), both)


# -- slow critic: V2 hard copy every 100 updates, V3 EMA 0.02 ---------------------------------
def test_slow_critic_updates():
    critic = torch.nn.Linear(2, 1)
    ema = SlowRegTarget(critic, rate=0.02, every=1)
    old = ema.slow.weight.detach().clone()
    with torch.no_grad():
        critic.weight.add_(1.0)
    ema.update()
    assert torch.allclose(ema.slow.weight, 0.98 * old + 0.02 * critic.weight)
    hard = SlowTarget(critic, rate=1.0, every=100)
    hard.update()  # update 0: copy
    with torch.no_grad():
        critic.weight.add_(1.0)
    for _ in range(99):
        hard.update()
    assert not torch.allclose(hard.slow.weight, critic.weight)
    hard.update()  # update 100: copy again
    assert torch.equal(hard.slow.weight, critic.weight)


# -- LaProp with adaptive gradient clipping (V3 2024) -----------------------------------------
def test_laprop_agc_numpy_two_steps():
    p0 = np.array([0.5, -1.0, 2.0])
    grads = [np.array([10.0, 0.0, -5.0]), np.array([0.01, 0.02, -0.03])]
    lr, b1, b2, eps, agc, warmup = 0.1, 0.9, 0.999, 1e-20, 0.3, 4
    p = p0.copy()
    nu, mu = np.zeros(3), np.zeros(3)
    for t, g in enumerate(grads, 1):
        g = g / max(1.0, np.linalg.norm(g) / (agc * max(1e-3, np.linalg.norm(p))))
        nu = b2 * nu + (1 - b2) * g**2
        u = g / (np.sqrt(nu / (1 - b2**t)) + eps)
        mu = b1 * mu + (1 - b1) * u
        p = p - lr * min(1.0, t / warmup) * mu / (1 - b1**t)
    param = torch.nn.Parameter(T(p0))
    opt = LaProp([param], lr=lr, betas=(b1, b2), eps=eps, agc=agc, warmup=warmup)
    for g in grads:
        param.grad = T(g)
        opt.step()
    assert np.allclose(param.detach().numpy(), p, rtol=1e-10)


# -- truncated normal actions (V2) ------------------------------------------------------------
def test_trunc_normal_density_entropy_and_samples():
    xs = np.linspace(-1, 1, 20001)
    for raw_mean, raw_std in [(0.3, -0.5), (0.8, -3.0)]:
        m, sd = np.tanh(raw_mean), 2 / (1 + np.exp(-raw_std / 2)) + 0.1  # V2's parameters
        pdf = np.exp(-0.5 * ((xs - m) / sd) ** 2)
        pdf /= np.trapezoid(pdf, xs)  # normalised on [-1, 1]
        dist = TruncNormal(T([[raw_mean, raw_std]], dtype=torch.float64))
        logp = dist.log_prob(T(xs[:, None, None], dtype=torch.float64)).numpy()[:, 0]
        assert np.allclose(np.exp(logp), pdf, rtol=1e-6)
        assert np.isclose(dist.entropy().item(), -np.trapezoid(pdf * np.log(pdf), xs),
                          rtol=1e-5)
        torch.manual_seed(0)
        s = TruncNormal(T([[raw_mean, raw_std]]).expand(20000, -1)).sample()
        assert s.min() >= -1 and s.max() <= 1
        assert abs(s.mean().item() - np.trapezoid(xs * pdf, xs)) < 0.02


# -- actor gradients: REINFORCE vs dynamics backprop vs mixed (rho) ---------------------------
def _actor(name, discrete, **kw):
    from worldzoo.registry import build

    return build("actor", name, 4, 3, discrete, layers=1, units=8, ent_scale=0.0, **kw)


@pytest.mark.parametrize("name,rho", [("reinforce", 1.0), ("dynamics", 0.0), ("mixed", 0.3)])
def test_actor_objective_numpy(name, rho):
    torch.manual_seed(0)
    kw = {"rho": rho} if name == "mixed" else {}
    actor = _actor(name, discrete=True, **kw)
    actor.ent_scale = 0.01
    N = 5
    feat = torch.randn(N, 4)
    action = torch.nn.functional.one_hot(torch.randint(0, 3, (N,)), 3).float()
    r = torch.randn(N, dtype=torch.float32, requires_grad=True)  # stands for the return
    base, weight, scale = torch.randn(N), torch.rand(N), T(2.5)
    loss, _ = actor.loss(feat, action, r * 1.0, base, weight, scale)
    logits = actor.net(feat).detach().numpy()
    p = np_softmax(logits)
    logp = np.log((p * action.numpy()).sum(-1))
    ent = -(p * np.log(p)).sum(-1)
    ret, b, w = r.detach().numpy(), base.numpy(), weight.numpy()
    obj = rho * logp * (ret - b) / 2.5 + (1 - rho) * ret / 2.5 + 0.01 * ent
    assert np.isclose(loss["actor"].item(), -(w * obj).mean(), rtol=1e-5)
    loss["actor"].backward()
    # the return is differentiated only by the dynamics share (1 - rho), never by REINFORCE
    want = -(1 - rho) * w / 2.5 / N
    got = r.grad.numpy() if r.grad is not None else np.zeros(N)
    assert np.allclose(got, want, atol=1e-7)


def _agent(recipe, sets, discrete):
    import gymnasium as gym

    from worldzoo.agent import Agent
    from worldzoo.config import apply_sets, get_recipe

    cfg = apply_sets(get_recipe(recipe, "debug"), sets)
    obs = gym.spaces.Dict({"vector": gym.spaces.Box(-1, 1, (3,), np.float32)})
    act = gym.spaces.Discrete(3) if discrete else gym.spaces.Box(-1, 1, (2,), np.float32)
    return Agent(cfg, obs, act)


def _fake_batch(agent, b=3, t=5):
    n = agent.action_dim
    first = torch.zeros(b, t, dtype=torch.bool)
    first[:, 0] = True
    return {"vector": torch.randn(b, t, 3), "action": torch.rand(b, t, n) * 2 - 1,
            "reward": torch.randn(b, t), "is_first": first,
            "is_terminal": torch.zeros(b, t, dtype=torch.bool)}


def _reached(agent, loss):
    agent.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    parts = {"wm": agent.wm, "actor": agent.ac.actor, "critic": agent.ac.critic}
    return {k for k, m in parts.items()
            if any(p.grad is not None and p.grad.any() for p in m.parameters())}


@pytest.mark.parametrize("actor,discrete", [("reinforce", True), ("reinforce", False),
                                            ("dynamics", False), ("dynamics", True)])
def test_which_parameters_each_loss_reaches(actor, discrete):
    torch.manual_seed(0)
    agent = _agent("dreamerv3", [f"actor={actor}"], discrete)
    batch = _fake_batch(agent)
    wm_loss, post, _ = agent.wm.loss(batch)
    assert _reached(agent, wm_loss) == {"wm"}
    actor_loss, critic_loss, _ = agent.ac.loss(agent.wm, post, batch["is_terminal"])
    assert _reached(agent, actor_loss) == {"actor"}   # the world model stays frozen
    assert _reached(agent, critic_loss) == {"critic"}


def test_dynamics_actor_differentiates_imagination_reinforce_does_not():
    torch.manual_seed(0)
    for actor, graph in [("dynamics", True), ("reinforce", False)]:
        agent = _agent("dreamerv3", [f"actor={actor}", "actor.ent_scale=0.0"], False)
        batch = _fake_batch(agent)
        _, post, _ = agent.wm.loss(batch)
        start = {k: v.detach().reshape(-1, *v.shape[2:]) for k, v in post.items()}
        with frozen(agent.wm):
            feat = agent.ac.imagine(agent.wm, start)["feat"]
        assert feat.requires_grad == graph
