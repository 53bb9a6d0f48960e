"""Plots and tables from the scores of real tiny runs (the smoke suite): the files exist, and the
numbers drawn and tabulated are the ones the scores hold."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from _bench_runs import smoke

from worldzoo import plots, scores
from worldzoo.config import ConfigError

REFERENCE = "/work/shared/reference-scores"


@pytest.fixture(scope="module")
def plotted(tmp_path_factory):
    """Plots regenerated from a copy of the smoke scores alone (no run store beside them)."""
    results, _ = smoke(tmp_path_factory)
    only_scores = tmp_path_factory.mktemp("scores_only")
    shutil.copytree(results / "scores", only_scores / "scores")
    return only_scores, plots.plot_all(only_scores)


def test_plot_files_exist_and_are_not_empty(plotted):
    out, written = plotted
    names = sorted(p.name for p in written)
    assert names == ["smoke_aggregate.csv", "smoke_aggregate.png", "smoke_curves.csv",
                     "smoke_curves.png", "smoke_table.md", "smoke_train_curves.csv",
                     "smoke_train_curves.png"]
    for p in written:
        assert p.parent == out / "plots" and p.stat().st_size > 100
    assert (out / "plots" / "smoke_curves.png").read_bytes()[:4] == b"\x89PNG"


def test_curves_plot_the_mean_over_seeds(plotted):
    out, _ = plotted
    df = scores.load(out)
    expect = df[df["kind"] == "eval"].groupby("env_step")["return"].mean()
    table = plots.curve_table(df)
    fig = plots.curves_figure(table, "smoke", plots.colours(df["method"].unique()))
    (ax,) = fig.axes
    (line,) = [ln for ln in ax.lines if ln.get_label() == "dreamerv1"] or ax.lines[:1]
    x, y = line.get_xdata(), line.get_ydata()
    assert list(x) == list(expect.index) and y == pytest.approx(expect.to_numpy())
    assert ax.get_xlabel().startswith("env steps") and "return" in ax.get_ylabel()
    band = ax.collections[0].get_paths()[0].vertices[:, 1]  # the 95% CI band spans the seeds
    lo, hi = df[df["kind"] == "eval"].groupby("env_step")["return"].agg(["min", "max"]).T.values
    assert band.min() == pytest.approx(lo.min()) and band.max() == pytest.approx(hi.max())
    written = pd.read_csv(out / "plots" / "smoke_curves.csv")
    assert written["mean"].to_numpy() == pytest.approx(expect.to_numpy(), rel=1e-5)
    assert (written["seeds"] == 2).all()


def test_budget_table_and_aggregate_match_scores(plotted):
    out, _ = plotted
    df = scores.load(out)
    final = df[(df["kind"] == "eval") & (df["env_step"] == 300)]["return"]
    md = (out / "plots" / "smoke_table.md").read_text()
    row = next(ln for ln in md.splitlines() if ln.startswith("| gym:Pendulum-v1"))
    assert row == (f"| gym:Pendulum-v1 | {final.mean():.1f} ± {final.std(ddof=0):.1f} (2) |")
    agg = pd.read_csv(out / "plots" / "smoke_aggregate.csv")
    low, high = -1208.0, 0.0  # benchmarks.NORMALISATION of Pendulum-v1
    last = agg[agg["env_step"] == 300].iloc[0]
    assert last["mean"] == pytest.approx(((final - low) / (high - low)).mean(), rel=1e-5)
    assert last["runs"] == 2 and last["tasks"] == 1
    assert last["iqm_lo"] <= last["iqm"] <= last["iqm_hi"]


def test_budget_table_has_the_reference_protocol_train_window():
    """The train table is, per seed, the mean of the training episodes that ended in the last
    10k env steps up to the budget; then mean ± std over seeds."""
    rows = pd.DataFrame([
        {"suite": "s", "task": "dmc:cartpole-balance", "method": "dreamerv3", "seed": seed,
         "env_step": step, "return": ret, "kind": kind}
        for seed, rets in ((0, (100.0, 500.0, 700.0)), (1, (200.0, 600.0, 900.0)))
        for step, ret, kind in zip((89_000, 95_000, 100_000), rets, ("train",) * 3)]
        + [{"suite": "s", "task": "dmc:cartpole-balance", "method": "dreamerv3", "seed": 0,
            "env_step": 100_000, "return": 42.0, "kind": "eval"}])
    md = plots.budget_table(rows, "s", (100_000,))
    eval_part, train_part = md.split("env steps: train (last 10k)")
    assert "| dmc:cartpole-balance | 42.0 ± 0.0 (1) |" in eval_part
    per_seed = np.array([600.0, 750.0])  # 89k is outside (90k, 100k]
    assert (f"| dmc:cartpole-balance | {per_seed.mean():.1f} ± {per_seed.std():.1f} (2) |"
            in train_part)
    rows = pd.DataFrame({"task": "t", "method": "m", "seed": 0, "kind": "train",
                         "env_step": [85_000, 91_000, 100_000, 101_000],
                         "return": [1.0, 2.0, 4.0, 100.0]})
    win = plots.train_window(rows, 100_000, plots.ref_window(100_000))
    assert win["return"].tolist() == [3.0]  # 91k and 100k: (90k, 100k]
    curve = plots.train_curve_table(rows.assign(suite="s"), 10_000)
    assert curve["env_step"].tolist() == [90_000, 100_000, 110_000]
    assert curve["mean"].tolist() == [1.0, 3.0, 100.0]
    assert plots.ref_window(500_000) == 10_000 and plots.ref_window(300) == 30


def test_train_curves_plot_binned_training_returns(plotted):
    out, _ = plotted
    df = scores.load(out)
    tr = df[df["kind"] == "train"]
    per_seed = tr.assign(bin=np.ceil(tr["env_step"] / 30).astype(int) * 30).groupby(
        ["seed", "bin"])["return"].mean()
    want = per_seed.groupby(level="bin").mean()
    written = pd.read_csv(out / "plots" / "smoke_train_curves.csv")
    assert written["env_step"].tolist() == list(want.index)
    assert written["mean"].to_numpy() == pytest.approx(want.to_numpy(), rel=1e-5)


def test_colours_are_stable_and_distinct():
    a = plots.colours(["dreamerv3[rssm=gaussian]", "dreamerv1"])
    b = plots.colours(["dreamerv1", "dreamerv3", "dreamerv3[rssm=gaussian]", "worldmodels"])
    assert a["dreamerv1"] == b["dreamerv1"]
    assert a["dreamerv3[rssm=gaussian]"] == b["dreamerv3[rssm=gaussian]"]
    assert len({tuple(c) for c in b.values()}) == len(b)


def test_iqm_and_bootstrap():
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])
    assert plots.iqm(x) == pytest.approx(np.mean([2.0, 3.0, 4.0, 5.0]))
    lo, hi = plots.bootstrap_ci([1.0, 2.0, 3.0, 4.0])
    assert 1.0 <= lo < 2.5 < hi <= 4.0
    assert plots.bootstrap_ci([5.0]) == (5.0, 5.0)


def test_reference_overlay(plotted, tmp_path):
    """The papers' DreamerV3 curve is drawn dashed on a DMC task's axes."""
    import os

    if not os.path.isdir(REFERENCE):
        pytest.skip(f"no reference scores at {REFERENCE}")
    ref = plots.load_reference(REFERENCE, ("dmc_proprio_curves10k.csv",))
    rows = pd.DataFrame({"suite": "x", "task": "dmc:walker-walk", "method": "dreamerv1",
                         "env_step": [10_000, 20_000], "mean": [100.0, 200.0],
                         "ci_lo": [90.0, 190.0], "ci_hi": [110.0, 210.0], "seeds": 1})
    fig = plots.curves_figure(rows, "x", plots.colours(["dreamerv1"]), ref)
    dashed = [ln for ln in fig.axes[0].lines if ln.get_label() == "dreamerv3 (paper)"]
    (line,) = dashed
    want = ref[(ref["method"] == "dreamerv3") & (ref["task"] == "walker_walk")
               & (ref["step"] <= 21_000)].sort_values("step")
    assert list(line.get_xdata()) == list(want["step"]) and line.get_linestyle() == "--"
    assert line.get_ydata() == pytest.approx(want["mean"].to_numpy())


def test_plot_without_scores_fails_clearly(tmp_path):
    with pytest.raises(ConfigError, match="no scores under"):
        plots.plot_all(tmp_path)
    with pytest.raises(ConfigError, match="--reference .*no such directory"):
        plots.load_reference(tmp_path / "nope", ("a.csv",))


def test_partial_scores_include_unfinished_runs():
    from worldzoo import scores

    def record(name, status):
        return {"name": name, "status": status, "dir": None, "store": "file",
                "config": {"label": "dreamerv3[train.threads=1]", "env_id": "gym:CartPole-v1",
                           "seed": 0, "steps": 1000, "preset": "small"},
                "metrics": {"eval_return": {"steps": [500], "values": [12.5]}}}

    recs = [record("a", "COMPLETED"), record("b", "RUNNING"), record("c", "INTERRUPTED")]
    assert list(scores.build(recs)["run"]) == ["a"]
    df = scores.build(recs, partial=True)
    assert sorted(df["run"]) == ["a", "b", "c"] and set(df["method"]) == {"dreamerv3"}


def test_merge_keeps_rows_of_runs_made_elsewhere_and_replaces_rerecorded_ones():
    from worldzoo import scores

    def rows(run, values, method="dreamerv3"):
        return pd.DataFrame([{"suite": "adhoc", "task": "dmc:cartpole-balance",
                              "method": method, "seed": 0, "env_step": 500 * (i + 1),
                              "return": v, "kind": "eval", "preset": "small",
                              "budget": 1000, "run": run} for i, v in enumerate(values)],
                            columns=scores.COLUMNS)

    old = pd.concat([rows("gone", [1.0, 2.0]), rows("again", [3.0])], ignore_index=True)
    new = rows("again", [4.0, 5.0], method="dreamerv3[train.precision=bfloat16]")
    df = scores.merge(old, new)
    assert sorted(df["run"]) == ["again", "again", "gone", "gone"]
    assert list(df[df["run"] == "again"]["return"]) == [4.0, 5.0]
    assert list(scores.merge(old, rows("x", [])).sort_values("return")["return"]) == [1, 2, 3]


def test_two_runs_of_one_method_and_seed_are_refused_until_labelled():
    """Merging the runs of a new checkout into adhoc.csv under the same method would average
    two runs as one seed; `--label` keeps them apart."""
    from worldzoo import scores
    from worldzoo.config import ConfigError

    def rows(run, method="dreamerv3"):
        return pd.DataFrame([{"suite": "adhoc", "task": "dmc:cartpole-balance", "method": method,
                              "seed": 0, "env_step": 500, "return": 1.0, "kind": "eval",
                              "preset": "small", "budget": 1000, "run": run}],
                            columns=scores.COLUMNS)

    scores.check_unique_seeds(scores.merge(rows("old"), rows("new", "dreamerv3 @head")))
    with pytest.raises(ConfigError, match="runs new, old are all dreamerv3 seed 0.*--label"):
        scores.check_unique_seeds(scores.merge(rows("old"), rows("new")))


def test_config_id_tells_settings_apart_and_ignores_runtime_keys():
    from worldzoo.config import get_recipe
    from worldzoo.scores import config_id

    cfg = get_recipe("dreamerv3", "small")
    same = {**cfg, "train": {**cfg["train"], "threads": 1, "steps": 5, "log_every": 7}}
    other = {**cfg, "train": {**cfg["train"], "train_ratio": 64.0}}
    assert config_id(cfg) == config_id(same) != config_id(other)
    assert config_id(None) == "" and len(config_id(cfg)) == 10


def test_runs_of_one_method_made_with_different_settings_are_refused(tmp_path):
    """A preset changed between two sets of runs under one label: their seeds must not be
    pooled. Rows of old tables (no config recorded) are not compared."""
    from worldzoo import scores
    from worldzoo.config import ConfigError

    def rows(run, config, seed, method="dreamerv3"):
        return pd.DataFrame([{"suite": "adhoc", "task": "dmc:cartpole-balance", "method": method,
                              "seed": seed, "env_step": 500, "return": 1.0, "kind": "eval",
                              "preset": "small", "budget": 1000, "run": run,
                              "config": config}], columns=scores.COLUMNS)

    pooled = pd.concat([rows("a", "c1", 0), rows("b", "c1", 1), rows("old", "", 2)])
    scores.check_same_config(pooled)
    mixed = pd.concat([pooled, rows("new", "c2", 3)])
    with pytest.raises(ConfigError, match=r"runs a \(config c1\) and new \(config c2\) are "
                                          r"both dreamerv3.*--label"):
        scores.check_same_config(mixed)
    scores.check_same_config(pd.concat([pooled, rows("new", "c2", 3, "dreamerv3 @head")]))
    # a table written before the column existed reads back with config ''
    path = tmp_path / "adhoc.csv"
    pooled.drop(columns="config").to_csv(path, index=False)
    assert set(scores.load_table(path)["config"]) == {""}


def test_plot_warns_when_a_suite_table_pools_other_settings(tmp_path, capsys):
    """Suite tables are `bench`'s to write: `plot` still draws them, and says which runs of one
    method were made with other settings."""
    from worldzoo import scores
    from worldzoo.cli import main

    rows = [{"suite": "mysuite", "task": "gym:Pendulum-v1", "method": "dreamerv3", "seed": s,
             "env_step": step, "return": -1000.0 + step, "kind": "eval", "preset": "small",
             "budget": 200, "run": f"r{s}", "config": cfg}
            for s, cfg in ((0, "c1"), (1, "c2")) for step in (100, 200)]
    (tmp_path / "scores").mkdir()
    pd.DataFrame(rows, columns=scores.COLUMNS).to_csv(tmp_path / "scores" / "mysuite.csv",
                                                      index=False)
    assert main(["plot", "--results", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "warning: runs r0 (config c1) and r1 (config c2) are both dreamerv3" in err
    assert (tmp_path / "plots" / "mysuite_curves.png").is_file()


def _fake_run(root, name, label, seed, config, returns):
    """A finished run directory as `worldzoo run --results root` leaves it (the files the
    scores read: config.json, run.json, metrics.json)."""
    import json

    d = root / "runs" / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({
        "label": label, "env_id": "dmc:cartpole-balance", "seed": seed, "steps": 1000,
        "preset": "small", "config": config}))
    (d / "run.json").write_text(json.dumps({"status": "COMPLETED"}))
    steps = [500 * (i + 1) for i in range(len(returns))]
    (d / "metrics.json").write_text(json.dumps({
        "eval_return": {"steps": steps, "values": returns},
        "train_return": {"steps": steps, "values": returns}}))


def test_plot_method_pools_runs_of_one_config_made_under_two_labels(tmp_path, capsys):
    """Runs made with `--set train.train_ratio=160` before the preset adopted it, and runs of the
    preset since: `--method` plots both sets as one method; other settings are refused."""
    from worldzoo.cli import main
    from worldzoo.config import get_recipe

    cfg = get_recipe("dreamerv3", "small")
    other = {**cfg, "train": {**cfg["train"], "train_ratio": 64.0}}
    for seed in (0, 1):
        _fake_run(tmp_path / "before", f"b{seed}", "dreamerv3[train.train_ratio=160]", seed, cfg,
                  [10.0 + seed, 20.0])
    for seed in (2, 3):
        _fake_run(tmp_path / "since", f"s{seed}", "dreamerv3", seed, cfg, [30.0, 40.0 + seed])
    _fake_run(tmp_path / "stale", "x4", "dreamerv3", 4, other, [1.0, 2.0])
    out = str(tmp_path / "results")
    assert main(["plot", "--results", out, "--runs", str(tmp_path / "before"),
                 "--method", "dreamerv3"]) in (0, None)
    assert main(["plot", "--results", out, "--runs", str(tmp_path / "since"), "--merge"]) in (
        0, None)
    df = pd.read_csv(tmp_path / "results" / "scores" / "adhoc.csv")
    assert set(df["method"]) == {"dreamerv3"} and sorted(df["seed"].unique()) == [0, 1, 2, 3]
    capsys.readouterr()
    code = main(["plot", "--results", out, "--runs", str(tmp_path / "stale"), "--merge",
                 "--method", "dreamerv3"])
    err = capsys.readouterr().err
    assert code != 0 and "made with different settings" in err and "--label" in err
    assert sorted(pd.read_csv(tmp_path / "results" / "scores" / "adhoc.csv")["seed"].unique()) \
        == [0, 1, 2, 3]  # the refused runs were not written
