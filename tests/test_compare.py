"""worldzoo.compare and `worldzoo compare`: per-seed values at a budget, an exact permutation
test whose p-values are known by hand, Welch intervals, and one-line errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from worldzoo import compare
from worldzoo.cli import main
from worldzoo.config import ConfigError

TASK = "dmc:cartpole-balance"


def _table(values: dict[str, list[float]], steps=(45_000, 50_000, 55_000)) -> pd.DataFrame:
    """Eval rows at `steps` (the value at 50k is the given one, the others far off) and one
    training episode per seed ending at 49k, worth the value minus 10."""
    rows = []
    for method, vals in values.items():
        for seed, v in enumerate(vals):
            for step in steps:
                ret = v if step == 50_000 else -1e6
                rows.append(dict(suite="adhoc", task=TASK, method=method, seed=seed,
                                 env_step=step, kind="eval", **{"return": ret}))
            rows.append(dict(suite="adhoc", task=TASK, method=method, seed=seed,
                             env_step=49_000, kind="train", **{"return": v - 10}))
    return pd.DataFrame(rows)


def test_exact_permutation_p_of_fully_separated_seeds():
    # 3 + 3 distinct values, every b above every a: 2 of the 20 splits are as extreme
    p, exact = compare.permutation_p(np.array([1.0, 2, 3]), np.array([4.0, 5, 6]))
    assert exact and p == pytest.approx(2 / 20)
    assert compare.smallest_p(3, 3) == pytest.approx(2 / 20)
    assert compare.smallest_p(4, 2) == pytest.approx(1 / 15)


def test_permutation_p_of_identical_groups_is_one():
    p, _ = compare.permutation_p(np.array([5.0, 7, 9]), np.array([9.0, 7, 5]))
    assert p == 1.0


def test_sampled_permutation_p_agrees_with_the_exact_one(monkeypatch):
    rng = np.random.default_rng(0)
    a, b = rng.normal(0, 1, 7), rng.normal(1, 1, 7)
    exact, _ = compare.permutation_p(a, b)
    monkeypatch.setattr(compare, "EXACT_SPLITS", 10)
    sampled, was_exact = compare.permutation_p(a, b, samples=50_000)
    assert not was_exact and sampled == pytest.approx(exact, abs=0.01)


def test_welch_interval_is_the_t_interval():
    a, b = np.array([1.0, 2, 3, 4]), np.array([3.0, 5, 7])
    lo, hi = compare.welch_interval(a, b)
    va, vb = a.var(ddof=1) / 4, b.var(ddof=1) / 3
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 2)
    from scipy import stats
    half = stats.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert (lo, hi) == pytest.approx((2.5 - half, 2.5 + half))
    assert compare.welch_interval(np.array([2.0, 2]), np.array([5.0, 5])) == (3.0, 3.0)


def test_compare_reads_the_budget_value_per_seed():
    df = _table({"base": [100, 110, 120, 130], "new": [200, 210, 220, 230]})
    c = compare.compare(df, TASK, "base", "new", 50_000)
    assert c.values[0].tolist() == [100, 110, 120, 130] and c.seeds[1] == [0, 1, 2, 3]
    assert c.diff == pytest.approx(100) and c.p == pytest.approx(2 / 70)
    assert "differ beyond seed noise" in c.markdown()
    t = compare.compare(df, TASK, "base", "new", 50_000, measure="train")
    assert t.values[0].tolist() == [90, 100, 110, 120]


def test_a_side_can_pool_two_methods_seeds():
    df = _table({"base": [100, 110], "also": [120, 130], "new": [200, 210, 220, 230]})
    pooled = compare.compare(df, TASK, "base + also", "new", 50_000)
    alone = compare.compare(_table({"base": [100, 110, 120, 130], "new": [200, 210, 220, 230]}),
                            TASK, "base", "new", 50_000)
    assert pooled.values[0].tolist() == [100, 110, 120, 130] and pooled.seeds[0] == [0, 1, 0, 1]
    assert pooled.p == alone.p and pooled.diff == alone.diff
    assert "| base + also | 4 |" in pooled.markdown()
    with pytest.raises(ConfigError, match="no scores for method 'nope'"):
        compare.compare(df, TASK, "base + nope", "new", 50_000)


def test_too_few_seeds_to_reach_five_percent_is_said():
    df = _table({"base": [100, 110, 120, 130], "new": [200, 210]})
    c = compare.compare(df, TASK, "base", "new", 50_000)
    assert c.p == pytest.approx(1 / 15) and "too few seeds" in c.verdict()
    c = compare.compare(_table({"a": [1, 9, 5, 4], "b": [2, 8, 5, 3]}), TASK, "a", "b",
                        50_000)
    assert "no difference detected" in c.verdict()


@pytest.mark.parametrize("kw, message", [
    (dict(task="dmc:walker-walk"), "no scores for task 'dmc:walker-walk'; tasks in the tables"),
    (dict(second="nope"), "no scores for method 'nope' on dmc:cartpole-balance; methods"),
    (dict(budget=30_000), "'base' has 0 seed"),
    (dict(measure="median"), "unknown measure 'median'"),
])
def test_bad_comparisons_say_what_is_missing(kw, message):
    df = _table({"base": [1, 2], "new": [3, 4]})
    args = dict(task=TASK, first="base", second="new", budget=50_000) | kw
    with pytest.raises(ConfigError, match=message):
        compare.compare(df, **args)


def test_cli_compare_prints_the_table_and_fails_cleanly(tmp_path, capsys):
    (tmp_path / "scores").mkdir()
    df = _table({"base": [100, 110, 120], "new": [105, 100, 125]})
    df.assign(preset="small", budget=50_000, run="r", config="").to_csv(
        tmp_path / "scores" / "adhoc.csv", index=False)
    argv = ["compare", "base", "new", "--task", TASK, "--at", "50000",
            "--results", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| base | 3 | 100 (s0), 110 (s1), 120 (s2) |" in out and "permutation p" in out
    assert main([*argv[:-1], str(tmp_path / "none")]) == 2
    assert "no score tables under" in capsys.readouterr().err
    assert main(argv[:5] + ["--at", "1000", *argv[7:]]) == 2
    assert "a seed-noise comparison needs at least 2" in capsys.readouterr().err
