"""The speed benchmark measures what it says: every phase of a real update, FLOPs, memory."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from worldzoo.benchmarks import speed


def test_train_step_reports_every_phase_in_order():
    import gymnasium as gym

    from worldzoo.agent import Agent
    from worldzoo.config import get_recipe

    cfg = get_recipe("dreamerv3", "debug")
    obs = gym.spaces.Dict({"vector": gym.spaces.Box(-1, 1, (3,), np.float32)})
    agent = Agent(cfg, obs, gym.spaces.Discrete(2))
    b, t = 2, 5
    batch = {"vector": torch.randn(b, t, 3), "action": torch.eye(2)[torch.randint(0, 2, (b, t))],
             "reward": torch.randn(b, t), "is_first": torch.zeros(b, t, dtype=torch.bool),
             "is_terminal": torch.zeros(b, t, dtype=torch.bool)}
    seen = []

    @contextlib.contextmanager
    def phase(name):
        seen.append(name)
        yield

    metrics = agent.train_step(batch, phase)
    assert seen == list(speed.PHASES)
    assert all(torch.isfinite(v).all() for v in metrics.values())


def test_measure_debug_preset():
    row = speed.measure("dreamerv3", "debug", "vector", "gym:CartPole-v1", [], updates=3,
                        max_seconds=5.0, act_steps=20, device="cpu")
    assert row["updates"] == 3 and row["params_wm_M"] > 0
    phases = sum(row[f"{k}_s"] for k in speed.PHASES)
    assert 0 < phases <= row["s_per_update"] * 1.5
    assert row["gflop_per_update"] > 0 and 0 < row["pct_peak"] < 100
    assert row["peak_mem_mb"] > 0 and row["loop_env_steps_per_s"] > 0
    line = speed.to_markdown([row]).splitlines()[-1]
    assert line.startswith("| dreamerv3 | debug | vector |")


def test_fingerprint_is_deterministic_and_tells_precisions_apart():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "fingerprint.py"
    spec = importlib.util.spec_from_file_location("fingerprint", path)
    fp = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fp)
    first, again = fp.fingerprints([]), fp.fingerprints([])
    assert first == again and len(first) == 9 and len({x.split()[-1] for x in first}) == 9
    assert fp.fingerprints(["train.precision=bfloat16"]) != first


def test_ab_alternates_two_checkouts(capsys):
    """benchmarks/ab.py runs one process per checkout in lock-step and reports both (here the
    same checkout twice, given as a directory: no git worktree needed)."""
    from pathlib import Path

    from worldzoo.benchmarks import ab

    root = str(Path(__file__).resolve().parents[1])
    ab.main(["--base", root, "--head", root, "--preset", "debug", "--env", "gym:CartPole-v1",
             "--updates", "2", "--warmup", "1", "--threads", "1"])
    out = capsys.readouterr().out
    rows = {line.split("|")[1].strip(): line for line in out.splitlines() if line.startswith("| ")}
    assert {"base", "head", "head / base", "paired ratio: median [p25, p75]"} <= rows.keys()
    assert "world_model s" in out and "total s" in out
    assert "first update s (includes compilation): " in out and "(compiled" not in out
    with pytest.raises(SystemExit) as err:
        ab.main(["--base", root, "--updates", "0"])
    assert err.value.code == 2
    assert "--updates must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_ab_compiled_head_runs(capsys):
    """`--compile-head batched` compiles the head's nets outside the RSSM (inductor needs a C++
    compiler: slow, and not in CI) and still reports both sides and the first-update times."""
    from pathlib import Path

    from worldzoo.benchmarks import ab

    root = str(Path(__file__).resolve().parents[1])
    ab.main(["--base", root, "--head", root, "--preset", "debug", "--env", "gym:CartPole-v1",
             "--updates", "1", "--warmup", "1", "--threads", "1", "--compile-head", "batched"])
    out = capsys.readouterr().out
    assert "(compiled: batched)" in out and "first update s (includes compilation)" in out
    assert "| head / base |" in out


def test_op_times_splits_products_from_other_ops(capsys):
    """benchmarks/op_times.py times every op of real updates (forward and backward) and says
    what share of the peak the products alone would allow."""
    from worldzoo.benchmarks import op_times

    timer = op_times.OpTimer()
    x = torch.randn(8, 4, requires_grad=True)
    with timer:
        (torch.cat([x, x]) @ torch.randn(4, 3)).relu().sum().backward()
    ops = {op for op, _ in timer.stats}
    assert ("aten.cat.default", ("2x(8, 4)",)) in timer.stats  # a list input: length x shape
    assert "aten.mm.default" in ops and any("threshold_backward" in op for op in ops)
    assert op_times.is_product("aten.mm.default") and op_times.is_product("aten.addmm.default")
    assert op_times.is_product("aten.convolution_backward.default")  # FLOPs count convs
    assert not op_times.is_product("aten.relu.default")
    op_times.main(["--preset", "debug", "--env", "gym:CartPole-v1", "--updates", "1", "--top",
                   "3", "--threads", "1", "--peak-seconds", "0.1"])
    out = capsys.readouterr().out
    assert "products" in out and "other ops" in out and out.count("\n| ") == 4
    assert "with every other op free:" in out
    op_times.main(["--preset", "debug", "--env", "gym:CartPole-v1", "--updates", "1", "--top",
                   "3", "--threads", "1", "--peak-seconds", "0.1", "--phase", "critic"])
    out = capsys.readouterr().out
    assert "plain critic phase" in out and "FLOPs per critic phase" in out
    with pytest.raises(SystemExit) as err:
        op_times.main(["--updates", "0"])
    assert err.value.code == 2
