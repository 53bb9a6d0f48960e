"""Checkpoints load without code execution, run labels become safe file names, and a run
neither listens on nor connects to the network."""

from __future__ import annotations

import re
import socket
import urllib.request
from pathlib import Path

import pytest

from worldzoo import runs

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("worldzoo", "algorithms", "envs", "benchmarks") if (ROOT / d).exists()
           for p in (ROOT / d).rglob("*.py")]


def test_every_torch_load_is_weights_only():
    calls = []
    for path in SOURCES:
        text = path.read_text()
        for m in re.finditer(r"torch\.load\(", text):
            call = text[m.start(): text.find(")", m.start()) + 1]
            calls.append((path.name, call))
            assert "weights_only=True" in call, f"{path}: {call}"
    assert calls, "no torch.load found: the scan is broken"


@pytest.mark.parametrize("text, expected", [
    ("dreamerv3[rssm=gaussian]", "dreamerv3-rssm-gaussian"),
    ("dreamerv3[rssm=gaussian,kl.free=1.0]", "dreamerv3-rssm-gaussian-kl.free-1.0"),
    ("gym:Pendulum-v1", "gym-Pendulum-v1"),
    ("mujoco:../../etc/passwd", "mujoco-..-..-etc-passwd"),
    ("../..", "run"),
    ("", "run"),
    ("a b\tc\nd", "a-b-c-d"),
    ("wörld/zoo\\x:y*z?<>|\"'", "w-rld-zoo-x-y-z"),
])
def test_safe_name(text, expected):
    name = runs.safe_name(text)
    assert name == expected
    assert re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) and len(name) <= 120


def test_safe_name_is_bounded():
    assert len(runs.safe_name("x" * 1000)) == 120


def test_a_run_uses_no_network(tmp_path, monkeypatch):
    """A whole (tiny) run with every way to listen or connect made to fail."""
    used = []

    def refuse(*args, **kwargs):
        used.append(args)
        raise AssertionError("network use at run time")

    for name in ("bind", "listen", "connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    res = runs.run("dreamerv1", "gym:Pendulum-v1", preset="debug", steps=110, device="cpu",
                   sets=["env.time_limit=50"], results=tmp_path, quiet=True)
    assert res.result["env_steps"] == 110 and not used


def test_no_server_code_in_the_library():
    pattern = re.compile(r"\b(socketserver|http\.server|\.listen\(|\.bind\(|urlopen|requests\.)")
    hits = [f"{p.name}: {m.group(0)}" for p in SOURCES if p.parent.name != "tests"
            for m in pattern.finditer(p.read_text())]
    assert not hits, hits
