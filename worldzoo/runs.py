"""Every training run is a Sacred run: config = resolved recipe + env + seed, metrics indexed by
env steps, stdout captured, checkpoints inside the run directory. `run()` is the Python API
behind `worldzoo run`."""

from __future__ import annotations

import json
import os
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from worldzoo import checkpoint
from worldzoo.config import Config, ConfigError, apply_sets, get_recipe, label

os.environ.setdefault("MUJOCO_GL", "egl")
warnings.filterwarnings("ignore", message="pkg_resources is deprecated")


@dataclass
class RunResult:
    """Where a run lives and what it measured."""

    dir: Path
    result: dict[str, Any] = field(default_factory=dict)

    @property
    def metrics(self) -> dict[str, dict[str, list]]:
        """{name: {"steps": [...], "values": [...]}} from the run's metrics.json."""
        path = self.dir / "metrics.json"
        return json.loads(path.read_text()) if path.exists() else {}


def safe_name(text: str) -> str:
    """A file-name-safe rendering of a label or env id (`dreamerv3[rssm=gaussian]` ->
    `dreamerv3-rssm-gaussian`)."""
    return re.sub(r"[^A-Za-z0-9_.]+", "-", text).strip("-.")[:120] or "run"


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} asked for, but torch sees no CUDA device "
                          "(a CPU-only torch build?); use --device cpu or install a CUDA torch")
    if not (device == "cpu" or device.startswith("cuda") or device == "mps"):
        raise ConfigError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N")
    return device


def check_env(env_id: str, cfg: Config):
    """Build the env once so a bad id or option fails before anything is written; returns its
    (observation space, action space)."""
    from worldzoo.envs import make

    opts = {k: v for k, v in cfg["env"].items() if k != "num_envs"}
    env = make(env_id, seed=0, **opts)
    spaces = env.observation_space, env.action_space
    env.close()
    return spaces


def check_config(env_id: str, cfg: Config) -> None:
    """Everything about a run that can be wrong before it starts: env id and options, the
    pipeline, its train settings and model sizes (the trainer class's `check`, if any)."""
    obs_space, act_space = check_env(env_id, cfg)
    check = getattr(pipeline(cfg), "check", None)
    if check is not None:
        check(cfg, obs_space, act_space)


def _observer(basedir: Path, resume: bool):
    from sacred.observers import FileStorageObserver

    class RunObserver(FileStorageObserver):
        """FileStorageObserver that can continue an existing run directory and writes its
        JSON files atomically (temporary file + rename)."""

        def _make_run_dir(self, _id):
            if resume and _id is not None:
                self.dir = os.path.join(self.basedir, str(_id))
                os.makedirs(self.dir, exist_ok=True)
                return
            super()._make_run_dir(_id)

        def save_json(self, obj, filename):
            checkpoint.write_json_atomic(Path(self.dir) / filename, _jsonable(obj))

    return RunObserver(str(basedir))


def _jsonable(obj):
    from sacred.serializer import flatten

    return flatten(obj)


def _read_metrics(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        raise ConfigError(f"{path} is not valid JSON (was it edited?); restore it or move it "
                          "away to resume without the old metrics") from None


def _truncate_metrics(run_dir: Path, metrics: dict | None, env_step: int) -> None:
    """Drop metrics logged after the checkpoint a resumed run restarts from."""
    if metrics is None:
        return
    for m in metrics.values():
        keep = [i for i, s in enumerate(m["steps"]) if s <= env_step]
        for key in ("steps", "values", "timestamps"):
            m[key] = [m[key][i] for i in keep]
    checkpoint.write_json_atomic(run_dir / "metrics.json", metrics)


def read_run(run_dir: Path) -> dict:
    """The config.json of a run directory, checked."""
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {run_dir}: no such directory; pass a run directory "
                          "under results/runs/")
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise ConfigError(f"--resume {run_dir}: no config.json there; pass a run directory "
                          "under results/runs/ (one that `worldzoo run` made)")
    try:
        meta = json.loads(cfg_path.read_text())
    except ValueError:
        raise ConfigError(f"--resume {run_dir}: config.json is not valid JSON; the run "
                          "cannot be continued (start a new one)") from None
    missing = [k for k in ("env_id", "seed", "steps", "config") if k not in meta]
    if missing:
        raise ConfigError(f"--resume {run_dir}: config.json lacks {', '.join(missing)}; it "
                          "is not a worldzoo run (start a new one)")
    return meta


def checkpoint_step(run_dir: Path) -> int | None:
    """Env step of a run's newest complete checkpoint (None: it has none yet)."""
    root = run_dir / "checkpoints"
    if not checkpoint.has_checkpoint(root):
        return None
    path = checkpoint.latest(root)
    state = checkpoint.load(path)
    try:
        return int(state["counters"]["env_steps"])
    except (KeyError, TypeError):
        found = re.match(r"step(\d+)", path.name)
        if found is None:
            raise checkpoint.CheckpointError(f"checkpoint {path} does not record its env "
                                             "step; it cannot be resumed") from None
        return int(found.group(1))


