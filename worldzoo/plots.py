"""Plots and tables regenerated from the score tables alone (`results/scores/*.csv`):

- `<suite>_curves.png/.csv`: per task, eval return against env steps, mean and 95% bootstrap CI
  over seeds; the papers' curves dashed when a reference directory is given;
- `<suite>_aggregate.png/.csv`: normalised return over tasks, mean and interquartile mean (IQM)
  with stratified-bootstrap 95% CIs;
- `<suite>_table.md`: eval return and training-episode return over the last 10k env steps
  (the reference scores' protocol) at fixed budgets (mean ± std over seeds);
- `<suite>_train_curves.png/.csv`: training-episode return per 10k env steps, the measure the
  papers' curves are, against them.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from worldzoo import benchmarks, scores  # noqa: E402
from worldzoo.config import ConfigError  # noqa: E402

BASE = ("dreamerv1", "dreamerv2", "dreamerv3", "worldmodels")  # fixed colours, in this order
REFERENCE_METHODS = ("dreamerv1", "dreamerv2", "dreamerv3")
N_BOOT, CI = 1000, 95.0
REF_WINDOW = 10_000  # env steps: the reference scores' per-step window


# -- colours and axes --------------------------------------------------------------------------
def colours(methods) -> dict[str, tuple]:
    """One colour per method, the same in every plot: the four recipes keep tab10's first
    four colours; other labels (ablations) take the next ones in sorted order."""
    pal = sns.color_palette("tab10")
    out = {m: pal[i] for i, m in enumerate(BASE)}
    spare = [pal[i] for i in (4, 5, 6, 8, 9)] + sns.color_palette("husl", 12)
    for i, m in enumerate(sorted(set(methods) - set(BASE))):
        out[m] = spare[i % len(spare)]
    return out


def _steps_fmt(x, _pos=None) -> str:
    if abs(x) >= 1e6:
        return f"{x / 1e6:g}M"
    return f"{x / 1e3:g}k" if abs(x) >= 1e3 else f"{x:g}"


# -- statistics --------------------------------------------------------------------------------
def bootstrap_ci(values, stat=np.mean, n_boot: int = N_BOOT, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of `stat` over `values` (a single value gives a zero-width CI)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float(v.mean())
    rng = np.random.default_rng(seed)
    boots = stat(v[rng.integers(0, len(v), (n_boot, len(v)))], axis=1)
    lo, hi = np.percentile(boots, [(100 - CI) / 2, 100 - (100 - CI) / 2])
    return float(lo), float(hi)


def iqm(x, axis=-1):
    """Interquartile mean: the mean of the middle 50% (scipy's 25% trimmed mean)."""
    from scipy.stats import trim_mean

    return trim_mean(x, 0.25, axis=axis)


def _aligned(df: pd.DataFrame) -> pd.DataFrame:
    """Eval steps of one (suite, task, method) may differ across seeds (episode boundaries);
    then snap each to the right edge of bins one median eval interval wide."""
    per_seed = df.groupby("seed")["env_step"].apply(lambda s: tuple(sorted(s)))
    if per_seed.nunique() <= 1:
        return df
    diffs = np.concatenate([np.diff(s) for s in per_seed if len(s) > 1] or [[1]])
    width = max(1, int(np.median(diffs)))
    df = df.assign(env_step=np.ceil(df["env_step"] / width).astype(int) * width)
    return df.groupby(["suite", "task", "method", "seed", "env_step"], as_index=False)[
        "return"].mean()


def curve_table(df: pd.DataFrame, kind: str = "eval") -> pd.DataFrame:
    """(suite, task, method, env_step) -> mean return over seeds, 95% bootstrap CI, seeds."""
    rows = []
    df = df[df["kind"] == kind]
    for (suite, task, method), g in df.groupby(["suite", "task", "method"], sort=True):
        g = _aligned(g)
        for step, s in g.groupby("env_step"):
            lo, hi = bootstrap_ci(s["return"])
            rows.append({"suite": suite, "task": task, "method": method, "env_step": step,
                         "mean": s["return"].mean(), "ci_lo": lo, "ci_hi": hi,
                         "seeds": s["seed"].nunique()})
    return pd.DataFrame(rows, columns=["suite", "task", "method", "env_step", "mean", "ci_lo",
                                       "ci_hi", "seeds"])


def ref_window(budget: int) -> int:
    """The width of the training-return window: the reference scores' 10k env steps, or a
    tenth of the budget for budgets under 100k (smoke-size suites)."""
    return REF_WINDOW if budget >= 10 * REF_WINDOW else max(1, int(budget) // 10)


def train_curve_table(df: pd.DataFrame, width: int = REF_WINDOW) -> pd.DataFrame:
    """`curve_table` rows of training-episode returns as the reference scores were logged: per
    seed the mean of the episodes that ended in each (k - width, k] bin, then mean and 95%
    bootstrap CI over seeds."""
    tr = df[df["kind"] == "train"]
    tr = tr.assign(env_step=np.ceil(tr["env_step"] / width).astype(int) * width)
    per_seed = tr.groupby(["suite", "task", "method", "seed", "env_step"], as_index=False)[
        "return"].mean()
    return curve_table(per_seed.assign(kind="train"), kind="train")


def normalised_runs(df: pd.DataFrame, budget: int, points: int = 20) -> pd.DataFrame:
    """Each run's eval curve normalised by its task's (random, max) return and interpolated
    onto the suite's eval steps (or `points` steps up to `budget` when there are many more);
    no extrapolation."""
    steps = np.unique(df.loc[df["kind"] == "eval", "env_step"])
    grid = (steps if len(steps) <= 2 * points else
            np.linspace(budget / points, budget, points).round().astype(int))
    rows = []
    for (task, method, seed), g in df[df["kind"] == "eval"].groupby(["task", "method", "seed"]):
        norm = benchmarks.normaliser(task)
        if norm is None:
            continue
        g = g.sort_values("env_step")
        x, y = g["env_step"].to_numpy(), (g["return"].to_numpy() - norm[0]) / (norm[1] - norm[0])
        inside = (grid >= x.min()) & (grid <= x.max())
        for step, val in zip(grid[inside], np.interp(grid[inside], x, y)):
            rows.append({"task": task, "method": method, "seed": seed, "env_step": int(step),
                         "score": float(val)})
    return pd.DataFrame(rows, columns=["task", "method", "seed", "env_step", "score"])


def aggregate_table(runs: pd.DataFrame, n_boot: int = N_BOOT, seed: int = 0) -> pd.DataFrame:
    """Per (method, env_step): mean and IQM of normalised return over all (task, seed) runs,
    with 95% CIs from a bootstrap that resamples seeds within each task."""
    rows, rng = [], np.random.default_rng(seed)
    for (method, step), g in runs.groupby(["method", "env_step"]):
        groups = [t["score"].to_numpy() for _, t in g.groupby("task")]
        boots = np.concatenate([t[rng.integers(0, len(t), (n_boot, len(t)))] for t in groups],
                               axis=1)
        allv = np.concatenate(groups)
        row = {"method": method, "env_step": step, "runs": len(allv), "tasks": len(groups)}
        for name, fn in (("mean", np.mean), ("iqm", iqm)):
            lo, hi = np.percentile(fn(boots, axis=1), [(100 - CI) / 2, 100 - (100 - CI) / 2])
            row.update({name: float(fn(allv)), f"{name}_lo": float(lo), f"{name}_hi": float(hi)})
        rows.append(row)
    return pd.DataFrame(rows)


def at_budget(df: pd.DataFrame, budget: int, window: float = 0.1) -> pd.DataFrame:
    """Per (task, method, seed): the last eval return at or before `budget` env steps, and not
    older than `window` x budget."""
    ev = df[(df["kind"] == "eval") & (df["env_step"] <= budget)
            & (df["env_step"] > budget * (1 - window))]
    last = ev.sort_values("env_step").groupby(["task", "method", "seed"]).tail(1)
    return last[["task", "method", "seed", "env_step", "return"]].reset_index(drop=True)


# -- reference curves --------------------------------------------------------------------------
def load_reference(directory: str | Path, files: tuple[str, ...]) -> pd.DataFrame:
    """method, task, step, mean, std rows of the Dreamer curves in `files` under `directory`."""
    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"--reference {d}: no such directory; point it at a folder in the "
                          "format of ../shared/reference-scores/README.md")
    frames = []
    for f in files:
        if (d / f).exists():
            ref = pd.read_csv(d / f)
            frames.append(ref[ref["method"].isin(REFERENCE_METHODS)][
                ["method", "task", "step", "mean", "std"]].assign(file=f))
    if not frames:
        return pd.DataFrame(columns=["method", "task", "step", "mean", "std", "file"])
    return pd.concat(frames, ignore_index=True)


# -- figures -----------------------------------------------------------------------------------
def _legend(fig, axes, n_rows_px: float) -> None:
    """One legend for the figure, below the axes, so it never covers data."""
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles and not lab.startswith("_"):
                handles[lab] = h
                labels.append(lab)
        if ax.get_legend():
            ax.get_legend().remove()
    ncol = min(4, max(1, len(labels)))
    fig.legend([handles[k] for k in labels], labels, loc="lower center", ncol=ncol,
               frameon=False, bbox_to_anchor=(0.5, 0.0))
    rows = math.ceil(len(labels) / ncol)
    fig.tight_layout(rect=(0, min(0.4, rows * 0.32 / n_rows_px), 1, 1))


def curves_figure(table: pd.DataFrame, suite: str, colour: dict, ref: pd.DataFrame | None = None,
                  what: str = "evaluation return"):
    """Per-task sample-efficiency curves of one suite from `curve_table` rows; `what` names the
    measure (title and y axis)."""
    t = table[table["suite"] == suite]
    tasks = sorted(t["task"].unique())
    ncols = min(3, len(tasks))
    nrows = math.ceil(len(tasks) / ncols)
    height = 3.0 * nrows + 1.2
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(6.0, 4.6 * ncols), height),
                             squeeze=False)
    for ax, task in zip(axes.flat, tasks):
        rows = t[t["task"] == task]
        xmax = rows["env_step"].max()
        for method, g in rows.groupby("method"):
            g = g.sort_values("env_step")
            sns.lineplot(x=g["env_step"].to_numpy(), y=g["mean"].to_numpy(), ax=ax,
                         color=colour[method], label=method, marker="o" if len(g) < 15 else None,
                         markersize=4, errorbar=None)
            ax.fill_between(g["env_step"], g["ci_lo"], g["ci_hi"], color=colour[method],
                            alpha=0.2, linewidth=0)
        if ref is not None and len(ref):
            r = ref[ref["task"] == benchmarks.reference_task(task)]
            for method, g in r.groupby("method"):
                g = g[g["step"] <= xmax * 1.05].sort_values("step")
                if len(g):
                    ax.plot(g["step"], g["mean"], ls="--", lw=1.3, label=f"{method} (paper)",
                            color=colour.get(method, "0.5"))
        ax.set_title(task, fontsize=10)
        ax.set_xlabel("env steps (action repeat counted)")
        ax.set_ylabel(f"{what.split(',')[0]} (episode sum)")
        ax.xaxis.set_major_formatter(FuncFormatter(_steps_fmt))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(tasks):]:
        ax.set_visible(False)
    seeds = int(t["seeds"].max()) if len(t) else 0
    fig.suptitle(f"{suite}: {what}\nmean and 95% bootstrap CI over {seeds} seed(s)"
                 + ("; dashed: the papers' curves (mean over their seeds)"
                    if ref is not None and len(ref) else ""), fontsize=11)
    _legend(fig, axes.flat[:len(tasks)], height)
    return fig


