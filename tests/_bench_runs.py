"""Real tiny sweeps shared by test_bench.py and test_plots.py: the smoke suite (DreamerV1,
debug preset, gym:Pendulum-v1, 300 env steps, 2 seeds) recorded in the file store and a SQLite
store at once. Made once per test session."""

from __future__ import annotations

from pathlib import Path

_CACHE: dict[str, object] = {}


def smoke(tmp_path_factory) -> tuple[Path, dict]:
    """(results dir, sweep summary) of the smoke suite, run once."""
    if "smoke" not in _CACHE:
        from worldzoo import bench
        from worldzoo.benchmarks import get_suite

        results = tmp_path_factory.mktemp("bench_smoke")
        summary = bench.sweep(get_suite("smoke"), results, observers=["sql"], workers=2,
                              progress_every=5.0)
        _CACHE["smoke"] = (results, summary)
    return _CACHE["smoke"]
