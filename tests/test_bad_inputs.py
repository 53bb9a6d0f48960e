"""Every bad input a user can give gets one clear line (what was wrong, what would be right)
and a non-zero exit, with nothing written or overwritten."""

from __future__ import annotations

import importlib.util
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from worldzoo import cli, runs

needs_dmc = pytest.mark.skipif(importlib.util.find_spec("dm_control") is None,
                               reason="needs pip install 'worldzoo[dmc]'")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
RUN = ["run", "dreamerv1", "--env", "gym:Pendulum-v1", "--preset", "debug"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real (tiny) finished run to point eval and --resume at."""
    res = runs.run("dreamerv1", "gym:Pendulum-v1", preset="debug", steps=110, device="cpu",
                   sets=["env.time_limit=50", "train.eval_every=100000"],
                   results=tmp_path_factory.mktemp("results"), quiet=True)
    return res.dir


# -- set-ups: each returns the placeholders its argv uses; they run in the case's tmp dir ------
def copy_run(tmp: Path, run: Path) -> Path:
    dst = tmp / "results" / "runs" / run.name
    shutil.copytree(run, dst)
    return dst


def ckpt_of(run: Path) -> Path:
    return run / "checkpoints" / json.loads((run / "checkpoints/latest.json").read_text())["name"]


def run_copy(tmp, run):
    return {"run": copy_run(tmp, run)}


def no_checkpoints(tmp, run):
    dst = copy_run(tmp, run)
    shutil.rmtree(dst / "checkpoints")
    return {"run": dst}


def truncated_state(tmp, run):
    dst = copy_run(tmp, run)
    state = ckpt_of(dst) / "state.pt"
    state.write_bytes(state.read_bytes()[:1000])
    return {"run": dst, "ckpt": ckpt_of(dst)}


class Exploit:
    """Unpickling this would create a file: weights_only loading must refuse it."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def malicious_state(tmp, run):
    dst = copy_run(tmp, run)
    marker = tmp / "pwned"
    with open(ckpt_of(dst) / "state.pt", "wb") as f:
        pickle.dump({"agent": Exploit(str(marker))}, f)
    return {"run": dst, "marker": marker}


def incomplete_ckpt(tmp, run):
    dst = copy_run(tmp, run)
    (ckpt_of(dst) / "COMPLETE").unlink()
    return {"run": dst, "ckpt": ckpt_of(dst)}


def other_config(tmp, run):
    dst = copy_run(tmp, run)
    meta = json.loads((dst / "config.json").read_text())
    meta["config"]["rssm"]["deter"] = 24
    (dst / "config.json").write_text(json.dumps(meta))
    return {"run": dst}


def corrupt_config(tmp, run):
    dst = copy_run(tmp, run)
    (dst / "config.json").write_text('{"env_id": "gym:Pendulum-v1", "conf')
    return {"run": dst}


def foreign_config(tmp, run):
    dst = copy_run(tmp, run)
    (dst / "config.json").write_text('{"lr": 0.1}')
    return {"run": dst}


def corrupt_metrics(tmp, run):
    dst = copy_run(tmp, run)
    (dst / "metrics.json").write_text('{"eval_return": {"steps": [1')
    return {"run": dst}


HELD = []  # locks held by a case's set-up, as a live run holds its own


def run_in_use(tmp, run):
    dst = copy_run(tmp, run)
    HELD.append(runs.lock_run(dst))
    return {"run": dst}


def empty_dir(tmp, run):
    (tmp / "empty").mkdir()
    return {"empty": tmp / "empty"}


def a_file(tmp, run):
    (tmp / "afile").write_text("not a directory\n")
    return {"file": tmp / "afile"}


CASES = [
    # -- command line
    ("no-command", [], "the following arguments are required: COMMAND", None),
    ("unknown-command", ["train"],
     "invalid choice: 'train' .*choose from 'run', 'list', 'eval'", None),
    ("unknown-flag", [*RUN, "--stepz", "5"], r"unrecognized arguments: --stepz 5", None),
    ("run-without-recipe", ["run"], "run needs RECIPE and --env ENV", None),
    ("run-without-env", ["run", "dreamerv1"], "run needs RECIPE and --env ENV", None),
    ("steps-not-int", [*RUN, "--steps", "abc"], "argument --steps: invalid int value: 'abc'",
     None),
    ("steps-zero", [*RUN, "--steps", "0"], r"--steps 0 is out of range; use an int >= 1", None),
    ("seed-negative", [*RUN, "--seed", "-3"], r"--seed -3 is out of range; use an int >= 0",
     None),
    ("device-unknown", [*RUN, "--device", "tpu"], "unknown device 'tpu'; use auto, cpu, cuda",
     None),
    pytest.param("device-cuda-missing", [*RUN, "--device", "cuda"],
                 "torch sees no CUDA device .*use --device cpu", None, marks=no_cuda),
    ("episodes-zero", ["eval", "{run}", "--episodes", "0"], r"--episodes must be >= 1, got 0",
     run_copy),
    # -- recipes
    ("recipe-unknown", ["run", "dreamerv9", "--env", "gym:Pendulum-v1"],
     "unknown recipe 'dreamerv9'; known recipes: .*dreamerv1", None),
    ("preset-unknown", [*RUN[:4], "--preset", "huge"],
     "unknown preset 'huge' for dreamerv1; known presets: debug, paper, small", None),
    # -- --set
    ("set-no-equals", [*RUN, "--set", "rssm"], "malformed --set 'rssm'; expected KEY=VALUE",
     None),
    ("set-no-key", [*RUN, "--set", "=gaussian"], "malformed --set '=gaussian'", None),
    ("set-unknown-key", [*RUN, "--set", "foo=bar"], "unknown key 'foo'; known slots: .*rssm",
     None),
    ("set-unknown-variant", [*RUN, "--set", "rssm=lstm"],
     "unknown variant 'lstm' for slot 'rssm'; known variants: gaussian, categorical", None),
    ("set-unknown-kwarg", [*RUN, "--set", "rssm.units=3"],
     "rssm=gaussian has no kwarg 'units'; it takes: .*deter", None),
    ("set-bad-int", [*RUN, "--set", "rssm.deter=abc"],
     "bad value 'abc' for rssm.deter: expected int", None),
    ("set-float-for-int", [*RUN, "--set", "train.batch_size=1.5"],
     "bad value '1.5' for train.batch_size: expected int", None),
    ("set-unknown-train-key", [*RUN, "--set", "train.nokey=1"],
     "unknown key 'train.nokey'; known train keys: .*batch_size", None),
    ("set-batch-zero", [*RUN, "--set", "train.batch_size=0"],
     r"train.batch_size=0 is out of range; use an int >= 1", None),
    ("set-gamma-range", [*RUN, "--set", "train.gamma=1.5"],
     r"train.gamma=1.5 is out of range; use a float in \(0, 1\]", None),
    ("plot-merge-without-runs", ["plot", "--merge"], "--merge needs --runs DIR", None),
    ("plot-label-without-runs", ["plot", "--label", "new"], "--label needs --runs DIR", None),
    ("plot-method-without-runs", ["plot", "--method", "x"], "--method needs --runs DIR", None),
    ("set-precision-unknown", [*RUN, "--set", "train.precision=float16"],
     "train.precision='float16' is out of range; use one of float32, bfloat16", None),
    ("set-precision-world-models", ["run", "worldmodels", "--env", "gym:CartPole-v1", "--preset",
                                    "debug", "--set", "train.precision=bfloat16"],
     "World Models trains in float32", None),
    ("set-cuda-graph-cpu", [*RUN, "--device", "cpu", "--set", "train.cuda_graph=true"],
     "train.cuda_graph=true needs a CUDA device, not cpu", None),
    ("set-cuda-graph-world-models", ["run", "worldmodels", "--env", "gym:CartPole-v1",
                                     "--preset", "debug", "--set", "train.cuda_graph=true"],
     "World Models has no Dreamer update to capture", None),
    ("set-eval-policy-unknown", [*RUN, "--set", "train.eval_policy=greedy"],
     "train.eval_policy='greedy' is out of range; use one of mode, sample", None),
    ("set-eval-policy-world-models", ["run", "worldmodels", "--env", "gym:CartPole-v1",
                                      "--preset", "debug", "--set", "train.eval_policy=sample"],
     "the World Models controller is deterministic", None),
    ("set-storage-unknown", [*RUN, "--set", "train.replay_storage=tape"],
     "train.replay_storage='tape' is out of range; use one of memory, disk", None),
    ("set-replay-too-small", [*RUN, "--set", "train.replay_capacity=4"],
     "train.replay_capacity=4 holds fewer than batch_length", None),
    ("set-negative-size", [*RUN, "--set", "rssm.deter=-5"],
     "cannot build the model from this config .*must be positive", None),
    ("set-num-envs-zero", [*RUN, "--set", "env.num_envs=0"],
     "env.num_envs=0 is invalid; use an int >= 1", None),
    # -- env ids
    ("env-unknown-suite", [*RUN[:2], "--env", "foo:bar"],
     "unknown env suite 'foo' in 'foo:bar'; known suites: gym, dmc", None),
    ("env-no-task", [*RUN[:2], "--env", "gym:"], "env id 'gym:' has no task", None),
    ("env-unknown-id", [*RUN[:2], "--env", "nope-nothing"],
     "unknown env id 'nope-nothing'.*write suite:task", None),
    ("env-typo", [*RUN[:2], "--env", "gym:CartPole-v9"], "did you mean gym:CartPole-v1", None),
    ("env-brax-unknown", [*RUN[:2], "--env", "brax:antt"],
     "unknown brax env 'antt'; did you mean brax:ant", None),
    ("env-unity-missing-player", [*RUN[:2], "--env", "unity:/nonexistent/Build.x86_64"],
     "Unity player '/nonexistent/Build.x86_64' not found", None),
    pytest.param("env-dmc-task-unknown", [*RUN[:2], "--env", "dmc:walker-fly"],
                 "unknown dm_control task 'walker-fly'.*walker tasks: run, stand, walk", None,
                 marks=needs_dmc),
    # -- backend options
    ("env-obs-invalid", [*RUN, "--set", "env.obs=rgb"],
     "env option obs='rgb' is invalid; use one of 'vector', 'pixels', 'both'", None),
    ("env-option-unknown", [*RUN, "--set", "env.camera=1"],
     "unknown option.*camera for env backend 'gym'; known options: obs, size", None),
    ("env-size-zero", [*RUN, "--set", "env.size=0"], "env option size=0 is invalid", None),
    ("env-repeat-zero", [*RUN, "--set", "env.action_repeat=0"],
     "env option action_repeat=0 is invalid; use a positive int", None),
    ("env-time-limit-negative", [*RUN, "--set", "env.time_limit=-1"],
     "env option time_limit=-1 is invalid", None),
    pytest.param("env-dmc-camera-range", [*RUN[:2], "--env", "dmc:cartpole-balance",
                                          "--set", "env.camera=9"],
                 "camera=9 is out of range for dmc:cartpole-balance; it has cameras 0..1", None,
                 marks=needs_dmc),
    # -- checkpoints (eval)
    ("eval-missing-path", ["eval", "{tmp}/nope"], "no such run or checkpoint: .*nope", None),
    ("eval-not-a-run", ["eval", "{empty}"], "is not inside a run directory .*config.json",
     empty_dir),
    ("eval-no-checkpoint", ["eval", "{run}"], "no complete checkpoint in .*checkpoints",
     no_checkpoints),
    ("eval-truncated-checkpoint", ["eval", "{ckpt}"],
     "cannot read checkpoint .*state.pt.*corrupt or not a worldzoo checkpoint", truncated_state),
    ("eval-code-in-checkpoint", ["eval", "{run}"],
     "cannot read checkpoint .*only tensors and plain data load, never code", malicious_state),
    ("eval-incomplete-checkpoint", ["eval", "{ckpt}"],
     "checkpoint .* is incomplete \\(no COMPLETE marker", incomplete_ckpt),
    ("eval-checkpoint-other-config", ["eval", "{run}"],
     "checkpoint .* does not fit the run's config .*load it with the run", other_config),
    ("eval-corrupt-config", ["eval", "{run}"], "config.json is corrupt or not a worldzoo run",
     corrupt_config),
    ("eval-video-type", ["eval", "{run}", "--video", "{tmp}/out.avi"],
     "unknown video type '.avi'; use a name ending in .mp4 or .gif", run_copy),
    ("eval-video-dir", ["eval", "{run}", "--video", "{tmp}/no/such/dir/out.mp4"],
     "directory .*no/such/dir does not exist", run_copy),
    ("eval-env-unknown", ["eval", "{run}", "--env", "foo:bar"], "unknown env suite 'foo'",
     run_copy),
    # -- resume
    ("resume-missing", ["run", "--resume", "{tmp}/nope"], "--resume .*nope: no such directory",
     None),
    ("resume-not-a-run", ["run", "--resume", "{empty}"], "no config.json there", empty_dir),
    ("resume-with-recipe", ["run", "dreamerv1", "--resume", "{run}"],
     "--resume continues a run with its own recipe and options; drop RECIPE", run_copy),
    ("resume-with-set", ["run", "--resume", "{run}", "--set", "train.batch_size=8"],
     "drop --set \\(only --steps, --device and --quiet apply\\)", run_copy),
    ("resume-corrupt-config", ["run", "--resume", "{run}"], "config.json is not valid JSON",
     corrupt_config),
    ("resume-foreign-config", ["run", "--resume", "{run}"],
     "config.json lacks env_id, seed, steps, config; it is not a worldzoo run", foreign_config),
    ("resume-corrupt-metrics", ["run", "--resume", "{run}", "--steps", "500"],
     "metrics.json is not valid JSON", corrupt_metrics),
    ("resume-corrupt-checkpoint", ["run", "--resume", "{run}", "--steps", "500"],
     "cannot read checkpoint .*corrupt", truncated_state),
    ("resume-run-in-use", ["run", "--resume", "{run}", "--steps", "500"],
     "run .* is in use by another worldzoo process; wait for it to end", run_in_use),
    # -- result dirs
    ("results-is-file", [*RUN, "--results", "{file}"],
     "--results .*afile is a file, not a directory", a_file),
    ("results-under-file", [*RUN, "--results", "{file}/sub"],
     "afile is a file, not a directory", a_file),
]


def case_name(case) -> str:
    return case.values[0] if hasattr(case, "marks") else case[0]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every file under root with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


@pytest.mark.parametrize("name, argv, message, setup", CASES, ids=map(case_name, CASES))
def test_bad_input(name, argv, message, setup, tmp_path, monkeypatch, capsys, finished_run):
    import re

    monkeypatch.chdir(tmp_path)  # the default results/ would land here
    subs = {"tmp": tmp_path, **(setup(tmp_path, finished_run) if setup else {})}
    argv = [a.format(**subs) for a in argv]
    before = tree(tmp_path)
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    finally:
        while HELD:
            HELD.pop().close()
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.strip()]
    assert code not in (0, None), err
    assert len(lines) == 1, err
    assert lines[0].startswith("worldzoo"), err
    assert re.search(message, lines[0]), lines[0]
    assert tree(tmp_path) == before, "a bad input wrote or changed files"
    if "marker" in subs:
        assert not Path(subs["marker"]).exists(), "code in a checkpoint was executed"
    assert "Traceback" not in err


