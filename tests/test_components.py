"""DreamerV1 pieces against values computed by hand / with numpy from the paper's equations."""

import math

import numpy as np
import torch

from worldzoo.components.action_dist import TanhNormal
from worldzoo.components.kl import FreeNatsKL
from worldzoo.components.rssm import GaussianRSSM
from worldzoo.returns import discount_weights, lambda_return


def test_lambda_return_matches_the_recursion_by_hand():
    # H = 2 imagined steps after the start state; gamma folded into disc
    reward = torch.tensor([[0.0], [1.0], [2.0]])
    value = torch.tensor([[0.5], [3.0], [4.0]])
    disc = torch.tensor([[0.9], [0.9], [0.9]])
    lam = 0.5
    # R1 = r2 + d2 * V2 = 2 + 0.9 * 4 = 5.6
    # R0 = r1 + d1 * ((1 - lam) V1 + lam R1) = 1 + 0.9 * (0.5 * 3 + 0.5 * 5.6) = 4.87
    ret = lambda_return(reward, value, disc, lam)
    assert torch.allclose(ret[:, 0], torch.tensor([4.87, 5.6]))


def test_lambda_one_is_monte_carlo_and_zero_is_td():
    rng = np.random.default_rng(0)
    r, v = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    d = np.full((6, 3), 0.99)
    mc = lambda_return(*map(torch.tensor, (r, v, d)), 1.0).numpy()
    want = np.zeros((5, 3))
    for t in range(5):
        acc, disc = 0.0, 1.0
        for k in range(t + 1, 6):
            acc += disc * r[k]
            disc *= d[k]
        want[t] = acc + disc * v[5]
    assert np.allclose(mc, want)
    td = lambda_return(*map(torch.tensor, (r, v, d)), 0.0).numpy()
    assert np.allclose(td, r[1:] + d[1:] * v[1:])


def test_discount_weights_are_cumulative_products_from_the_start():
    disc = torch.tensor([[0.9], [0.8], [0.5], [0.1]])
    w = discount_weights(disc, torch.tensor([1.0]))
    assert torch.allclose(w[:, 0], torch.tensor([1.0, 0.8, 0.4]))
    assert torch.all(discount_weights(disc, torch.tensor([0.0])) == 0)


def test_gaussian_kl_matches_the_closed_form():
    rssm = GaussianRSSM(4, 1, stoch=2, deter=4, hidden=4)
    lhs = {"mean": torch.tensor([[0.0, 1.0]]), "std": torch.tensor([[1.0, 2.0]])}
    rhs = {"mean": torch.tensor([[1.0, 1.0]]), "std": torch.tensor([[2.0, 1.0]])}
    # per dim: log(s2/s1) + (s1^2 + (m1-m2)^2) / (2 s2^2) - 1/2
    d0 = math.log(2.0) + (1 + 1) / 8 - 0.5
    d1 = math.log(0.5) + 4 / 2 - 0.5
    assert torch.allclose(rssm.kl(lhs, rhs), torch.tensor([d0 + d1]))
    assert torch.allclose(rssm.kl(lhs, lhs), torch.zeros(1))


def test_free_nats_clamps_the_mean_kl_and_then_has_no_gradient():
    kl = FreeNatsKL(free=3.0)
    mean = torch.zeros(1, 2, requires_grad=True)
    post = {"mean": mean, "std": torch.ones(1, 2)}
    prior = {"mean": torch.zeros(1, 2), "std": torch.ones(1, 2)}
    losses, metrics = kl(GaussianRSSM(4, 1, stoch=2).kl, post, prior)
    assert losses["kl"].item() == 3.0 and metrics["kl"].item() == 0.0
    losses["kl"].backward()
    assert torch.all(mean.grad == 0)  # below the free nats: no gradient
    post["mean"] = torch.full((1, 2), 3.0, requires_grad=True)
    losses, _ = kl(GaussianRSSM(4, 1, stoch=2).kl, post, prior)
    assert losses["kl"].item() == 9.0  # 0.5 * (9 + 9)


