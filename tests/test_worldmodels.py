"""World Models: MDN likelihood and sampling, VAE loss, CMA-ES, the dream env, the real CLI."""

import json
import math
import warnings

import numpy as np
import pytest
import torch
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from worldzoo import checkpoint
from worldzoo.api import load
from worldzoo.cli import main
from worldzoo.config import ConfigError, apply_sets, get_recipe
from worldzoo.envs import make
from worldzoo.runs import run
from worldzoo.worldmodels.controller import LinearController
from worldzoo.worldmodels.dream import DreamEnv, DreamSim
from worldzoo.worldmodels.es import CMAES
from worldzoo.worldmodels.memory import MDNRNN, mdn_nll, mdn_sample
from worldzoo.worldmodels.models import Job, WorldModels
from worldzoo.worldmodels.rollout import Rollouts
from worldzoo.worldmodels.vae import MLPVAE, ConvVAE, kl_to_unit_normal

torch.set_num_threads(1)  # tiny batches: more threads only contend on a shared machine


def test_mdn_nll_matches_hand_computed_mixture():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(3, 2))
    logits, mean, log_std = (rng.normal(size=(3, 2, 5)) for _ in range(3))
    pi = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    std = np.exp(log_std)
    dens = pi * np.exp(-0.5 * ((z[..., None] - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    expected = -np.log(dens.sum(-1))
    got = mdn_nll(*(torch.tensor(a) for a in (z, logits, mean, log_std)))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)


def test_mdn_sampling_temperature():
    gen = torch.Generator().manual_seed(0)
    logits = torch.tensor([[0.0, math.log(3.0)]]).repeat(20000, 1)[:, None]  # pi = .25/.75
    mean = torch.tensor([[-5.0, 5.0]]).repeat(20000, 1)[:, None]
    log_std = torch.full_like(mean, math.log(0.5))
    z = mdn_sample(logits, mean, log_std, 1.0, gen)[:, 0]
    assert abs(float((z > 0).float().mean()) - 0.75) < 0.02
    assert abs(float(z[z > 0].std()) - 0.5) < 0.02
    hot = mdn_sample(logits, mean, log_std, 2.0, gen)[:, 0]  # logits / 2, std * sqrt(2)
    p = math.sqrt(3) / (1 + math.sqrt(3))
    assert abs(float((hot > 0).float().mean()) - p) < 0.02
    assert abs(float(hot[hot > 0].std()) - 0.5 * math.sqrt(2)) < 0.03
    cold = mdn_sample(logits, mean, log_std, 0.0, gen)[:, 0]  # the most likely mean
    assert torch.allclose(cold, torch.full_like(cold, 5.0), atol=1e-2)


def test_vae_loss_terms():
    torch.manual_seed(0)
    mean, logvar = torch.randn(4, 3), torch.randn(4, 3)
    kl = kl_to_unit_normal(mean, logvar)
    ref = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, (0.5 * logvar).exp()),
        torch.distributions.Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(kl, ref, atol=1e-5)
    vae = MLPVAE({"vector": (5,)}, z=3, layers=1, units=8, kl_tolerance=0.5)
    x = torch.randn(16, 5)
    total, m = vae.loss(x)
    # KL is clipped from below at kl_tolerance * z (= 1.5 nats): a fresh VAE's KL is below it
    assert float(m["vae_kl"]) < 1.5
    assert torch.isclose(total, m["vae_recon"] + 1.5, atol=1e-5)
    opt = torch.optim.Adam(vae.parameters(), 1e-2)
    first = float(m["vae_recon"])
    for _ in range(200):
        loss, m = vae.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(m["vae_recon"]) < 0.5 * first
    conv = ConvVAE({"image": (64, 64, 3)})
    frames = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8)
    assert conv.decode(conv.embed(frames)).shape == (2, 3, 64, 64)
    with pytest.raises(ConfigError, match="env.obs=pixels"):
        ConvVAE({"vector": (3,)})


def test_mdnrnn_learns_a_deterministic_sequence():
    torch.manual_seed(0)
    m = MDNRNN(2, 1, hidden=16, mixtures=3)
    z = torch.linspace(-1, 1, 9)[None, :, None].repeat(4, 1, 2)
    batch = {"z": z, "action": torch.zeros(4, 8, 1), "reward": torch.ones(4, 8),
             "done": torch.zeros(4, 8), "mask": torch.ones(4, 8)}
    opt = torch.optim.Adam(m.parameters(), 1e-2)
    for _ in range(200):
        loss, metrics = m.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(metrics["memory_mdn"]) < -1.0  # sharp densities on the right values
    assert float(metrics["memory_reward"]) < 0.01