def _already_finished(run_dir: Path, done: int, steps: int, quiet: bool) -> RunResult:
    """Resuming a finished run does nothing but mark it COMPLETED (it may have been killed
    after its final checkpoint, before Sacred recorded the end)."""
    metrics = _read_metrics(run_dir) or {}
    evals = metrics.get("eval_return", {}).get("values", [])
    result = {"eval_return": evals[-1] if evals else None, "env_steps": done}
    info_path = run_dir / "run.json"
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        info = None
    if isinstance(info, dict) and info.get("status") != "COMPLETED":
        info.update(status="COMPLETED", result=info.get("result") or result)
        checkpoint.write_json_atomic(info_path, info)
    if not quiet:
        print(f"run {run_dir} is already finished ({done} of {steps} env steps); nothing to "
              f"do (pass --steps N with N > {done} to train it further)")
    return RunResult(run_dir, result)


def lock_run(run_dir: Path):
    """Hold the run directory's lock for as long as the returned file stays open, so two
    processes never write one run (the OS drops the lock when its process dies, even by
    SIGKILL: a lock is never stale)."""
    import fcntl

    handle = open(run_dir / ".lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"run {run_dir} is in use by another worldzoo process; wait for it "
                          "to end (or stop it) before resuming") from None
    return handle


def _unique_id(basedir: Path, run_id: str) -> str:
    """`run_id`, or `run_id_2`, `_3`... when that directory exists: never reuse a run dir."""
    candidate, k = run_id, 1
    while (basedir / candidate).exists():
        k += 1
        candidate = f"{run_id}_{k}"
    return candidate


def _results_dir(results: str | Path) -> Path:
    results = Path(results)
    for p in (results, *results.parents):
        if p.exists() and not p.is_dir():
            raise ConfigError(f"--results {results}: {p} is a file, not a directory; pass a "
                              "directory (default results/)")
    return results / "runs"


def pipeline(cfg: Config):
    """The trainer class of a config's `pipeline` (default `dreamer`). Every pipeline takes
    (cfg, env_id, seed, device, run_dir, log, steps, quiet), has `run()`, `restore()` and a
    `before_save` hook (flushes logged metrics: call it before each checkpoint), and logs the
    same metric names against env steps. Optional: a static `check(cfg, obs_space,
    act_space)` raising ConfigError before anything is written, and `close()`."""
    from worldzoo.trainer import Trainer

    table = {"dreamer": Trainer}
    try:
        from worldzoo.worldmodels.trainer import WorldModelsTrainer

        table["worldmodels"] = WorldModelsTrainer
    except ImportError:
        pass
    name = cfg.get("pipeline", "dreamer")
    if name not in table:
        raise ConfigError(f"unknown pipeline '{name}'; known: {', '.join(table)}")
    return table[name]


def _check_cpu_gemm() -> str:
    """The CPU GEMM backend (`worldzoo.gemm`; WORLDZOO_CPU_GEMM), a bad name refused here."""
    from worldzoo import gemm

    try:
        return gemm.cpu_gemm()
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _check_native() -> str:
    """The CPU kernels' state (`worldzoo.native`; WORLDZOO_NATIVE), a bad value or a failed
    build under WORLDZOO_NATIVE=on refused here."""
    from worldzoo import native

    try:
        return native.describe()
    except (ValueError, native.NativeError) as e:
        raise ConfigError(str(e)) from None


