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


def check_env(env_id: str, cfg: Config) -> None:
    """Build the env once so a bad id or option fails before anything is written."""
    from worldzoo.envs import make

    opts = {k: v for k, v in cfg["env"].items() if k != "num_envs"}
    env = make(env_id, seed=0, **opts)
    env.close()


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


def _truncate_metrics(run_dir: Path, env_step: int) -> None:
    """Drop metrics logged after the checkpoint a resumed run restarts from."""
    path = run_dir / "metrics.json"
    if not path.exists():
        return
    metrics = json.loads(path.read_text())
    for m in metrics.values():
        keep = [i for i, s in enumerate(m["steps"]) if s <= env_step]
        for key in ("steps", "values", "timestamps"):
            m[key] = [m[key][i] for i in keep]
    checkpoint.write_json_atomic(path, metrics)


def pipeline(cfg: Config):
    """The trainer class of a config's `pipeline` (default `dreamer`). Every pipeline takes
    (cfg, env_id, seed, device, run_dir, log, steps, quiet), has `run()`, `restore()` and a
    `before_save` hook, and logs the same metric names against env steps."""
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


def run(recipe: str | None = None, env: str | None = None, *, steps: int | None = None,
        seed: int = 0, preset: str | None = None, sets: list[str] | tuple[str, ...] = (),
        results: str | Path = "results", device: str = "auto", resume: str | Path | None = None,
        quiet: bool = False, observers: list | tuple = (), tags: dict | None = None
        ) -> RunResult:
    """Train `recipe` on `env` as a Sacred run under `results/runs/`; or continue the run in
    directory `resume`. Returns the run's directory and final result.

    `observers`: more Sacred observers beside the run directory (e.g. `sqlstore.observer(url)`);
    one with a `truncate_after(env_step)` method is told where a resumed run restarts.
    `tags`: extra config entries saved with the run (the benchmark harness stores its suite and
    method label there)."""
    from sacred import SETTINGS, Experiment
    from sacred.utils import apply_backspaces_and_linefeeds

    if resume is not None:
        run_dir = Path(resume)
        cfg_path = run_dir / "config.json"
        if not cfg_path.exists():
            raise ConfigError(f"--resume {run_dir}: no config.json there; pass a run directory "
                              "under results/runs/")
        meta = json.loads(cfg_path.read_text())
        ckpt = checkpoint.load(checkpoint.latest(run_dir / "checkpoints"))
        _truncate_metrics(run_dir, int(ckpt["counters"]["env_steps"]))
        for obs in observers:
            if hasattr(obs, "truncate_after"):
                obs.truncate_after(int(ckpt["counters"]["env_steps"]))
        del ckpt
        basedir, run_id = run_dir.parent, run_dir.name
        if steps is not None:
            meta["steps"] = int(steps)
    else:
        if recipe is None or env is None:
            raise ConfigError("a run needs a recipe and --env (or --resume RUN_DIR)")
        cfg = apply_sets(get_recipe(recipe, preset), list(sets))
        check_env(env, cfg)
        run_label = label(recipe, list(sets))
        meta = {"recipe": recipe, "label": run_label, "preset": preset, "sets": list(sets),
                "env_id": env, "seed": int(seed),
                "steps": int(steps if steps is not None else cfg["train"]["steps"]),
                "config": cfg, **({"tags": dict(tags)} if tags else {})}
        basedir = Path(results) / "runs"
        run_id = (f"{time.strftime('%Y%m%d-%H%M%S')}_{safe_name(run_label)}_"
                  f"{safe_name(env)}_s{seed}")
    dev = resolve_device(device)
    basedir.mkdir(parents=True, exist_ok=True)
    SETTINGS.CAPTURE_MODE = "sys"
    ex = Experiment("worldzoo", interactive=True, save_git_info=False)
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    files = _observer(basedir, resume is not None)
    ex.observers.append(files)
    ex.observers.extend(observers)
    ex.add_config(meta)
    out: dict[str, Any] = {}

    @ex.main
    def _main(_run, _config):
        conf = json.loads(json.dumps(_config["config"]))
        directory = Path(files.dir)
        trainer = pipeline(conf)(conf, _config["env_id"], int(_config["seed"]), dev, directory,
                          log=_run.log_scalar, steps=_config["steps"], quiet=quiet)
        trainer.before_save = _run._emit_heartbeat  # flush metrics before each checkpoint
        if resume is not None:
            trainer.restore()
        try:
            out.update(trainer.run())
        finally:
            if hasattr(trainer, "close"):
                trainer.close()  # env processes, simulators, sockets
        return out

    ex.run(options={"--id": run_id})
    return RunResult(basedir / run_id, out)