def _cartpole_models(cfg_sets=()):
    cfg = apply_sets(get_recipe("worldmodels", "debug"), list(cfg_sets))
    env = make("gym:CartPole-v1", seed=0, obs="vector")
    return cfg, env, WorldModels(cfg, env.observation_space, env.action_space)


def test_cmaes_improves_a_controller_in_a_few_generations():
    """A linear controller (discrete head) on CartPole's own observations, searched by CMA-ES
    from zeros: a handful of generations of 8 candidates finds one that balances."""
    controller = LinearController(4, 2, discrete=True)
    env = make("gym:CartPole-v1", seed=0, obs="vector")

    def episode(params: np.ndarray, seed: int) -> float:
        obs, _ = env.reset(seed=seed)
        total, done = 0.0, False
        p = torch.as_tensor(params, dtype=torch.float32)[None]
        while not done:
            _, action = controller.act(p, torch.as_tensor(obs["vector"])[None])
            obs, reward, term, trunc, _ = env.step(action[0])
            total, done = total + reward, term or trunc
        return total

    es = CMAES(controller.initial_params(), 0.5, population=8, seed=1)
    means = []
    for g in range(8):
        cands = es.ask()
        fit = np.array([episode(p, 100 * g + i) for i, p in enumerate(cands)])
        es.tell(cands, fit)
        means.append(fit.mean())
    assert es.best_return >= 300 and means[-1] > 3 * means[0]


def test_cmaes_state_resumes_the_same_search():
    f = lambda x: -((x - 1) ** 2).sum(1)  # noqa: E731
    a = CMAES(np.zeros(5), 0.3, 6, seed=3)
    for _ in range(3):
        x = a.ask()
        a.tell(x, f(x))
    saved = {k: v.clone() for k, v in a.state().items()}
    later = []
    for _ in range(5):
        later.append(a.ask())
        a.tell(later[-1], f(later[-1]))
    b = CMAES(np.zeros(5), 0.3, 6, seed=3)  # cma samples from numpy's global RNG, saved too
    b.load_state(saved)
    for x in later:
        y = b.ask()
        np.testing.assert_allclose(x, y, atol=1e-8)
        b.tell(y, f(y))


def test_parallel_rollouts_equal_inline():
    cfg, env, wm = _cartpole_models()
    params = np.random.default_rng(0).normal(size=wm.controller.n_params) * 0.3
    jobs = [Job(params, seed=s) for s in range(3)] + [Job(None, seed=9, record=True)]
    with Rollouts(cfg, "gym:CartPole-v1", {"obs": "vector"}, wm.state_dict(), 1) as local:
        a = local.run(jobs)
    with Rollouts(cfg, "gym:CartPole-v1", {"obs": "vector"}, wm.state_dict(), 2) as pool:
        b = pool.run(jobs)
    assert [r["return"] for r in a] == [r["return"] for r in b]
    data = a[-1]["data"]
    T = a[-1]["length"]
    assert data["obs"].shape == (T + 1, 4) and data["action"].shape == (T, 2)
    assert data["terminal"][-1] == 1.0 and a[-1]["env_steps"] == T


def test_dream_env_contract():
    cfg, env, wm = _cartpole_models()
    start = torch.randn(5, wm.vae.z_dim)
    dream = DreamEnv(wm, start, env.action_space, temperature=1.15, max_steps=30)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(dream, skip_render_check=True)
    obs, _ = dream.reset(seed=1)
    assert obs["vector"].shape == (wm.feat_dim,)
    steps = 0
    while True:
        obs, reward, term, trunc, info = dream.step(dream.action_space.sample())
        steps += 1
        assert info["env_steps"] == 0 and isinstance(reward, float)
        if term or trunc:
            break
    assert steps <= 30
    sim = DreamSim(wm, start, None, 20, torch.Generator().manual_seed(0))
    params = torch.zeros(3, wm.controller.n_params)
    fitness, dream_steps = sim.evaluate(params, rollouts=2)
    assert fitness.shape == (3,) and 0 < dream_steps <= 3 * 2 * 20