def test_there_are_at_least_30_bad_inputs():
    assert len(CASES) >= 30
    assert len(set(map(case_name, CASES))) == len(CASES)


def test_run_id_never_reuses_a_directory(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x_2").mkdir()
    assert runs._unique_id(tmp_path, "x") == "x_3" and runs._unique_id(tmp_path, "y") == "y"


def test_cuda_graph_refuses_a_host_counting_optimiser():
    """LaProp counts its steps on the host: a graph would replay its first step size."""
    from worldzoo.config import ConfigError, apply_sets, get_recipe
    from worldzoo.graphs import check_cuda_graph

    cfg = apply_sets(get_recipe("dreamerv3_2024", "debug"), ["train.cuda_graph=true"])
    with pytest.raises(ConfigError, match="cannot capture optim=laprop"):
        check_cuda_graph(cfg, "cuda")
    check_cuda_graph(apply_sets(get_recipe("dreamerv3", "debug"), ["train.cuda_graph=true"]),
                     "cuda")


def test_cuda_graph_is_not_a_method_difference():
    """Graphed runs make the eager run's updates: same label, same config id as runs made
    before the key existed."""
    from worldzoo.config import apply_sets, config_id, get_recipe, label, resolve

    cfg = resolve(get_recipe("dreamerv3", "small"))
    before = {**cfg, "train": {k: v for k, v in cfg["train"].items() if k != "cuda_graph"}}
    graphed = resolve(apply_sets(get_recipe("dreamerv3", "small"), ["train.cuda_graph=true"]))
    assert config_id(cfg) == config_id(before) == config_id(graphed)
    assert label("dreamerv3", ["train.cuda_graph=true"]) == "dreamerv3"
