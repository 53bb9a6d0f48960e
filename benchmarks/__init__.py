"""Benchmark suites: tasks x methods x seeds x env-step budget x preset x eval schedule.

A suite is plain data (`Suite`); `benchmarks/named_suites.py` defines the named ones. A method is a
recipe name with optional overrides in the run-label syntax, e.g. `dreamerv3[rssm=gaussian]`.
Installed as `worldzoo.benchmarks`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

from worldzoo.config import ConfigError, label


@dataclass(frozen=True)
class Suite:
    """One benchmark: every method runs on every task with every seed for `steps` env steps."""

    name: str
    doc: str
    tasks: tuple[str, ...]           # env ids, e.g. dmc:walker-walk, gym:Pendulum-v1
    methods: tuple[str, ...]         # recipe[overrides], e.g. dreamerv3, dreamerv3[rssm=gaussian]
    steps: int                       # env-step budget per run (action repeat counted)
    seeds: int = 3                   # seeds 0..seeds-1
    preset: str | None = None        # recipe size preset (debug, small, paper)
    eval_every: int = 10_000         # env steps between evaluations
    eval_episodes: int = 10          # episodes per evaluation
    sets: tuple[str, ...] = ()       # overrides for every run (env options), not in the label
    budgets: tuple[int, ...] = ()    # columns of the return-at-budget table (default: steps)
    cpus: float = 1.0                # CPU request of one run (local pool size, Ray task)
    gpus: float = 0.0                # GPU request of one run on Ray (0: CPU only)
    reference: tuple[str, ...] = ()  # files of ../shared/reference-scores overlaid in plots

    def run_sets(self) -> list[str]:
        """The overrides every run of the suite gets after its method's own."""
        return [f"train.eval_every={self.eval_every}",
                f"train.eval_episodes={self.eval_episodes}", *self.sets]

    def table_budgets(self) -> tuple[int, ...]:
        return self.budgets or (self.steps,)


@dataclass(frozen=True)
class Method:
    """A recipe plus its overrides; `label` is how runs, scores and plots name it."""

    recipe: str
    sets: tuple[str, ...] = field(default=())

    @property
    def label(self) -> str:
        return label(self.recipe, list(self.sets))


def split_top(text: str) -> list[str]:
    """Split on commas that are not inside brackets (`a=1,b=[1,2]` -> two items)."""
    items, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch in "[(") - (ch in "])")
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    return [i.strip() for i in [*items, cur] if i.strip()]


def parse_method(spec: str) -> Method:
    """`dreamerv3[rssm=gaussian,kl.free=1.0]` -> Method('dreamerv3', ('rssm=gaussian', ...))."""
    m = re.fullmatch(r"\s*([A-Za-z_][\w\-]*)\s*(?:\[(.*)\])?\s*", spec)
    if not m:
        raise ConfigError(f"malformed method '{spec}'; write RECIPE or RECIPE[KEY=VALUE,...], "
                          "e.g. dreamerv3[rssm=gaussian]")
    return Method(m.group(1), tuple(split_top(m.group(2) or "")))


def suites() -> dict[str, Suite]:
    from worldzoo.benchmarks.named_suites import SUITES

    return {s.name: s for s in SUITES}


def get_suite(name: str, **changes) -> Suite:
    """A named suite, with fields replaced by `changes` (e.g. seeds=1, methods=(...))."""
    known = suites()
    if name not in known:
        raise ConfigError(f"unknown suite '{name}'; known suites: {', '.join(known)}")
    changes = {k: v for k, v in changes.items() if v is not None}
    return replace(known[name], **changes) if changes else known[name]


# -- normalisation for aggregate plots ---------------------------------------------------------
# (low, high): low = uniform-random policy, high = the task's maximum return. Measured here:
# gym Pendulum-v1 random -1208 (100 episodes, seeds 0-99), CartPole-v1 random 23.7 (same).
# DMC tasks give rewards in [0, 1] per step over 1000 steps, so [0, 1000].
NORMALISATION: dict[str, tuple[float, float]] = {
    "gym:Pendulum-v1": (-1208.0, 0.0),
    "gym:CartPole-v1": (23.7, 500.0),
}


def normaliser(task: str) -> tuple[float, float] | None:
    """(low, high) used to map a task's return to [0, 1]; None when unknown."""
    if task in NORMALISATION:
        return NORMALISATION[task]
    if task.startswith("dmc:"):
        return (0.0, 1000.0)
    return None


def reference_task(task: str) -> str:
    """Our env id -> the task name of the reference-score files (`dmc:ball_in_cup-catch` ->
    `cup_catch`, `dmc:walker-walk` -> `walker_walk`)."""
    name = task.split(":", 1)[-1].replace("-", "_")
    return "cup_catch" if name == "ball_in_cup_catch" else name
