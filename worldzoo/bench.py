"""Sweeps: expand a suite into runs, skip the finished ones, resume the interrupted ones, run the
rest on a local process pool (default) or as Ray tasks, report progress, write the scores.

Every run is a normal Sacred run made by `worldzoo.runs.run`; a run counts as finished when the
run store holds a COMPLETED run with the same (label incl. overrides, env id, seed, budget,
preset). An interrupted run (a checkpoint, no live heartbeat) is continued in its directory."""

from __future__ import annotations

import datetime as dt
import os
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from worldzoo import store
from worldzoo.benchmarks import Suite, parse_method
from worldzoo.config import ConfigError, apply_sets, config_id, get_recipe, label


@dataclass(frozen=True)
class Job:
    """One run of a sweep; `resume` is the run directory to continue, if any."""

    suite: str
    method: str                 # label without the suite's own overrides, for plots
    recipe: str
    sets: tuple[str, ...]       # method overrides, then the suite's
    task: str
    seed: int
    steps: int
    preset: str | None
    resume: str | None = None
    config: str = ""            # config_id of its resolved config

    @property
    def key(self) -> tuple:
        return (label(self.recipe, list(self.sets)), self.task, self.seed, self.steps,
                self.preset)

    @property
    def tags(self) -> dict[str, str]:
        return {"suite": self.suite, "method": self.method}

    def __str__(self) -> str:
        return f"{self.method} {self.task} s{self.seed}"


def expand(suite: Suite) -> list[Job]:
    """Every (method, task, seed) of a suite; each method's config is built once here, so an
    unregistered recipe or a bad override fails before anything runs."""
    jobs = []
    for spec in suite.methods:
        method = parse_method(spec)
        sets = (*method.sets, *suite.run_sets())
        try:
            cfg = apply_sets(get_recipe(method.recipe, suite.preset), list(sets))
        except ConfigError as e:
            raise ConfigError(f"suite '{suite.name}', method '{spec}': {e}") from None
        for task in suite.tasks:
            for seed in range(suite.seeds):
                jobs.append(Job(suite.name, method.label, method.recipe, sets, task, seed,
                                suite.steps, suite.preset, config=config_id(cfg)))
    return jobs


@dataclass
class Plan:
    todo: list[Job] = field(default_factory=list)      # fresh runs and resumed ones
    done: list[Job] = field(default_factory=list)      # COMPLETED in a store: skipped
    elsewhere: list[Job] = field(default_factory=list)  # RUNNING with a live heartbeat
    # done, but made with other settings than the job's now: (job, run name, its config id)
    stale: list[tuple[Job, str, str]] = field(default_factory=list)

    @property
    def resumed(self) -> list[Job]:
        return [j for j in self.todo if j.resume]


def plan(jobs: list[Job], records: list[store.Record]) -> Plan:
    """Sort jobs into finished, running elsewhere, to resume and to start."""
    by_key: dict[tuple, list[store.Record]] = {}
    for r in records:
        by_key.setdefault(store.run_key(r["config"]), []).append(r)
    out = Plan()
    for job in jobs:
        matches = by_key.get(job.key, [])
        finished = [r for r in matches if r["status"] == "COMPLETED"]
        if finished:
            out.done.append(job)
            known = sorted((i, r["name"]) for r in finished
                           if (i := config_id((r["config"] or {}).get("config"))))
            if job.config and known and job.config not in {i for i, _ in known}:
                out.stale.append((job, known[0][1], known[0][0]))
        elif any(store.alive(r) for r in matches):
            out.elsewhere.append(job)
        else:
            ckpts = [(s, str(r["dir"])) for r in matches
                     if (s := store.checkpoint_step(r)) is not None]
            resume = max(ckpts)[1] if ckpts else None
            out.todo.append(Job(**{**job.__dict__, "resume": resume}))
    return out


def execute(job: Job, results: str, sql_urls: list[str], device: str = "auto",
            threads: int = 0) -> dict[str, Any]:
    """Run (or resume) one job in this process; what pool workers and Ray tasks call."""
    import torch

    from worldzoo import runs, sqlstore

    if threads:
        torch.set_num_threads(threads)
    observers = [sqlstore.observer(u) for u in sql_urls]
    if job.resume:
        res = runs.run(resume=job.resume, device=device, quiet=True, observers=observers)
    else:
        res = runs.run(job.recipe, job.task, steps=job.steps, seed=job.seed, preset=job.preset,
                       sets=list(job.sets), results=results, device=device, quiet=True,
                       observers=observers, tags=job.tags)
    return {"dir": str(res.dir), "result": res.result, "pid": os.getpid(),
            "ray_worker": _ray_worker()}


def _ray_worker() -> str | None:
    """The Ray worker id when this process is a Ray worker, else None."""
    import sys

    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return None
    return ray.get_runtime_context().get_worker_id()


