"""Reading runs back from the run stores: Sacred run directories under `results/runs/` and,
optionally, SQL databases written by `worldzoo.sqlstore`. Each run becomes one record dict:
name, status, config (the run's saved config), heartbeat, start_time, metrics, dir, store."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

Record = dict[str, Any]
ALIVE_SECONDS = 60.0  # a RUNNING run whose heartbeat is older than this is taken as dead


def _time(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime) or value is None:
        return value
    try:
        return dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # missing, or being replaced right now
        return None


def read_file_runs(results: str | Path, metric_names: tuple[str, ...] | None = None
                   ) -> list[Record]:
    """Every Sacred run directory under `results/runs/`."""
    out = []
    root = Path(results) / "runs"
    if not root.is_dir():
        return out
    for d in sorted(root.iterdir()):
        config, info = _read_json(d / "config.json"), _read_json(d / "run.json")
        if not isinstance(config, dict) or not isinstance(info, dict):
            continue
        metrics = {}
        if metric_names is None or metric_names:
            metrics = _read_json(d / "metrics.json") or {}
            if metric_names is not None:
                metrics = {k: v for k, v in metrics.items() if k in metric_names}
        out.append({"name": d.name, "status": info.get("status"), "config": config,
                    "heartbeat": _time(info.get("heartbeat")),
                    "start_time": _time(info.get("start_time")), "metrics": metrics,
                    "dir": d, "store": "file"})
    return out


def read_runs(results: str | Path, sql_urls: list[str] | tuple[str, ...] = (),
              metric_names: tuple[str, ...] | None = None) -> list[Record]:
    """Runs of the file store and of each SQL store; a run present in several stores (same
    run name) is listed once, the file store's copy first."""
    records = read_file_runs(results, metric_names)
    seen = {r["name"] for r in records}
    for url in sql_urls:
        from worldzoo import sqlstore

        for r in sqlstore.read_runs(url, metric_names):
            if r["name"] not in seen:
                seen.add(r["name"])
                records.append(r)
    return records


def run_key(config: dict) -> tuple:
    """What identifies a run for the harness: (label incl. overrides, env id, seed, env-step
    budget, preset)."""
    return (config.get("label"), config.get("env_id"), int(config.get("seed", -1)),
            int(config.get("steps", -1)), config.get("preset"))


def alive(record: Record, now: dt.datetime | None = None) -> bool:
    """A RUNNING run with a recent heartbeat (another process is training it)."""
    if record["status"] != "RUNNING" or record["heartbeat"] is None:
        return False
    now = now or dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    return (now - record["heartbeat"]).total_seconds() < ALIVE_SECONDS


def checkpoint_step(record: Record) -> int | None:
    """Env step of the newest complete checkpoint of a file-store run, else None."""
    if record["dir"] is None:
        return None
    from worldzoo import checkpoint

    try:
        path = checkpoint.latest(Path(record["dir"]) / "checkpoints")
    except checkpoint.CheckpointError:
        return None
    try:
        return int(path.name.removeprefix("step"))
    except ValueError:
        return 0


def last_step(record: Record) -> int:
    """The largest env step the run has logged a metric at."""
    return max((max(m["steps"]) for m in record["metrics"].values() if m.get("steps")),
               default=0)
