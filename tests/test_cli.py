"""CLI error paths: one clear line on stderr, a non-zero exit, no traceback, nothing written."""

import subprocess
import sys

import pytest

from worldzoo.cli import main


@pytest.mark.parametrize("argv, message", [
    (["run", "dreamerv9", "--env", "gym:Pendulum-v1"], "unknown recipe 'dreamerv9'; known recipes"),
    (["run", "dreamerv1", "--env", "dmc:walker-wlk"], "walker-wlk"),
    (["run", "dreamerv1", "--env", "foo:bar"], "foo"),
    (["run", "dreamerv1", "--env", "gym:Pendulum-v1", "--set", "rssm=gausian"],
     "unknown variant 'gausian' for slot 'rssm'"),
    (["run", "dreamerv1", "--env", "gym:Pendulum-v1", "--set", "rssm"], "malformed --set 'rssm'"),
    (["run", "dreamerv1", "--env", "gym:Pendulum-v1", "--set", "rssm.clases=3"],
     "has no kwarg 'clases'"),
    (["run", "dreamerv1", "--env", "gym:Pendulum-v1", "--set", "env.obz=pixels"], "obz"),
    (["run", "dreamerv1", "--env", "gym:Pendulum-v1", "--preset", "huge"], "unknown preset 'huge'"),
    (["run", "dreamerv1", "--env", "gym:Pendulum-v1", "--device", "tpu"], "unknown device 'tpu'"),
    (["run", "dreamerv1"], "run needs RECIPE and --env"),
    (["run", "--resume", "/nonexistent/run"], "no such directory"),
    (["eval", "/nonexistent/run"], "no such run or checkpoint"),
    (["run", "dreamerv1", "--env", "brax:antt"], "brax"),  # unknown env, or the extra
])
def test_bad_input_gives_one_clear_line(argv, message, capsys, tmp_path):
    code = main([*argv, "--results", str(tmp_path)] if argv[0] == "run" else argv)
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("worldzoo: error: ") and message in err, err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing written


def test_corrupt_checkpoint_is_reported(tmp_path, capsys):
    run = tmp_path / "runs" / "x"
    (run / "checkpoints" / "step1").mkdir(parents=True)
    (run / "config.json").write_text(
        '{"env_id": "gym:Pendulum-v1", "seed": 0, "steps": 1, "config": {"env": {}}}')
    (run / "checkpoints" / "latest.json").write_text('{"name": "step1"}')
    (run / "checkpoints" / "step1" / "COMPLETE").write_text("ok")
    (run / "checkpoints" / "step1" / "state.pt").write_bytes(b"not a checkpoint")
    assert main(["eval", str(run)]) == 2
    assert "cannot read checkpoint" in capsys.readouterr().err


def test_list_shows_recipes_slots_and_backends(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "dreamerv1" in out and "rssm" in out and "gaussian, categorical" in out
    assert "dmc" in out and "installed" in out


def test_help_of_every_command():
    for cmd in ([], ["run"], ["eval"], ["list"], ["compare"]):
        out = subprocess.run([sys.executable, "-m", "worldzoo", *cmd, "--help"],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0 and "usage: worldzoo" in out.stdout