def run(recipe: str | None = None, env: str | None = None, *, steps: int | None = None,
        seed: int | None = None, preset: str | None = None,
        sets: list[str] | tuple[str, ...] = (), results: str | Path = "results",
        device: str = "auto", resume: str | Path | None = None,
        quiet: bool = False, observers: list | tuple = (),
        tags: dict | None = None) -> RunResult:
    """Train `recipe` on `env` as a Sacred run under `results/runs/`; or continue the run in
    directory `resume` from its newest checkpoint (from the start when it has none). Everything
    is checked before anything is written. Returns the run's directory and final result.

    `observers`: more Sacred observers beside the run directory (e.g. `sqlstore.observer(url)`);
    one with a `truncate_after(env_step)` method is told where a resumed run restarts.
    `tags`: extra config entries saved with the run (the benchmark harness stores its suite and
    method label there)."""
    from sacred import SETTINGS, Experiment
    from sacred.host_info import host_info_gatherer
    from sacred.utils import apply_backspaces_and_linefeeds

    if steps is not None and (isinstance(steps, bool) or int(steps) < 1):
        raise ConfigError(f"--steps {steps} is out of range; use an int >= 1 (env steps)")
    if seed is not None and (isinstance(seed, bool) or int(seed) < 0):
        raise ConfigError(f"--seed {seed} is out of range; use an int >= 0")
    dev = resolve_device(device)
    if resume is not None:
        given = [n for n, v in (("RECIPE", recipe), ("--env", env), ("--preset", preset),
                                ("--seed", seed)) if v is not None] + (["--set"] if sets else [])
        if given:
            raise ConfigError(f"--resume continues a run with its own recipe and options; "
                              f"drop {', '.join(given)} (only --steps, --device and --quiet "
                              "apply)")
        run_dir = Path(resume)
        meta = read_run(run_dir)
        lock = lock_run(run_dir)
        try:
            done = checkpoint_step(run_dir)
            if steps is not None:
                meta["steps"] = int(steps)
            if done is not None and done >= meta["steps"]:
                with lock:
                    return _already_finished(run_dir, done, meta["steps"], quiet)
            check_config(meta["env_id"], meta["config"])
            metrics = _read_metrics(run_dir)
            _truncate_metrics(run_dir, metrics, -1 if done is None else done)
            for obs in observers:
                if hasattr(obs, "truncate_after"):
                    obs.truncate_after(-1 if done is None else done)
            for stale in [*run_dir.glob(".*.tmp"), *run_dir.glob("checkpoints/.*.tmp")]:
                if stale.is_file():  # a JSON write cut short by the kill
                    stale.unlink()
        except BaseException:
            lock.close()
            raise
        basedir, run_id = run_dir.parent, run_dir.name
    else:
        if recipe is None or env is None:
            raise ConfigError("a run needs a recipe and --env (or --resume RUN_DIR)")
        seed = 0 if seed is None else int(seed)
        cfg = apply_sets(get_recipe(recipe, preset), list(sets))
        check_config(env, cfg)
        run_label = label(recipe, list(sets))
        meta = {"recipe": recipe, "label": run_label, "preset": preset, "sets": list(sets),
                "env_id": env, "seed": seed,
                "steps": int(steps if steps is not None else cfg["train"]["steps"]),
                "config": cfg, **({"tags": dict(tags)} if tags else {})}
        basedir = _results_dir(results)
        run_id = (f"{time.strftime('%Y%m%d-%H%M%S')}_{safe_name(run_label)}_"
                  f"{safe_name(env)}_s{seed}")
        run_id = _unique_id(basedir, run_id)
    from worldzoo.agent import check_precision
    from worldzoo.graphs import check_cuda_graph

    check_precision(meta["config"]["train"].get("precision", "float32"), dev)
    check_cuda_graph(meta["config"], dev)
    _check_cpu_gemm()
    _check_native()
    try:
        basedir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create results directory {basedir}: {e.strerror}; pass "
                          "--results DIR with a writable directory") from None
    SETTINGS.CAPTURE_MODE = "sys"
    # run.json's host.cpu_gemm: the backend of this run's float32 CPU linears
    gemm_info = host_info_gatherer("cpu_gemm")(_check_cpu_gemm)
    # and host.native: whether the C kernels (worldzoo/native.py) run, or why not
    native_info = host_info_gatherer("native")(_check_native)
    ex = Experiment("worldzoo", interactive=True, save_git_info=False,
                    additional_host_info=[gemm_info, native_info])
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    files = _observer(basedir, resume is not None)
    ex.observers.append(files)
    ex.observers.extend(observers)  # Sacred sorts by priority: find the files one by name
    ex.add_config(meta)
    out: dict[str, Any] = {}
    locks: list = [] if resume is None else [lock]

    @ex.main
    def _main(_run, _config):
        conf = json.loads(json.dumps(_config["config"]))
        directory = Path(files.dir)
        locks.append(lock_run(directory) if resume is None else None)
        trainer = pipeline(conf)(conf, _config["env_id"], int(_config["seed"]), dev, directory,
                                 log=_run.log_scalar, steps=_config["steps"], quiet=quiet)
        # Metrics reach metrics.json only from this thread (no heartbeat thread, see below):
        # at log points and before each checkpoint, so a checkpoint never lacks its metrics.
        trainer.before_save = _run._emit_heartbeat
        try:
            if resume is not None and checkpoint.has_checkpoint(directory / "checkpoints"):
                trainer.restore()
            out.update(trainer.run())
        finally:
            _run._emit_heartbeat()
            close = getattr(trainer, "close", None)
            if close is not None:
                close()
        return out

    # beat_interval 0: no background heartbeat thread writing metrics.json concurrently
    try:
        ex.run(options={"--id": run_id, "--beat_interval": "0"})
    finally:
        for handle in locks:
            if handle is not None:
                handle.close()
    return RunResult(basedir / run_id, out)
