"""Every recipe, and every (recipe x swapped slot variant) pair, trains for a few updates with
the debug preset on vector and pixel observations, discrete and continuous actions; pairs
that cannot work fail at assembly with a message saying why. Plus one real `worldzoo.run`
per recipe on gym:CartPole-v1 and dmc:cartpole-balance."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _fakes import fake_batch, spaces

from worldzoo import registry
from worldzoo.agent import Agent, check_agent
from worldzoo.config import ConfigError, apply_sets, get_recipe, presets, recipes

RECIPES = [r for r in recipes() if get_recipe(r).get("pipeline", "dreamer") == "dreamer"]
KINDS = [("vector", "discrete"), ("vector", "continuous"), ("pixel", "discrete"),
         ("pixel", "continuous")]
# variants that need one kind of observation
NEEDS = {("encoder", "mlp"): "vector", ("decoder", "mlp"): "vector",
         ("encoder", "cnn"): "pixel", ("decoder", "cnn"): "pixel"}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets on a shared 2-core machine run far faster on one intra-op thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def train_a_few(recipe: str, sets: list[str], obs: str, act: str, updates: int = 2):
    torch.manual_seed(0)
    cfg = apply_sets(get_recipe(recipe, "debug"), sets + ["train.horizon=3"])
    o, a = spaces(obs, act)
    agent = Agent(cfg, o, a)
    before = [p.detach().clone() for p in agent.parameters()]
    for _ in range(updates):
        metrics = agent.train_step(fake_batch(o, a))
    for k, v in metrics.items():
        assert math.isfinite(float(v)), (k, float(v))
    assert any(not torch.equal(b, p) for b, p in zip(before, agent.parameters()))
    step = {k: np.asarray(s.sample())[None] for k, s in o.spaces.items()}
    step["is_first"] = np.array([True])
    env_action, _, state = agent.policy(step, None, explore=True)
    step["is_first"] = np.array([False])
    env_action, _, _ = agent.policy(step, state, explore=False)
    assert a.contains(env_action[0].astype(a.dtype) if act == "continuous" else int(env_action[0]))
    return metrics


@pytest.mark.parametrize("obs,act", KINDS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains(recipe, obs, act):
    train_a_few(recipe, [], obs, act)


def swaps(recipe: str) -> list[tuple[str, str]]:
    cfg = get_recipe(recipe)
    return [(slot, name) for slot in registry.slots() if slot in cfg
            for name in registry.variants(slot) if name != cfg[slot]["name"]]


ALL_SWAPS = [(r, s, v) for r in RECIPES for s, v in swaps(r)]


def kind_for(i: int, slot: str, name: str) -> tuple[str, str]:
    """A representative env kind for a pair: the one it needs, else rotating over KINDS."""
    obs, act = KINDS[i % len(KINDS)]
    return NEEDS.get((slot, name), obs), act


@pytest.mark.parametrize("recipe,slot,name", ALL_SWAPS,
                         ids=[f"{r}[{s}={v}]" for r, s, v in ALL_SWAPS])
def test_swapped_variant_trains(recipe, slot, name):
    obs, act = kind_for(ALL_SWAPS.index((recipe, slot, name)), slot, name)
    train_a_few(recipe, [f"{slot}={name}"], obs, act, updates=1)


@pytest.mark.slow
@pytest.mark.parametrize("obs,act", KINDS)
@pytest.mark.parametrize("recipe,slot,name", ALL_SWAPS,
                         ids=[f"{r}[{s}={v}]" for r, s, v in ALL_SWAPS])
def test_swapped_variant_trains_every_env_kind(recipe, slot, name, obs, act):
    need = NEEDS.get((slot, name))
    if need and need != obs:
        with pytest.raises(ConfigError, match=f"{slot}={name} cannot be used here"):
            train_a_few(recipe, [f"{slot}={name}"], obs, act, updates=1)
        return
    train_a_few(recipe, [f"{slot}={name}"], obs, act, updates=1)


@pytest.mark.parametrize("slot,name,obs", [("encoder", "mlp", "pixel"), ("decoder", "cnn",
                                                                          "vector")])
def test_impossible_pair_fails_at_assembly_with_reason(slot, name, obs):
    cfg = apply_sets(get_recipe("dreamerv3", "debug"), [f"{slot}={name}"])
    o, a = spaces(obs, "discrete")
    with pytest.raises(ConfigError) as err:
        check_agent(cfg, o, a)
    msg = str(err.value)
    assert f"{slot}={name} cannot be used here" in msg and "env gives" in msg


@pytest.mark.parametrize("recipe", RECIPES)
def test_every_preset_assembles_on_meta_device(recipe):
    """Paper sizes too: assembly on the meta device costs no memory."""
    o, a = spaces("pixel", "continuous")
    for preset in presets(recipe):
        check_agent(get_recipe(recipe, preset), o, a)


def test_v3_size_presets_match_peer_sizes():
    xs, s = get_recipe("dreamerv3", "xs"), get_recipe("dreamerv3", "s")
    assert (xs["rssm"]["deter"], xs["rssm"]["hidden"], xs["actor"]["units"]) == (256, 256, 256)
    assert (xs["rssm"]["stoch"], xs["rssm"]["classes"], xs["critic"]["bins"]) == (32, 32, 255)
    assert xs["encoder"]["mlp_layers"] == xs["reward"]["layers"] == 1
    assert xs["rssm"]["norm"] == "layer"
    assert (s["rssm"]["deter"], s["critic"]["units"], s["actor"]["layers"]) == (512, 512, 2)
    for cfg in (xs, s):
        t = cfg["train"]
        assert (t["batch_size"], t["batch_length"], t["horizon"]) == (16, 64, 15)


def test_learned_initial_state_is_used_and_trained():
    cfg = get_recipe("dreamerv3", "debug")
    o, a = spaces("vector", "discrete")
    agent = Agent(cfg, o, a)
    rssm = agent.wm.rssm
    with torch.no_grad():
        rssm.init_deter.fill_(0.5)
    init = rssm.initial(2)
    assert torch.allclose(init["deter"], torch.full((2, rssm.deter), math.tanh(0.5)))
    loss, _, _ = agent.wm.loss(fake_batch(o, a))
    loss.backward()
    assert rssm.init_deter.grad is not None and rssm.init_deter.grad.any()


# -- real runs of the CLI's Python API ------------------------------------------------------------
@pytest.mark.parametrize("env", ["gym:CartPole-v1", "dmc:cartpole-balance"])
@pytest.mark.parametrize("recipe", RECIPES)
def test_real_run(recipe, env, tmp_path):
    if env.startswith("dmc:"):
        pytest.importorskip("dm_control")
    from worldzoo.runs import run

    res = run(recipe, env, steps=160, preset="debug", results=tmp_path, quiet=True,
              sets=["train.train_ratio=4", "train.prefill=120"])
    assert res.result["updates"] > 0 and math.isfinite(res.result["eval_return"])
    assert "eval_return" in res.metrics and "loss_model" in res.metrics


@pytest.mark.parametrize("recipe", RECIPES)
def test_bfloat16_learner_step_keeps_float32_state_and_tracks_float32(recipe):
    """train.precision=bfloat16 runs the nets' matmuls under autocast, but the recurrent state,
    the latent's statistics and every loss stay float32, and the losses of one update on the
    same batch from the same weights are those of float32 to bf16's ~3 significant digits."""
    o, a = spaces("vector", "continuous")
    batch = fake_batch(o, a)
    out = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        cfg = apply_sets(get_recipe(recipe, "debug"),
                         ["train.horizon=3", f"train.precision={precision}"])
        agent = Agent(cfg, o, a)
        with agent.autocast():
            _, post, _ = agent.wm.loss(batch)
        assert {v.dtype for v in post.values()} == {torch.float32}
        torch.manual_seed(1)
        out[precision] = agent.train_step(batch)
        assert all(p.dtype == torch.float32 for p in agent.parameters())
    for key in ("loss_model", "loss_decoder", "loss_reward", "loss_critic"):
        lo, hi = float(out["float32"][key]), float(out["bfloat16"][key])
        assert math.isfinite(hi) and abs(hi - lo) <= 0.02 * abs(lo) + 1e-3, (key, lo, hi)
