"""env.num_envs: N envs in one run (worker processes, or a backend's native vector env), each
env's episodes kept apart in replay, every env's steps counted; Gymnasium-Robotics goal envs;
the backend listing."""

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from _env_checks import check_contract

from worldzoo.envs import EnvError, backend_status, make
from worldzoo.trainer import train_envs

needs_robotics = pytest.mark.skipif(importlib.util.find_spec("gymnasium_robotics") is None,
                                    reason="needs pip install 'worldzoo[robotics]'")


def test_gymnasium_vector_env_for_backends_without_a_native_one():
    import gymnasium
    envs = train_envs("gym:CartPole-v1", {}, 0, 2)
    try:
        assert isinstance(envs, gymnasium.vector.AsyncVectorEnv) and envs.num_envs == 2
        obs, _ = envs.reset()
        assert obs["vector"].shape == (2, 4)
        assert envs.get_attr("episode_index") == (1, 1)
    finally:
        envs.close()


def test_replay_keeps_each_envs_episodes_apart():
    from worldzoo.replay import Replay
    replay = Replay(100, 2, seed=0)
    for t in range(6):  # env 0: episodes of 3 steps; env 1: one long episode
        first = np.array([t % 3 == 0, t == 0], np.float32)
        replay.add({"vector": np.stack([np.full(2, 10 + t), np.full(2, 20 + t)]).astype(
                        np.float32),
                    "action": np.zeros((2, 1), np.float32), "reward": np.zeros(2, np.float32),
                    "is_first": first, "is_last": np.zeros(2, np.float32),
                    "is_terminal": np.zeros(2, np.float32)})
    batch = replay.sample(8, 3, "cpu")
    vec = batch["vector"][..., 0].numpy()
    for row in vec:  # a sequence comes from one env: all 1x or all 2x values, consecutive
        assert (row // 10 == row[0] // 10).all() and (np.diff(row) == 1).all()


# Fetch, Shadow Hand and Franka kitchen fail inside gymnasium-robotics 1.4.2 with mujoco 3.17
# (its set_joint_qpos compares mujoco's joint-type enum with a numpy int); the mazes work.
@needs_robotics
def test_robotics_goal_env_flattened():
    env = make("gym:PointMaze_UMaze-v3", seed=0)
    check_contract(env)
    assert env.observation_space["vector"].shape == (8,)  # achieved 2 + desired 2 + obs 4


@needs_robotics
def test_robotics_goal_env_named_keys():
    env = make("gym:PointMaze_UMaze-v3", seed=0, goal_keys=True)
    assert sorted(env.observation_space.spaces) == [
        "achieved_goal", "desired_goal", "observation", "vector"]
    obs, _ = env.reset()
    assert obs in env.observation_space
    assert np.array_equal(obs["vector"], np.concatenate(
        [obs["achieved_goal"], obs["desired_goal"], obs["observation"]]))


def test_goal_keys_needs_a_dict_observation():
    with pytest.raises(EnvError, match="goal_keys=True needs a dict observation space"):
        make("gym:CartPole-v1", goal_keys=True)


def test_list_shows_every_backend_with_its_extra():
    out = subprocess.run([sys.executable, "-m", "worldzoo", "list"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    section = out.split("env backends:")[1]
    for row in backend_status():
        line = next(x for x in section.splitlines() if x.strip().startswith(row["name"] + " "))
        if row["installed"]:
            assert "installed" in line and "missing" not in line
        else:
            assert f"pip install 'worldzoo[{row['extra']}]'" in line
    assert {r["name"] for r in backend_status()} == {"gym", "dmc", "mujoco", "brax", "unity"}
    assert all(r["implemented"] for r in backend_status())
