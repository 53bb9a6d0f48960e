"""The long-format scores table: one row per logged episode return of a finished run,
(suite, task, method, seed, env_step, return, kind = eval | train, preset, budget, run,
config), built with pandas from the run stores and written to `results/scores/<suite>.csv`.
`config` identifies the run's resolved settings (`config_id`); '' where unknown (tables
written before it was recorded)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from worldzoo import store
from worldzoo.config import ConfigError, config_id, learning_label

COLUMNS = ["suite", "task", "method", "seed", "env_step", "return", "kind", "preset", "budget",
           "run", "config"]
KINDS = {"eval": "eval_return", "train": "train_return"}


def build(records: list[store.Record], partial: bool = False) -> pd.DataFrame:
    """Scores of the COMPLETED runs among `records`, or with `partial` of every run so far
    (running or interrupted ones too). Runs made outside a suite get suite `adhoc` and their
    run label as method."""
    rows = []
    for r in records:
        if r["status"] != "COMPLETED" and not partial:
            continue
        c = r["config"]
        tags = c.get("tags") or {}
        base = {"suite": tags.get("suite", "adhoc"), "task": c.get("env_id"),
                "method": tags.get("method", learning_label(str(c.get("label")))),
                "seed": int(c.get("seed", 0)),
                "preset": c.get("preset") or "", "budget": int(c.get("steps", 0)),
                "run": r["name"], "config": config_id(c.get("config"))}
        for kind, metric in KINDS.items():
            m = r["metrics"].get(metric) or {"steps": [], "values": []}
            rows += [{**base, "env_step": int(s), "return": float(v), "kind": kind}
                     for s, v in zip(m["steps"], m["values"])]
    return _sorted(pd.DataFrame(rows, columns=COLUMNS))


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in the tables' order: suite, task, method, seed, kind, env step."""
    return df.sort_values(["suite", "task", "method", "seed", "kind", "env_step"],
                          kind="stable").reset_index(drop=True)


def merge(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """`new` plus the rows of `old` whose run is not in `new`: a table that accumulates runs
    made under several results directories (or whose run directories are gone)."""
    kept = old[~old["run"].isin(set(new["run"]))]
    return _sorted(pd.concat([f for f in (kept, new) if len(f)] or [new], ignore_index=True))


def check_unique_seeds(df: pd.DataFrame) -> None:
    """Refuse a table where two runs are the same (suite, task, method, seed): their curves
    would be averaged as if they were one seed."""
    runs = df.groupby(["suite", "task", "method", "seed"])["run"].unique()
    clash = runs[runs.map(len) > 1]
    if len(clash):
        (suite, task, method, seed), names = next(iter(clash.items()))
        raise ConfigError(f"runs {', '.join(sorted(names))} are all {method} seed {seed} on "
                          f"{task} ({suite}): plot one set under another name with --label "
                          f"TEXT, or leave out --merge")


def mixed_configs(df: pd.DataFrame) -> str | None:
    """Why one (suite, task, method) of `df` pools runs made with different settings (their
    config ids differ), or None when none does."""
    known = df.assign(config=df["config"].fillna("").astype(str))
    known = known[known["config"] != ""]
    first = known.groupby(["suite", "task", "method", "config"])["run"].min()
    ids = first.groupby(level=["suite", "task", "method"]).size()
    if not (ids > 1).any():
        return None
    suite, task, method = ids[ids > 1].index[0]
    (a, run_a), (b, run_b) = list(first[(suite, task, method)].items())[:2]
    return (f"runs {run_a} (config {a}) and {run_b} (config {b}) are both {method} on {task} "
            f"({suite}) but were made with different settings (a preset or a default changed "
            f"between them)")


def check_same_config(df: pd.DataFrame) -> None:
    """Refuse a table where one (suite, task, method) holds runs made with different settings:
    their seeds would be pooled as if they were one configuration."""
    why = mixed_configs(df)
    if why:
        raise ConfigError(f"{why}: plot one set under another name with --label TEXT")


def from_stores(results: str | Path, sql_urls: list[str] | tuple[str, ...] = (),
                partial: bool = False) -> pd.DataFrame:
    """The scores of every finished run (with `partial`: every run) in the file store and the
    SQL stores."""
    return build(store.read_runs(results, sql_urls, tuple(KINDS.values())), partial)


def write_suite(suite: str, results: str | Path = "results",
                sql_urls: list[str] | tuple[str, ...] = ()) -> Path:
    """(Re)write `results/scores/<suite>.csv` from the stores; returns its path."""
    df = from_stores(results, sql_urls)
    path = Path(results) / "scores" / f"{suite}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    df[df["suite"] == suite].to_csv(path, index=False, float_format="%.6g")
    return path


def load_table(path: str | Path) -> pd.DataFrame:
    """One long-format score table."""
    df = pd.read_csv(path, dtype={"preset": str, "config": str}, keep_default_na=False,
                     na_values={"return": ["", "nan"]})
    if "config" not in df:  # written before the config was recorded
        df["config"] = ""
    return df


def load(results: str | Path = "results") -> pd.DataFrame:
    """All score tables under `results/scores/` as one frame (empty when there are none)."""
    paths = sorted((Path(results) / "scores").glob("*.csv"))
    frames = [load_table(p) for p in paths]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=COLUMNS)
    return pd.concat(frames, ignore_index=True)
