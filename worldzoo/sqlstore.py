"""Runs in a SQL database through Sacred's `SqlObserver` (PostgreSQL for teams, a SQLite file by
default), plus the metrics: Sacred's SQL schema has no metrics table, so `RunObserver` adds
`worldzoo_metric` (run_id, name, step, value, timestamp) beside Sacred's tables.

Sacred's `run.run_id` is a 24-character column, so a run's SQL id is a hash of its run-directory
name; the full name is kept in the run's `comment`."""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sacred.observers import SqlObserver
from sacred.observers.sql_bases import Base, Run

from worldzoo.config import ConfigError

# Sacred's SQL models predate SQLAlchemy 2's cascade rules; the rows are saved all the same.
warnings.filterwarnings("ignore", message=r"Object of type <\w+> not in session")


class Metric(Base):
    """One logged scalar of a run, indexed by env steps."""

    __tablename__ = "worldzoo_metric"
    metric_id = sa.Column(sa.Integer, primary_key=True)
    run_id = sa.Column(sa.String(24), sa.ForeignKey("run.run_id"), index=True)
    name = sa.Column(sa.String(64))
    step = sa.Column(sa.BigInteger)
    value = sa.Column(sa.Float)
    timestamp = sa.Column(sa.DateTime)


def run_key(name: str) -> str:
    """The 24-character SQL id of a run named `name` (its run-directory name)."""
    return hashlib.sha1(str(name).encode()).hexdigest()[:24]


def url_of(spec: str, results: str | Path = "results") -> str:
    """`sql` -> SQLite file `results/runs.sqlite`; `sql:URL` -> URL (`sql:postgresql://...`,
    `sql:sqlite:////abs/path.sqlite`)."""
    if spec == "sql":
        return _sqlite_wait(f"sqlite:///{(Path(results) / 'runs.sqlite').resolve()}")
    if spec.startswith("sql:") and "://" in spec:
        return _sqlite_wait(spec[4:])
    raise ConfigError(f"bad --observer '{spec}'; write sql (SQLite file in the results "
                      "directory) or sql:URL, e.g. sql:postgresql://user:pw@host/db")


def _sqlite_wait(url: str) -> str:
    """SQLite locks the whole file per write: parallel runs wait up to 2 min, not 5 s."""
    if url.startswith("sqlite") and "timeout=" not in url:
        return url + ("&" if "?" in url else "?") + "timeout=120"
    return url


def _clip(d: dict, sizes: dict[str, int]) -> dict:
    return {k: (v[: sizes[k]] if k in sizes and isinstance(v, str) else v) for k, v in d.items()}


def _scalar(result: Any) -> float | None:
    """Sacred's `run.result` column is a float: keep a run's final eval return there."""
    if isinstance(result, dict):
        result = result.get("eval_return")
    try:
        return None if result is None else float(result)
    except (TypeError, ValueError):
        return None


class RunObserver(SqlObserver):
    """Sacred's SqlObserver that also stores metrics, fits long names into Sacred's column
    sizes (PostgreSQL enforces them), and continues a run's row when the run is resumed."""

    resume_step: int | None = None

    def truncate_after(self, env_step: int) -> None:
        """The run is resumed from env step `env_step`: drop its metrics logged after it."""
        self.resume_step = int(env_step)

    def started_event(self, ex_info, command, host_info, start_time, config, meta_info, _id):
        key = run_key(_id)
        existing = self.session.query(Run).filter_by(run_id=key).first()
        if existing is not None:
            self.run = existing
            existing.status, existing.stop_time, existing.fail_trace = "RUNNING", None, None
            existing.heartbeat = start_time
            if self.resume_step is not None:
                self.session.execute(sa.delete(Metric).where(
                    Metric.run_id == key, Metric.step > self.resume_step))
            self.save()
            return _id
        ex_info = {**ex_info, "base_dir": str(ex_info.get("base_dir", ""))[-64:],
                   "dependencies": [d for d in ex_info.get("dependencies", [])
                                    if len(d.partition("==")[0]) <= 32
                                    and len(d.partition("==")[2]) <= 16]}
        host = _clip(dict(host_info), {"cpu": 64, "hostname": 64, "python_version": 16})
        host["os"] = [str(host_info["os"][0])[:16], str(host_info["os"][1])[:64]]
        super().started_event(ex_info, command[:64], host, start_time, config,
                              {**meta_info, "comment": str(_id)}, key)
        return _id

    def heartbeat_event(self, info, captured_out, beat_time, result):
        super().heartbeat_event(info, captured_out, beat_time, _scalar(result))

    def completed_event(self, stop_time, result):
        info = json.loads(self.run.info or "{}")
        info["result"] = result
        self.run.info = json.dumps(info, default=float)
        super().completed_event(stop_time, _scalar(result))

    def log_metrics(self, metrics_by_name, info):
        rows = [{"run_id": self.run.run_id, "name": name[:64], "step": int(step),
                 "value": float(value), "timestamp": ts}
                for name, m in metrics_by_name.items()
                for step, value, ts in zip(m["steps"], m["values"], m["timestamps"])]
        if rows:
            with self.lock:
                self.session.execute(sa.insert(Metric), rows)
                self.session.commit()


def observer(url: str) -> RunObserver:
    """A SQL observer for `url` (tables are created if missing)."""
    return RunObserver(url)


def ensure_tables(url: str) -> None:
    """Create Sacred's tables and the metrics table once, before parallel runs start."""
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as e:
        raise ConfigError(f"bad database URL '{url}': {e}; e.g. postgresql://user:pw@host/db "
                          "or sqlite:////abs/path.sqlite") from None
    except ImportError as e:
        raise ConfigError(f"no driver for '{url}' ({e}); for PostgreSQL: "
                          "pip install 'worldzoo[postgres]'") from None
    try:
        Base.metadata.create_all(engine)
    except sa.exc.OperationalError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e)
        raise ConfigError(f"cannot use database {engine.url!r}: {reason}") from None
    finally:
        engine.dispose()


def read_runs(url: str, metric_names: tuple[str, ...] | None = None) -> list[dict[str, Any]]:
    """Every run in the database: name, status, config, heartbeat, start_time and metrics
    ({name: {"steps": [...], "values": [...]}}, only `metric_names` when given)."""
    engine = sa.create_engine(url)
    try:
        if not sa.inspect(engine).has_table("run"):
            return []
        Base.metadata.create_all(engine)
        with engine.connect() as conn:
            rt = Run.__table__
            rows = conn.execute(sa.select(rt.c.run_id, rt.c.comment, rt.c.status, rt.c.config,
                                          rt.c.heartbeat, rt.c.start_time)).all()
            q = sa.select(Metric.run_id, Metric.name, Metric.step, Metric.value).order_by(
                Metric.metric_id)
            if metric_names is not None:
                q = q.where(Metric.name.in_(list(metric_names)))
            metrics: dict[str, dict[str, dict[str, list]]] = {}
            for run_id, name, step, value in conn.execute(q):
                m = metrics.setdefault(run_id, {}).setdefault(name, {"steps": [], "values": []})
                m["steps"].append(int(step))
                m["values"].append(float(value))
    finally:
        engine.dispose()
    return [{"name": r.comment or r.run_id, "status": r.status,
             "config": json.loads(r.config or "{}"), "heartbeat": r.heartbeat,
             "start_time": r.start_time, "metrics": metrics.get(r.run_id, {}), "dir": None,
             "store": "sql"} for r in rows]