def aggregate_figure(agg: pd.DataFrame, suite: str, colour: dict, tasks: list[str],
                     skipped: list[str]):
    """Mean and IQM of normalised return over tasks, against env steps."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, stat, name in zip(axes, ("mean", "iqm"), ("mean", "interquartile mean (IQM)")):
        for method, g in agg.groupby("method"):
            g = g.sort_values("env_step")
            sns.lineplot(x=g["env_step"].to_numpy(), y=g[stat].to_numpy(), ax=ax,
                         color=colour[method], label=method, errorbar=None,
                         marker="o" if len(g) < 15 else None, markersize=4)
            ax.fill_between(g["env_step"], g[f"{stat}_lo"], g[f"{stat}_hi"],
                            color=colour[method], alpha=0.2, linewidth=0)
        ax.set_title(f"{name} over {len(tasks)} task(s)", fontsize=10)
        ax.set_xlabel("env steps (action repeat counted)")
        ax.set_ylabel("normalised return (0 = random, 1 = max)")
        ax.xaxis.set_major_formatter(FuncFormatter(_steps_fmt))
        ax.grid(alpha=0.3)
    note = f"; not normalised: {', '.join(skipped)}" if skipped else ""
    fig.suptitle(f"{suite}: aggregate, 95% stratified-bootstrap CI{note}", fontsize=11)
    _legend(fig, axes, 4.2)
    return fig


def train_window(df: pd.DataFrame, budget: int, width: int) -> pd.DataFrame:
    """Per (task, method, seed): the mean return of the training episodes that ended in
    (budget - width, budget]: the reference scores' per-seed value at a step (their returns
    are training-episode returns, ../shared/reference-scores/README.md, "window")."""
    tr = df[(df["kind"] == "train") & (df["env_step"] <= budget)
            & (df["env_step"] > budget - width)]
    return tr.groupby(["task", "method", "seed"], as_index=False)["return"].mean()


def _budget_rows(df: pd.DataFrame, vals: pd.DataFrame, budget: int, methods: list[str],
                 refs: list[str], ref: pd.DataFrame | None) -> list[str]:
    """One Markdown table: per task, `mean ± std (seeds)` of `vals` per method, then the
    papers' values at `budget`."""
    cols = methods + [f"{m} (paper)" for m in refs]
    lines = ["| task | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for task in sorted(df["task"].unique()):
        cells = []
        for m in methods:
            v = vals[(vals["task"] == task) & (vals["method"] == m)]["return"]
            cells.append("–" if v.empty else f"{v.mean():.1f} ± {v.std(ddof=0):.1f} ({len(v)})")
        for m in refs:
            r = ref[(ref["method"] == m) & (ref["task"] == benchmarks.reference_task(task))
                    & (ref["step"] == budget)]
            cells.append("–" if r.empty else f"{r['mean'].iloc[0]:.1f} ± "
                         f"{r['std'].iloc[0]:.1f}")
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
    return lines


def budget_table(df: pd.DataFrame, suite: str, budgets: tuple[int, ...],
                 ref: pd.DataFrame | None = None) -> str:
    """Markdown: per budget, the eval return and the training-episode return over the last
    10k env steps (the reference scores' protocol), `mean ± std (seeds)` per task and method."""
    width = ref_window(max(budgets))
    window = _steps_fmt(width)
    lines = [f"## {suite}: returns at fixed budgets", "",
             "Mean ± std over seeds (number of seeds). *eval*: the last evaluation at or before "
             "the budget (within 10% of it). *train*: per seed, the mean return of the training "
             f"episodes that ended in the last {window} env steps up to the budget, which is "
             "how the papers' curves (the `(paper)` columns, std over their seeds) were logged."]
    methods = sorted(df["method"].unique())
    refs = sorted(ref["method"].unique()) if ref is not None and len(ref) else []
    for budget in budgets:
        lines += ["", f"### {_steps_fmt(budget)} env steps: eval", ""]
        lines += _budget_rows(df, at_budget(df, budget), budget, methods, refs, ref)
        train = train_window(df, budget, width)
        if len(train):
            lines += ["", f"### {_steps_fmt(budget)} env steps: train (last {window})", ""]
            lines += _budget_rows(df, train, budget, methods, refs, ref)
    return "\n".join(lines) + "\n"


def plot_all(results: str | Path = "results", reference: str | Path | None = None
             ) -> list[Path]:
    """Regenerate every plot and table of `results/plots/` from `results/scores/`."""
    df = scores.load(results)
    if df.empty:
        raise ConfigError(f"no scores under {Path(results) / 'scores'}; run `worldzoo bench "
                          "SUITE` first (it writes results/scores/SUITE.csv)")
    out = Path(results) / "plots"
    out.mkdir(parents=True, exist_ok=True)
    sns.set_theme(style="whitegrid", context="notebook", font_scale=0.85)
    colour = colours(df["method"].unique())
    known = benchmarks.suites()
    table = curve_table(df)
    written = []
    for suite, sdf in df.groupby("suite"):
        spec = known.get(suite)
        files = spec.reference if spec else ("dmc_proprio_curves10k.csv",)
        ref = load_reference(reference, files) if reference and files else None
        if ref is not None:  # only the reference curves of this suite's tasks
            ref = ref[ref["task"].isin({benchmarks.reference_task(t) for t in sdf["task"]})]
        budgets = spec.table_budgets() if spec else (int(sdf["budget"].max()),)
        paths = {k: out / f"{suite}_{k}" for k in ("curves.png", "curves.csv", "aggregate.png",
                                                     "aggregate.csv", "table.md",
                                                     "train_curves.png", "train_curves.csv")}
        table[table["suite"] == suite].to_csv(paths["curves.csv"], index=False,
                                              float_format="%.6g")
        fig = curves_figure(table, suite, colour, ref)
        fig.savefig(paths["curves.png"], dpi=120)
        plt.close(fig)
        runs = normalised_runs(sdf, int(sdf["budget"].max()))
        tasks = sorted(sdf["task"].unique())
        skipped = [t for t in tasks if benchmarks.normaliser(t) is None]
        if len(runs):
            agg = aggregate_table(runs)
            agg.to_csv(paths["aggregate.csv"], index=False, float_format="%.6g")
            fig = aggregate_figure(agg, suite, colour, [t for t in tasks if t not in skipped],
                                   skipped)
            fig.savefig(paths["aggregate.png"], dpi=120)
            plt.close(fig)
        else:
            paths.pop("aggregate.png"), paths.pop("aggregate.csv")
        paths["table.md"].write_text(budget_table(sdf, suite, budgets, ref))
        width = ref_window(max(budgets))
        train = train_curve_table(sdf, width)
        if len(train):  # like for like with the papers' curves (training-episode returns)
            train.to_csv(paths["train_curves.csv"], index=False, float_format="%.6g")
            fig = curves_figure(train, suite, colour, ref, what="training-episode return, "
                                f"mean per {_steps_fmt(width)} env steps")
            fig.savefig(paths["train_curves.png"], dpi=120)
            plt.close(fig)
        else:
            paths.pop("train_curves.png"), paths.pop("train_curves.csv")
        written += list(paths.values())
    return written
