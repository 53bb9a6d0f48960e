"""Is an ablation's difference more than seed noise? Two methods of the score tables on one
task at one budget: per-seed returns, the difference of their means with a 95% Welch
t-interval, and a two-sided permutation test of equal means (exact over every split of the
seeds when there are at most `EXACT_SPLITS`, else sampled), which assumes no normality.

With few seeds a large p-value means "no difference detected", not "no difference": the
interval says how large a difference these seeds could still hide, and with 2 + 4 seeds no
split can reach p < 0.05 at all (the smallest possible p is printed). A percentile bootstrap
is not used for the interval: over 2-4 seeds it is far too narrow.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from worldzoo.config import ConfigError
from worldzoo.plots import at_budget, ref_window, train_window

EXACT_SPLITS = 200_000
POOL = " + "  # "A + B" as one side pools the seeds of methods A and B (the same algorithm
              # under two names, e.g. runs of two lineages that compute the same updates)
MEASURES = ("eval", "train")


@dataclass
class Comparison:
    task: str
    budget: int
    measure: str
    methods: tuple[str, str]
    values: tuple[np.ndarray, np.ndarray]  # per-seed values, seeds in `seeds`' order
    seeds: tuple[list[int], list[int]]
    diff: float  # mean(second) - mean(first)
    ci: tuple[float, float]
    p: float
    exact: bool  # the permutation test enumerated every split
    p_min: float  # the smallest p any relabelling of these seed counts can give

    def markdown(self) -> str:
        what = (f"eval return, the last evaluation in ({0.9 * self.budget:,.0f}, "
                f"{self.budget:,}] env steps" if self.measure == "eval" else
                f"training-episode return over ({self.budget - ref_window(self.budget):,}, "
                f"{self.budget:,}] env steps")
        lines = [f"{self.task} at {self.budget:,} env steps: {what}", "",
                 "| method | seeds | per seed | mean ± std |", "|---|---|---|---|"]
        for m, v, s in zip(self.methods, self.values, self.seeds):
            per = ", ".join(f"{x:.0f} (s{k})" for x, k in zip(v, s))
            lines.append(f"| {m} | {len(v)} | {per} | {v.mean():.1f} ± {v.std(ddof=1):.1f} |")
        test = "exact" if self.exact else "sampled"
        lines += ["", f"difference (second - first): {self.diff:+.1f}, 95% Welch interval "
                  f"[{self.ci[0]:+.1f}, {self.ci[1]:+.1f}]; permutation p = {self.p:.3f} "
                  f"({test}, two-sided; the smallest possible with these seeds "
                  f"{self.p_min:.3f})", self.verdict()]
        return "\n".join(lines)

    def verdict(self) -> str:
        if self.p_min >= 0.05:
            return (f"verdict: too few seeds to test at the 5% level (no split of "
                    f"{len(self.values[0])} + {len(self.values[1])} seeds gives p < 0.05); "
                    "add seeds")
        if self.p < 0.05:
            return "verdict: the means differ beyond seed noise (p < 0.05)"
        return ("verdict: no difference detected at these seeds (p >= 0.05); differences "
                f"within [{self.ci[0]:+.0f}, {self.ci[1]:+.0f}] remain plausible")


def permutation_p(a: np.ndarray, b: np.ndarray, samples: int = 100_000,
                  seed: int = 0) -> tuple[float, bool]:
    """Two-sided p-value of |mean(b) - mean(a)| under random relabelling of the pooled seeds:
    exact when the splits number at most EXACT_SPLITS, else from `samples` random ones."""
    pooled, n = np.concatenate([a, b]), len(a)
    observed = abs(b.mean() - a.mean()) * (1 - 1e-12)  # ties count as extreme
    total = pooled.sum()
    if math.comb(len(pooled), n) <= EXACT_SPLITS:
        idx = np.array(list(itertools.combinations(range(len(pooled)), n)))
        exact = True
    else:
        rng = np.random.default_rng(seed)
        idx = np.argsort(rng.random((samples, len(pooled))), axis=1)[:, :n]
        exact = False
    sa = pooled[idx].sum(1)
    diffs = np.abs((total - sa) / len(b) - sa / n)
    return float((diffs >= observed).mean()), exact


def welch_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """95% Welch t-interval of mean(b) - mean(a) (a point where both have no spread)."""
    from scipy import stats

    diff = float(b.mean() - a.mean())
    if a.std() == 0 and b.std() == 0:
        return diff, diff
    ci = stats.ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    return float(ci.low), float(ci.high)


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided permutation p-value of n_a against n_b distinct values: the
    observed split and its mirror image (when the sizes are equal) are the only extremes."""
    splits = math.comb(n_a + n_b, n_a)
    return (2 if n_a == n_b else 1) / splits


def per_seed(df: pd.DataFrame, task: str, method: str, budget: int, measure: str) -> pd.DataFrame:
    """(seed, return) of one method on one task at `budget` by `measure`."""
    sub = df[(df["task"] == task) & (df["method"] == method)]
    if measure == "eval":
        vals = at_budget(sub, budget)
    else:
        vals = train_window(sub, budget, ref_window(budget))
    return vals.dropna(subset=["return"]).sort_values("seed")[["seed", "return"]]


def compare(df: pd.DataFrame, task: str, first: str, second: str, budget: int,
            measure: str = "eval") -> Comparison:
    """Compare `second` against `first` (module docstring), each a method or several joined by
    " + " (their seeds pooled); ConfigError names what is missing."""
    if measure not in MEASURES:
        raise ConfigError(f"unknown measure '{measure}'; known: {', '.join(MEASURES)}")
    if budget < 1:
        raise ConfigError(f"--at must be >= 1 env steps, got {budget}")
    tasks = sorted(df["task"].unique())
    if task not in tasks:
        raise ConfigError(f"no scores for task '{task}'; tasks in the tables: "
                          f"{', '.join(tasks) or 'none'}")
    known = sorted(df.loc[df["task"] == task, "method"].unique())
    values, seeds = [], []
    for arm in (first, second):
        vals, arm_seeds = [], []
        for m in arm.split(POOL):
            if m not in known:
                raise ConfigError(f"no scores for method '{m}' on {task}; methods there: "
                                  f"{', '.join(known)}")
            v = per_seed(df, task, m, budget, measure)
            vals.append(v["return"].to_numpy(dtype=float))
            arm_seeds += [int(s) for s in v["seed"]]
        if len(arm_seeds) < 2:
            raise ConfigError(
                f"'{arm}' has {len(arm_seeds)} seed(s) with a {measure} return at {budget:,} "
                f"env steps on {task}; a seed-noise comparison needs at least 2 per method "
                "(runs that stopped earlier have no value at this budget)")
        values.append(np.concatenate(vals))
        seeds.append(arm_seeds)
    a, b = values
    p, exact = permutation_p(a, b)
    return Comparison(task, budget, measure, (first, second), (a, b), (seeds[0], seeds[1]),
                      float(b.mean() - a.mean()), welch_interval(a, b), p, exact,
                      smallest_p(len(a), len(b)))
