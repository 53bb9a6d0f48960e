"""The world-model probe compares imagined and simulated action effects from the same states."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import worldzoo

needs_dmc = pytest.mark.skipif(importlib.util.find_spec("dm_control") is None,
                               reason="dm_control not installed")


@needs_dmc
def test_probe_branches_and_trace(tmp_path, capsys):
    from worldzoo.benchmarks import wm_probe

    res = worldzoo.run("dreamerv3", "dmc:cartpole-balance", preset="debug", steps=300, seed=0,
                       results=tmp_path, quiet=True)
    out = wm_probe.probe(str(res.dir), episodes=1, horizon=3, every=4, length=8, samples=2,
                         policy="random", seed=0)
    assert sorted(out) == [0, 1, 2]
    for d in out.values():
        assert d["true"].shape == d["pred"].shape == (2, 5)  # 2 probed states, 5 obs dims
        assert d["true_r"].shape == d["pred_r"].shape == (2,)
        assert np.isfinite(d["pred"]).all()
    # the simulator: pushing right vs left changes the cart velocity (dim 3) at once
    assert (np.abs(out[0]["true"][:, 3]) > 0.1).all()
    wm_probe.main([str(res.dir), "--trace"])
    printed = capsys.readouterr().out
    assert "return over 500 steps" in printed
    assert "value=" in printed and "return-to-go=" in printed and "corr" in printed


def test_probe_refuses_non_dmc_runs(tmp_path):
    from worldzoo.benchmarks import wm_probe

    res = worldzoo.run("dreamerv3", "gym:CartPole-v1", preset="debug", steps=200, seed=0,
                       results=tmp_path, quiet=True)
    with pytest.raises(SystemExit, match="needs a dmc: run with vector observations"):
        wm_probe.probe(str(res.dir), 1, 2, 4, 8, 2, "random", 0)
