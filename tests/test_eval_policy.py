"""`train.eval_policy`: evaluation acts with the policy's mode (default) or samples from it, as
DreamerV3's code evaluates; the key leaves earlier runs' config ids as they were."""

from __future__ import annotations

import json

import numpy as np
import torch

from worldzoo import runs
from worldzoo.api import load
from worldzoo.cli import main
from worldzoo.config import apply_sets, config_id, get_recipe, resolve


def test_the_default_leaves_config_ids_of_earlier_runs_unchanged():
    cfg = resolve(get_recipe("dreamerv3", "small"))
    assert cfg["train"]["eval_policy"] == "mode"
    before = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "eval_policy"}}
    sample = resolve(apply_sets(get_recipe("dreamerv3", "small"), ["train.eval_policy=sample"]))
    assert config_id(cfg) == config_id(before) != config_id(sample)


def test_sampled_evaluation_runs_and_differs_from_the_mode(tmp_path, capsys):
    res = runs.run("dreamerv3", "gym:Pendulum-v1", preset="debug", steps=200, seed=0,
                   sets=["env.time_limit=50", "train.eval_policy=sample"], results=tmp_path,
                   quiet=True)
    metrics = json.loads((res.dir / "metrics.json").read_text())
    assert np.isfinite(metrics["eval_return"]["values"]).all()
    agent = load(res.dir)

    def evaluate(**kw):  # the same env episodes and torch stream (the latents are sampled)
        torch.manual_seed(0)
        return agent.evaluate(2, seed=3, **kw)

    mode = evaluate(policy="mode")
    assert mode == evaluate(policy="mode")
    assert evaluate() == evaluate(policy="sample") != mode  # the run's own policy: sample
    capsys.readouterr()
    assert main(["eval", str(res.dir), "--episodes", "1", "--policy", "mode"]) == 0
    assert "1 episodes: mean return" in capsys.readouterr().out