def test_tanh_normal_log_prob_is_change_of_variables():
    raw = torch.tensor([[0.3, -0.2]])  # mean raw, std raw
    dist = TanhNormal(raw, init_std=5.0, min_std=1e-4, mean_scale=5.0)
    mean = 5 * math.tanh(0.3 / 5)
    std = math.log1p(math.exp(-0.2 + math.log(math.expm1(5.0)))) + 1e-4
    a = 0.7
    u = math.atanh(a)
    want = (-0.5 * ((u - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
            - math.log(1 - a * a))
    assert abs(dist.log_prob(torch.tensor([[a]])).item() - want) < 1e-4
    assert abs(dist.mean.item() - mean) < 1e-6 and abs(dist.std.item() - std) < 1e-5
    sample = dist.sample()
    assert sample.abs().max() <= 1


def test_rssm_observe_resets_on_is_first_and_imagines_from_posteriors():
    torch.manual_seed(0)
    rssm = GaussianRSSM(6, 2, stoch=3, deter=5, hidden=7)
    embed, action = torch.randn(2, 4, 6), torch.randn(2, 4, 2)
    first = torch.zeros(2, 4)
    first[:, 0] = 1
    first[1, 2] = 1
    post, prior = rssm.observe(embed, action, first)
    assert post["deter"].shape == (2, 4, 5) and post["stoch"].shape == (2, 4, 3)
    assert prior["mean"].shape == (2, 4, 3)
    # the step after a reset equals a fresh start with the same embed
    fresh, _ = rssm.observe(embed[1:, 2:3], torch.zeros(1, 1, 2), torch.ones(1, 1))
    assert torch.allclose(fresh["deter"][0, 0], post["deter"][1, 2], atol=1e-6)
    nxt = rssm.img_step({k: v[:, -1] for k, v in post.items()}, torch.zeros(2, 2))
    assert nxt["stoch"].shape == (2, 3)


def test_img_step_without_gradients_splits_img_in():
    """Imagination without gradients multiplies img_in's stoch and action columns apart (no
    [stoch | action] copy); the same values as the concatenated product with gradients on."""
    from worldzoo.components.rssm import CategoricalRSSM

    torch.manual_seed(0)
    rssm = CategoricalRSSM(6, 3, 4, 5, 8, 7, act="silu", norm="layer", unimix=0.01)
    state = {"deter": torch.randn(9, 8),
             "stoch": torch.nn.functional.one_hot(torch.randint(0, 5, (9, 4)), 5).float()
             .view(9, 20)}
    action = torch.randn(9, 3)
    with torch.no_grad():
        split = rssm._core(state["deter"], state["stoch"], action)
    joined = rssm._core(state["deter"], state["stoch"], action)  # (parameters need grad)
    assert joined.requires_grad and not split.requires_grad
    torch.testing.assert_close(split, joined.detach(), rtol=1e-5, atol=1e-6)


def test_categorical_kl_pair_is_two_kl_calls():
    """`CategoricalRSSM.kl_pair` (one autograd node) gives what the two stop-gradient `kl`
    calls give: values and both logits' gradients, float64, through V2's and V3's KL."""
    from worldzoo.components.kl import BalancedKL, SplitKL
    from worldzoo.components.rssm import CategoricalRSSM

    torch.manual_seed(0)
    rssm = CategoricalRSSM(6, 2, 4, 5, 8, 7).double()
    for kl in (SplitKL(), BalancedKL()):
        post = torch.randn(3, 7, 4, 5, dtype=torch.float64, requires_grad=True)
        prior = torch.randn(3, 7, 4, 5, dtype=torch.float64, requires_grad=True)
        outs = []
        for pair_fn in (None, rssm.kl_pair):
            post.grad = prior.grad = None
            losses, _ = kl(rssm.kl, {"logits": post}, {"logits": prior}, pair_fn=pair_fn)
            sum((i + 1.3) * v for i, v in enumerate(losses.values())).backward()
            outs.append((torch.stack(list(losses.values())), post.grad, prior.grad))
        for a, b in zip(*outs):
            torch.testing.assert_close(b, a, rtol=1e-12, atol=1e-14)