def test_continuous_and_discrete_action_heads():
    cfg = get_recipe("worldmodels", "debug")
    for act, dim in ((spaces.Box(-1, 1, (3,)), 3), (spaces.Discrete(4), 4)):
        wm = WorldModels(cfg, spaces.Dict({"vector": spaces.Box(-1, 1, (5,))}), act)
        params = torch.randn(2, wm.controller.n_params)
        agent, env_action = wm.controller.act(params, torch.randn(2, wm.feat_dim))
        assert agent.shape == (2, dim)
        assert all(act.contains(a.astype(act.dtype)) for a in env_action)


def test_cli_run_writes_sacred_run_and_resumes(tmp_path, capsys):
    code = main(["run", "worldmodels", "--env", "gym:Pendulum-v1", "--preset", "debug",
                 "--results", str(tmp_path), "--quiet"])
    assert code == 0
    (run_dir,) = [p for p in (tmp_path / "runs").iterdir() if (p / "config.json").exists()]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "COMPLETED"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in ("train_return", "eval_return", "es_sigma", "vae_recon", "memory_mdn"):
        assert metrics[name]["values"], name
    steps = metrics["eval_return"]["steps"]
    # 3 random episodes + 2 generations x 4 candidates + 3 evals, 200 steps each
    assert steps[-1] == 200 * (3 + 8 + 3)
    ckpt = checkpoint.load(checkpoint.latest(run_dir / "checkpoints"))
    assert ckpt["counters"]["env_steps"] == steps[-1]
    # resume with a larger budget and more generations: continues from the checkpoint
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["config"]["pipeline"] == "worldmodels"
    res = run(resume=run_dir, steps=10_000, quiet=True)
    assert res.result["env_steps"] == steps[-1] + 200  # one more final evaluation

    # the trained agent loads like a Dreamer one: evaluate (and CLI eval) and act
    agent = load(run_dir)
    returns = agent.evaluate(2, seed=7)
    assert len(returns) == 2 and returns == agent.evaluate(2, seed=7)
    capsys.readouterr()
    video = tmp_path / "wm.mp4"
    assert main(["eval", str(run_dir), "--episodes", "2", "--video", str(video)]) == 0
    assert "2 episodes: mean return" in capsys.readouterr().out and video.stat().st_size > 0
    assert main(["eval", str(run_dir), "--policy", "sample"]) == 2
    assert "World Models controller is deterministic" in capsys.readouterr().err
    obs = {"vector": np.zeros((2, 3), np.float32), "is_first": np.array([True, False])}
    action, state = agent.act(obs)
    assert action.shape == (2, 1) and np.all(np.abs(action) <= 1)
    action2, _ = agent.act({**obs, "is_first": np.array([True, True])}, state)
    np.testing.assert_allclose(action2[0], action[0], rtol=1e-5)  # row 0 restarted


def test_dream_training_counts_no_env_steps(tmp_path):
    res = run("worldmodels", "gym:CartPole-v1", preset="debug", results=tmp_path, quiet=True,
              sets=["controller.train_in=dream", "train.iterations=2"])
    m = res.metrics
    assert m["dream_steps"]["values"][-1] > 0
    assert res.result["dream_steps"] == m["dream_steps"]["values"][-1]
    # env steps: random + controller collection + evaluations, no candidate episodes
    evals = len(m["eval_return"]["values"])
    collected = len(m["train_return"]["values"])
    assert collected == 3 + 2 and evals == 2 * 2 + 1
    collect_steps = sum(m["train_length"]["values"])
    assert collect_steps <= res.result["env_steps"] <= collect_steps + evals * 500


def test_bad_controller_setting_fails_clearly(tmp_path, capsys):
    code = main(["run", "worldmodels", "--env", "gym:Pendulum-v1", "--preset", "debug",
                 "--set", "controller.train_in=sky", "--results", str(tmp_path)])
    assert code == 2
    assert "train_in" in capsys.readouterr().err


def test_part_that_does_not_fit_the_env_fails_before_anything_is_written(tmp_path, capsys):
    from worldzoo.cli import main

    code = main(["run", "worldmodels", "--env", "gym:CartPole-v1", "--preset", "debug",
                 "--set", "vae=conv", "--results", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("worldzoo: error: ") and "vae=conv" in err, err
    assert not (tmp_path / "runs").exists()
