"""The benchmark harness on real tiny runs: suite expansion, skipping finished runs, resuming an
interrupted sweep, scores from the file store, SQLite and PostgreSQL, and the Ray path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid

import pandas as pd
import pytest
from _bench_runs import smoke

from worldzoo import bench, scores, sqlstore, store
from worldzoo.benchmarks import get_suite, parse_method
from worldzoo.config import ConfigError

PG_URL = os.environ.get("WORLDZOO_TEST_PG",
                        "postgresql://worldzoo:worldzoo@127.0.0.1:5432/worldzoo_test")


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    return smoke(tmp_path_factory)


def test_parse_method_and_bad_spec():
    m = parse_method("dreamerv3[rssm=gaussian,kl.free=1.0]")
    assert (m.recipe, m.sets, m.label) == ("dreamerv3", ("rssm=gaussian", "kl.free=1.0"),
                                           "dreamerv3[rssm=gaussian,kl.free=1.0]")
    assert parse_method("dreamerv1").sets == ()
    with pytest.raises(ConfigError, match="malformed method"):
        parse_method("dreamerv3[rssm=gaussian")


def test_expand_grid_and_keys():
    suite = get_suite("smoke", seeds=3, methods=("dreamerv1", "dreamerv1[kl.free=1.0]"))
    jobs = bench.expand(suite)
    assert len(jobs) == 2 * 1 * 3
    assert {j.method for j in jobs} == {"dreamerv1", "dreamerv1[kl.free=1.0]"}
    assert {j.seed for j in jobs} == {0, 1, 2}
    j = jobs[-1]
    # suite-level overrides come after the method's and are part of the run label (the key)
    assert j.sets == ("kl.free=1.0", "train.eval_every=100", "train.eval_episodes=1")
    assert j.key == ("dreamerv1[kl.free=1.0,train.eval_every=100,train.eval_episodes=1]",
                     "gym:Pendulum-v1", 2, 300, "debug")


def test_unregistered_recipe_and_bad_override_fail_clearly():
    with pytest.raises(ConfigError, match="suite 'smoke', method 'nosuchrecipe'.*unknown "
                       "recipe 'nosuchrecipe'; known recipes: .*dreamerv1"):
        bench.expand(get_suite("smoke", methods=("nosuchrecipe",)))
    with pytest.raises(ConfigError, match="rssm=gaussian has no kwarg 'nope'"):
        bench.expand(get_suite("smoke", methods=("dreamerv1[rssm.nope=1]",)))
    with pytest.raises(ConfigError, match="unknown suite 'nope'; known suites: smoke"):
        get_suite("nope")


def test_sweep_runs_then_skips_finished(smoke_runs):
    results, summary = smoke_runs
    assert summary["failures"] == [] and summary["started"] == 2
    recs = store.read_file_runs(results, metric_names=())
    assert sorted(r["status"] for r in recs) == ["COMPLETED", "COMPLETED"]
    assert {r["config"]["tags"]["method"] for r in recs} == {"dreamerv1"}
    again = bench.sweep(get_suite("smoke"), results, observers=["sql"])
    assert (again["skipped"], again["started"], again["resumed"]) == (2, 0, 0)
    assert len(store.read_file_runs(results, metric_names=())) == 2  # nothing new ran
    # a third seed is new work; the two finished ones still count as done
    p = bench.plan(bench.expand(get_suite("smoke", seeds=3)), recs)
    assert [j.seed for j in p.done] == [0, 1] and [j.seed for j in p.todo] == [2]


def test_finished_runs_made_with_other_settings_are_reported(smoke_runs):
    """A preset or default changed since a suite's runs finished: they still count as done,
    and the plan names them, so the sweep warns instead of silently reusing them."""
    results, _ = smoke_runs
    recs = store.read_file_runs(results, metric_names=())
    jobs = bench.expand(get_suite("smoke"))
    assert bench.plan(jobs, recs).stale == []
    for r in recs:  # as if the runs were made when the preset read otherwise
        r["config"] = {**r["config"], "config": {**r["config"]["config"], "kl": {"free": 9.0}}}
    p = bench.plan(jobs, recs)
    assert len(p.done) == 2 and len(p.stale) == 2
    job, name, old = p.stale[0]
    assert name in {r["name"] for r in recs} and old and old != job.config


def test_sweep_warns_about_finished_runs_made_with_other_settings(smoke_runs, tmp_path):
    import shutil

    results, _ = smoke_runs
    copy = tmp_path / "results"
    shutil.copytree(results / "runs", copy / "runs")
    for path in (copy / "runs").glob("*/config.json"):
        cfg = json.loads(path.read_text())
        cfg["config"]["kl"]["free"] = 9.0  # as if the preset read otherwise back then
        path.write_text(json.dumps(cfg))
    lines = []
    out = bench.sweep(get_suite("smoke"), copy, dry_run=True,
                      printer=lambda *a, **k: lines.append(a[0]))
    assert out["skipped"] == 2
    assert any("warning: 2 finished run(s) counted as done were made with other settings"
               in line for line in lines), lines


def _expected_eval_steps():
    return [100, 200, 300]


def test_scores_from_file_and_sqlite_stores_agree(smoke_runs):
    results, _ = smoke_runs
    url = sqlstore.url_of("sql", results)
    from_files = scores.build(store.read_file_runs(results, tuple(scores.KINDS.values())))
    from_sql = scores.build(sqlstore.read_runs(url, tuple(scores.KINDS.values())))
    pd.testing.assert_frame_equal(from_files, from_sql)
    written = pd.read_csv(results / "scores" / "smoke.csv")
    assert list(written.columns) == scores.COLUMNS
    ev = written[written["kind"] == "eval"]
    assert ev.groupby("seed")["env_step"].apply(list).to_dict() == {
        0: _expected_eval_steps(), 1: _expected_eval_steps()}
    assert (written["suite"] == "smoke").all() and (written["method"] == "dreamerv1").all()
    assert set(written["kind"]) == {"eval", "train"}
    # the table holds what the runs logged (6 significant digits in the CSV)
    for rec in store.read_file_runs(results, ("eval_return",)):
        seed = rec["config"]["seed"]
        logged = rec["metrics"]["eval_return"]["values"]
        got = ev[ev["seed"] == seed].sort_values("env_step")["return"].to_numpy()
        assert got == pytest.approx(logged, rel=1e-5)


def test_resume_interrupted_sweep(tmp_path):
    """Ctrl-C a real sweep after its run has saved a checkpoint; the next sweep continues that
    run in its directory instead of starting over."""
    cmd = [sys.executable, "-m", "worldzoo", "bench", "smoke", "--seeds", "1", "--results",
           str(tmp_path)]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            if list((tmp_path / "runs").glob("*/checkpoints/latest.json")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished before it could be interrupted"
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    (run,) = store.read_file_runs(tmp_path, ("eval_return",))
    assert run["status"] in ("INTERRUPTED", "FAILED"), out[-2000:]
    step = store.checkpoint_step(run)
    assert step is not None and step < 300
    summary = bench.sweep(get_suite("smoke", seeds=1), tmp_path)
    assert (summary["resumed"], summary["started"], summary["failures"]) == (1, 0, [])
    (after,) = store.read_file_runs(tmp_path, ("eval_return",))
    assert after["dir"] == run["dir"] and after["status"] == "COMPLETED"
    steps = after["metrics"]["eval_return"]["steps"]
    assert steps == sorted(set(steps)) and steps[-1] == 300
    assert store.checkpoint_step(after) == 300


def _postgres_or_skip() -> str:
    pytest.importorskip("psycopg", reason="PostgreSQL driver missing: pip install "
                        "'worldzoo[postgres]'")
    import sqlalchemy as sa

    schema = f"t_{uuid.uuid4().hex[:12]}"
    try:
        engine = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        engine.dispose()
    except Exception as e:  # noqa: BLE001 - any connection problem means: no server here
        pytest.skip(f"no PostgreSQL server at {PG_URL} ({type(e).__name__}); CI starts one "
                    "with benchmarks/ci_postgres.sh")
    return schema


def test_postgres_store(tmp_path):
    schema = _postgres_or_skip()
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    try:
        summary = bench.sweep(get_suite("smoke", seeds=1), tmp_path, observers=[f"sql:{url}"])
        assert summary["failures"] == [] and summary["started"] == 1
        from_pg = scores.build(sqlstore.read_runs(url, tuple(scores.KINDS.values())))
        from_files = scores.build(store.read_file_runs(tmp_path, tuple(scores.KINDS.values())))
        pd.testing.assert_frame_equal(from_files, from_pg)
        assert from_pg[from_pg["kind"] == "eval"]["env_step"].tolist() == _expected_eval_steps()
        (rec,) = sqlstore.read_runs(url, ())
        assert rec["status"] == "COMPLETED" and len(rec["name"]) > 24  # full name kept
        # the database alone tells the next sweep that the run is finished
        p = bench.plan(bench.expand(get_suite("smoke", seeds=1)), sqlstore.read_runs(url, ()))
        assert len(p.done) == 1 and not p.todo
    finally:
        import sqlalchemy as sa

        engine = sa.create_engine(PG_URL)
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def test_bad_observer_and_unreachable_database(tmp_path):
    with pytest.raises(ConfigError, match="bad --observer 'mongo'"):
        sqlstore.url_of("mongo")
    with pytest.raises(ConfigError, match="cannot use database"):
        bench.sweep(get_suite("smoke", seeds=1), tmp_path,
                    observers=["sql:sqlite:////nonexistent-dir/x.sqlite"])


@pytest.mark.slow
def test_ray_local_cluster(tmp_path):
    """The same grid as Ray tasks on a local Ray instance."""
    ray = pytest.importorskip("ray", reason="Ray missing: pip install 'worldzoo[ray]'")
    try:
        summary = bench.sweep(get_suite("smoke", seeds=1), tmp_path, ray="local")
        assert summary["failures"] == [] and summary["started"] == 1
        (rec,) = store.read_file_runs(tmp_path, ("eval_return",))
        assert rec["status"] == "COMPLETED"
        assert rec["metrics"]["eval_return"]["steps"] == _expected_eval_steps()
        (out,) = summary["outputs"]
        assert out["ray_worker"] and out["pid"] != os.getpid()  # it ran as a Ray task
        assert json.loads((rec["dir"] / "config.json").read_text())["tags"]["suite"] == "smoke"
    finally:
        ray.shutdown()
