"""The Unity ML-Agents backend against the real ``mlagents_envs.UnityEnvironment``, talking
over loopback gRPC to a small Unity-protocol player written for the tests
(``tests/_unity_player.py``), launched as a built player is (or started as the Editor)."""

import importlib.util
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _env_checks import check_contract, train

from worldzoo import envs
from worldzoo.envs import EnvError, make

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mlagents_envs") is None,
                                reason="needs pip install 'worldzoo[unity]'")
PLAYER = Path(__file__).with_name("_unity_player.py")
# 127.0.0.1 as /proc/net/tcp writes it, and as an IPv4-mapped address in /proc/net/tcp6
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}


def player(tmp_path, *args: str) -> str:
    """A launcher file like a built Unity player (``Name.x86_64``) running the test player."""
    path = tmp_path / f"Player{abs(hash(args)) % 10**6}.x86_64"
    path.write_text(f"#!/bin/sh\nGRPC_VERBOSITY=ERROR exec {sys.executable} {PLAYER} "
                    f"{' '.join(args)} --timeout 60 \"$@\"\n")
    path.chmod(0o755)
    return f"unity:{path}"


@pytest.fixture
def events(tmp_path, monkeypatch):
    """The player's event log (JSON lines) as a function returning the events so far."""
    log = tmp_path / "unity.log"
    monkeypatch.setenv("WORLDZOO_UNITY_LOG", str(log))

    def read(kind=None):
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        return [r for r in rows if kind is None or r["event"] == kind]
    return read


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for name in ("tcp", "tcp6"):
        path = Path("/proc/net") / name
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if int(hex_port, 16) == port and state == "0A":  # LISTEN
                found.add(addr)
    return found


def test_continuous_visual_contract_and_clean_shutdown(tmp_path, events):
    env = make(player(tmp_path, "--visual"), seed=0, obs="both", size=16, time_scale=5.0,
               no_graphics=True, timeout=30)
    ob = check_contract(env, "both", 16)
    assert ob["image"].std() > 0 and env.observation_space["vector"].shape == (3,)
    start = events("start")[0]
    assert {"-nographics", "-batchmode"} <= set(start["unknown"])  # no_graphics reached it
    port = int(start["argv"][start["argv"].index("--mlagents-port") + 1])
    assert listening_addresses(port) and listening_addresses(port) <= LOOPBACK
    assert events("time_scale")[0]["value"] == 5.0
    process = env.unwrapped._env._process
    env.close()
    assert process.wait(timeout=10) == 0 and events("close") == [{"event": "close",
                                                                   "status": 400}]
    deadline = time.monotonic() + 10  # the server socket closes asynchronously
    while listening_addresses(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not listening_addresses(port)


def test_episode_ends_terminal_interrupted_and_other_agents(tmp_path, events):
    env = make(player(tmp_path, "--max-steps", "3"), seed=0, timeout=30)
    ob, _ = env.reset()
    assert ob["vector"].tolist() == [0.0, 0.0, 0.0]
    # agent 1 ends an episode every 2 steps: the followed agent 0 carries on
    rows = [env.step(np.array([0.25], np.float32)) for _ in range(3)]
    assert [r[0]["vector"][0] for r in rows] == [0.25, 0.5, 0.75]
    assert [r[1] for r in rows] == [0.25, 0.5, 0.75]
    assert [r[2:4] for r in rows] == [(False, False), (False, False), (False, True)]  # max step
    ob, _ = env.reset()  # its next episode starts one Unity step later: no scene reset
    assert ob["vector"].tolist() == [0.0, 0.0, 0.0] and len(events("reset")) == 1
    rows = [env.step(np.array([1.0], np.float32)) for _ in range(2)]
    assert [r[2:4] for r in rows] == [(False, False), (True, False)]  # reached 2: terminal
    assert env.reset()[0]["vector"].tolist() == [0.0, 0.0, 0.0]  # sent with the terminal step
    actions = [a for e in events("step") for a in e["actions"]]
    assert [0.25] in actions and [1.0] in actions and [0.0] in actions  # others: zero actions
    env.step(np.array([0.5], np.float32))
    env.reset()  # in mid-episode: the scene is reset
    assert len(events("reset")) == 2
    env.close()


def test_discrete_branches_are_one_discrete_action(tmp_path, events):
    env = make(player(tmp_path, "--actions", "discrete"), seed=0, timeout=30)
    assert env.action_space.n == 6  # branches (3, 2)
    check_contract(env)
    env.reset()
    ob, reward, *_ = env.step(5)  # index 5 = (2, 1): move +0.5
    assert ob["vector"][0] == 0.5 and reward == 0.5
    assert events("step")[-1]["actions"][0] == [2, 1]
    env.close()


def test_behavior_selection(tmp_path):
    launcher = player(tmp_path, "--second-behavior")
    with pytest.raises(EnvError, match=r"behaviours Ball\?team=0, Other\?team=0; pick one "
                                       "with env.behavior=NAME"):
        make(launcher, timeout=30)
    with pytest.raises(EnvError, match="env.behavior='Nope' is not in the Unity scene"):
        make(launcher, behavior="Nope", timeout=30)
    env = make(launcher, behavior="Ball", timeout=30)  # the name without ?team=
    check_contract(env)
    env.close()


def test_editor_mode_on_a_fixed_port(tmp_path, events):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    editor = subprocess.Popen([sys.executable, str(PLAYER), "--mlagents-port", str(port),
                               "--timeout", "30"])
    try:
        env = make("unity:editor", port=port, timeout=30, obs="vector")
        check_contract(env)
        env.close()
        assert editor.wait(timeout=10) == 0
    finally:
        editor.kill()


@pytest.mark.parametrize("env_id, opts, message", [
    ("unity:no/such/Build.x86_64", {}, "Unity player 'no/such/Build.x86_64' not found"),
    ("unity:editor", {"port": 70000}, "port=70000 is invalid"),
    ("unity:editor", {"time_scale": 0}, "time_scale=0 is invalid"),
])
def test_errors_say_what_would_be_right(env_id, opts, message):
    with pytest.raises(EnvError, match=message):
        make(env_id, **opts)


def test_pixels_without_a_camera_is_refused(tmp_path):
    with pytest.raises(EnvError, match="no visual observations; use env.obs=vector"):
        make(player(tmp_path), obs="pixels", timeout=30)


def test_missing_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(envs.BACKENDS, "unity", envs.Backend(
        "worldzoo.envs.unity", "unity", "test", ("no_such_mlagents_xyz",)))
    with pytest.raises(EnvError, match=r"pip install 'worldzoo\[unity\]'"):
        make("unity:editor")


def test_training_updates_with_two_players(tmp_path):
    launcher = player(tmp_path, "--max-steps", "20")
    res = train(tmp_path, launcher, ("env.num_envs=2",), steps=200)
    assert res.metrics["train_return"]["values"]  # episodes finished and were logged
