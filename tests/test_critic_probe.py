"""The critic probe sets a trained critic's values beside the discounted returns that followed."""

from __future__ import annotations

import numpy as np
import pytest

import worldzoo


def test_discounted_returns_with_and_without_a_tail():
    from worldzoo.benchmarks.critic_probe import discounted

    r = np.array([1.0, 0.0, 2.0])
    g = 0.5
    assert discounted(r, g, 0.0).tolist() == [1.0 + 0.25 * 2.0, 0.5 * 2.0, 2.0]
    # a tail of 8 after the last step: gamma^(T-t) * 8 more at every t
    assert discounted(r, g, 8.0).tolist() == pytest.approx([1.5 + 1.0, 1.0 + 2.0, 2.0 + 4.0])


def test_probe_prints_values_beside_returns(tmp_path, capsys):
    from worldzoo.benchmarks import critic_probe

    res = worldzoo.run("dreamerv3", "gym:CartPole-v1", preset="debug", steps=200, seed=0,
                       results=tmp_path, quiet=True)
    critic_probe.main([str(res.dir), "--episodes", "2"])
    out = capsys.readouterr().out
    assert "2 episodes (policy mode)" in out
    assert out.count("episode ") == 2 and "terminal" in out  # CartPole ends by falling
    last = out.strip().splitlines()[-1]
    assert last.startswith("all steps: V ") and "V/G" in last and "corr(V, G)" in last


def test_probe_refuses_world_models_runs(tmp_path):
    from worldzoo.benchmarks import critic_probe

    res = worldzoo.run("worldmodels", "gym:CartPole-v1", preset="debug", seed=0,
                       results=tmp_path, quiet=True)
    with pytest.raises(SystemExit, match="not a Dreamer run"):
        critic_probe.main([str(res.dir)])
