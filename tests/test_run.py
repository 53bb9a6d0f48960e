"""End to end: the real `run` API and CLI with the debug preset, Sacred runs, resume."""

import json
import subprocess
import sys

import torch

import worldzoo
from worldzoo import checkpoint


def _params(run_dir):
    state = checkpoint.load(checkpoint.latest(run_dir / "checkpoints"))
    return state["agent"], state["counters"]


def test_run_writes_a_sacred_run_with_real_metrics(tmp_path):
    res = worldzoo.run("dreamerv1", "gym:Pendulum-v1", preset="debug", steps=400, seed=1,
                       results=tmp_path, quiet=True)
    assert res.dir.parent == tmp_path / "runs"
    config = json.loads((res.dir / "config.json").read_text())
    assert config["config"]["rssm"]["name"] == "gaussian" and config["env_id"] == "gym:Pendulum-v1"
    assert json.loads((res.dir / "run.json").read_text())["status"] == "COMPLETED"
    m = res.metrics
    for name in ("train_return", "eval_return", "loss_kl", "loss_reward", "loss_decoder",
                 "loss_actor", "loss_critic", "updates", "env_steps_per_s", "updates_per_s",
                 "train_ratio"):
        assert name in m, name
    assert m["train_return"]["steps"] == [200, 400]
    assert all(-2000 < r < 0 for r in m["train_return"]["values"])  # Pendulum's range
    assert m["updates"]["values"][-1] > 100
    assert (res.dir / "cout.txt").exists()
    assert res.result["env_steps"] == 400


def test_resume_gives_bit_identical_parameters(tmp_path):
    kw = dict(preset="debug", seed=3, quiet=True)
    full = worldzoo.run("dreamerv1", "gym:Pendulum-v1", steps=600, results=tmp_path / "a", **kw)
    part = worldzoo.run("dreamerv1", "gym:Pendulum-v1", steps=400, results=tmp_path / "b", **kw)
    worldzoo.run(resume=part.dir, steps=600, quiet=True)
    a, ca = _params(full.dir)
    b, cb = _params(part.dir)
    assert ca["env_steps"] == cb["env_steps"] == 600
    assert ca["updates"] == cb["updates"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    steps = part.metrics["train_return"]["steps"]
    assert steps == [200, 400, 600]  # no gap, no duplicate
    updates = part.metrics["updates"]["steps"]
    assert len(updates) == len(set(updates))


def test_loaded_agent_acts_and_evaluates(tmp_path):
    res = worldzoo.run("dreamerv1", "gym:CartPole-v1", preset="debug", steps=300, seed=0,
                       results=tmp_path, quiet=True)
    agent = worldzoo.load(res.dir)
    returns = agent.evaluate(episodes=2)
    assert len(returns) == 2 and all(r >= 1 for r in returns)  # CartPole: +1 per step
    obs = {"vector": torch.zeros(1, 4).numpy(), "is_first": torch.ones(1).numpy()}
    action, state = agent.act(obs)
    assert action.shape == (1,) and action[0] in (0, 1)


def test_cli_run_dmc_pixels_and_eval_video(tmp_path):
    cmd = [sys.executable, "-m", "worldzoo", "run", "dreamerv1", "--env", "dmc:cartpole-balance",
           "--preset", "debug", "--steps", "120", "--set", "env.obs=pixels",
           "--set", "env.size=32", "--set", "train.eval_video=true",
           "--set", "env.time_limit=60", "--set", "train.prefill=60",
           "--results", str(tmp_path), "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir = next((tmp_path / "runs").glob("*cartpole*"))
    videos = sorted(p.name for p in (run_dir / "videos").iterdir())
    assert any(v.startswith("openloop_") and v.endswith(".mp4") for v in videos), videos
    assert any(v.startswith("eval_") for v in videos)
    video = tmp_path / "eval.mp4"
    out = subprocess.run([sys.executable, "-m", "worldzoo", "eval", str(run_dir), "--episodes",
                          "1", "--video", str(video)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "1 episodes: mean return" in out.stdout and video.stat().st_size > 0