def default_workers(suite: Suite) -> int:
    """Local pool size: as many runs as the machine has CPUs (and GPUs) for."""
    workers = max(1, int((os.cpu_count() or 1) // max(suite.cpus, 1e-6)))
    if suite.gpus > 0:
        import torch

        if torch.cuda.is_available():
            workers = min(workers, max(1, int(torch.cuda.device_count() // suite.gpus)))
    return workers


class Progress:
    """Prints `done / running / left` and the slowest running run's ETA, read from the
    stores (the env_steps_per_s metric each run logs)."""

    def __init__(self, suite: Suite, total: int, results: str, sql_urls: list[str],
                 every: float = 30.0, printer=print) -> None:
        self.suite, self.total, self.results, self.sql_urls = suite, total, results, sql_urls
        self.every, self.printer, self.last = every, printer, 0.0
        self.done = 0
        self.outputs: list[dict[str, Any]] = []  # what each finished run returned

    def eta(self, running: list[Job]) -> tuple[float | None, Job | None, int]:
        keys = {j.key: j for j in running}
        recs = [r for r in store.read_runs(self.results, self.sql_urls, ("env_steps_per_s",))
                if r["status"] == "RUNNING" and store.run_key(r["config"]) in keys]
        worst, worst_job = None, None
        for r in recs:
            m = r["metrics"].get("env_steps_per_s")
            if not m or not m["values"] or m["values"][-1] <= 0:
                continue
            job = keys[store.run_key(r["config"])]
            left = (job.steps - m["steps"][-1]) / m["values"][-1]
            if worst is None or left > worst:
                worst, worst_job = left, job
        return worst, worst_job, len(recs)

    def report(self, in_flight: list[Job], force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < self.every:
            return
        self.last = now
        eta, job, started = self.eta(in_flight)
        left = self.total - self.done - started
        text = (f"[bench {self.suite.name}] done {self.done}/{self.total}  running {started}  "
                f"left {left}")
        if eta is not None:
            text += f"  slowest ETA {dt.timedelta(seconds=round(eta))} ({job})"
        self.printer(text, flush=True)


def _pool(todo, results, sql_urls, device, workers, progress, failures):
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = get_context("spawn")  # fresh interpreters: no forked torch threads
    with ProcessPoolExecutor(workers, mp_context=ctx, max_tasks_per_child=1) as pool:
        futures = {pool.submit(execute, j, results, sql_urls, device, threads): j for j in todo}
        try:
            while futures:
                finished, _ = wait(futures, timeout=min(5.0, progress.every),
                                   return_when=FIRST_COMPLETED)
                for fut in finished:
                    _collect(futures.pop(fut), fut.result, progress, failures)
                progress.report(list(futures.values()))
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)
            raise


def _ray(address, suite, todo, results, sql_urls, device, progress, failures):
    try:
        import ray
    except ImportError:
        raise ConfigError("--ray needs Ray: pip install 'worldzoo[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 ignore_reinit_error=True, log_to_driver=False)
    task = ray.remote(execute).options(num_cpus=suite.cpus, num_gpus=suite.gpus,
                                       max_retries=0)
    threads = max(1, int(suite.cpus))
    refs = {task.remote(j, results, sql_urls, device, threads): j for j in todo}
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1, timeout=min(5.0, progress.every))
        for ref in ready:
            _collect(refs.pop(ref), lambda r=ref: ray.get(r), progress, failures)
        progress.report(list(refs.values()))


def _collect(job, get, progress, failures) -> None:
    progress.done += 1
    try:
        out = get()
        progress.outputs.append(out)
        progress.printer(f"[bench {progress.suite.name}] finished {job}: eval return "
                         f"{out['result'].get('eval_return')}  ({out['dir']})", flush=True)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - report every failed run, keep the others going
        lines = str(e).strip().splitlines() or [""]
        failures.append((job, f"{type(e).__name__}: {lines[-1]}"))
        progress.printer(f"[bench {progress.suite.name}] FAILED {job}: {failures[-1][1]}",
                         flush=True)


def sweep(suite: Suite, results: str | Path = "results", observers: list[str] = (),
          workers: int | None = None, ray: str | None = None, device: str = "auto",
          dry_run: bool = False, progress_every: float = 30.0, printer=print
          ) -> dict[str, Any]:
    """Run a suite; returns counts, failures and the path of the written scores table."""
    from worldzoo import scores, sqlstore

    results = str(Path(results).resolve())  # Ray workers and spawned pools need it absolute
    sql_urls = [sqlstore.url_of(o, results) for o in observers]
    jobs = expand(suite)
    if not dry_run:
        Path(results, "runs").mkdir(parents=True, exist_ok=True)
    for url in sql_urls:
        if not dry_run:
            sqlstore.ensure_tables(url)
    p = plan(jobs, store.read_runs(results, sql_urls, metric_names=()))
    printer(f"[bench {suite.name}] {len(jobs)} runs: {len(p.done)} finished, "
            f"{len(p.elsewhere)} running elsewhere, {len(p.resumed)} to resume, "
            f"{len(p.todo) - len(p.resumed)} to start", flush=True)
    if p.stale:
        job, name, old = p.stale[0]
        printer(f"[bench {suite.name}] warning: {len(p.stale)} finished run(s) counted as done "
                f"were made with other settings than the suite's now (e.g. {name}: config "
                f"{old}, now {job.config}; a preset or a default changed since): their scores "
                f"are the old settings'. Delete them, or sweep into another --results, to run "
                f"them again", flush=True)
    summary = {"total": len(jobs), "skipped": len(p.done), "elsewhere": len(p.elsewhere),
               "resumed": len(p.resumed), "started": len(p.todo) - len(p.resumed),
               "failures": [], "plan": p}
    if dry_run:
        for j in p.todo:
            printer(f"  {'resume' if j.resume else 'start '} {j}"
                    + (f"  <- {j.resume}" if j.resume else ""))
        return summary
    progress = Progress(suite, len(jobs), results, sql_urls, progress_every, printer)
    progress.done = len(p.done)
    failures: list[tuple[Job, str]] = []
    start = time.time()
    if p.todo and ray:
        _ray(ray, suite, p.todo, results, sql_urls, device, progress, failures)
    elif p.todo:
        n = workers or min(default_workers(suite), len(p.todo))
        printer(f"[bench {suite.name}] local pool of {n} worker(s)", flush=True)
        _pool(p.todo, results, sql_urls, device, n, progress, failures)
    progress.report([], force=True)
    summary["failures"], summary["outputs"] = failures, progress.outputs
    summary["seconds"] = time.time() - start
    summary["scores"] = scores.write_suite(suite.name, results, sql_urls)
    return summary
