"""The env contract: ids, spaces, termination vs truncation, action repeat, seeding, errors."""

import importlib.util
import warnings
from functools import partial

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env

from worldzoo import envs
from worldzoo.envs import EnvError, make, parse_id
from worldzoo.envs.wrappers import ActionRepeat, SeedPerEpisode

needs_dmc = pytest.mark.skipif(importlib.util.find_spec("dm_control") is None,
                               reason="needs pip install 'worldzoo[dmc]'")


def rollout(env, actions, reset_seed=None):
    """Observations and rewards of a run of fixed actions, resetting at episode ends."""
    obs, _ = env.reset(seed=reset_seed)
    out = [obs]
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action)
        out.append((obs, reward))
        if terminated or truncated:
            out.append(env.reset()[0])
    return out


def same(a, b) -> bool:
    return gymnasium.utils.env_checker.data_equivalence(a, b)


# ---------------------------------------------------------------- ids


@pytest.mark.parametrize("env_id, expected", [
    ("gym:Pendulum-v1", ("gym", "Pendulum-v1")),
    ("CartPole-v1", ("gym", "CartPole-v1")),
    ("dmc:walker-walk", ("dmc", "walker-walk")),
    ("mujoco:path/to/model.xml", ("mujoco", "path/to/model.xml")),
    pytest.param("walker-walk", ("dmc", "walker-walk"), marks=needs_dmc),
    pytest.param("ball_in_cup-catch", ("dmc", "ball_in_cup-catch"), marks=needs_dmc),
])
def test_parse_id(env_id, expected):
    assert parse_id(env_id) == expected


@needs_dmc
@pytest.mark.parametrize(
    "task", ["ball_in_cup-catch", "cartpole-balance_sparse", "point_mass-easy"])
def test_dmc_split_task_with_underscores(task):
    from worldzoo.envs.dmc import split_task
    domain, name = split_task(task)
    assert f"{domain}-{name}" == task and "-" not in domain


@pytest.mark.parametrize("env_id, message", [
    ("foo:bar", "unknown env suite 'foo'"),
    ("gym:", "has no task"),
    ("nope-nothing", "unknown env id 'nope-nothing'"),
    ("gym:CartPole-v9", "did you mean gym:CartPole-v1"),
    pytest.param("walker_walk", "did you mean dmc:walker-walk", marks=needs_dmc),
    pytest.param("dmc:walker-fly", "walker tasks: run, stand, walk", marks=needs_dmc),
])
def test_bad_ids_say_what_would_be_right(env_id, message):
    with pytest.raises(EnvError, match=message):
        make(env_id)


@needs_dmc
def test_bare_id_known_to_two_suites_is_ambiguous():
    gymnasium.register("walker-walk", entry_point="gymnasium.envs.classic_control:CartPoleEnv")
    try:
        with pytest.raises(EnvError, match="ambiguous.*gym:walker-walk, dmc:walker-walk"):
            parse_id("walker-walk")
    finally:
        del gymnasium.registry["walker-walk"]


# ---------------------------------------------------------------- errors and backends


def test_options_are_validated():
    with pytest.raises(EnvError, match="unknown option.*camera.*known options: obs, size"):
        make("gym:CartPole-v1", camera=1)
    with pytest.raises(EnvError, match="obs='rgb' is invalid; use one of"):
        make("gym:CartPole-v1", obs="rgb")
    with pytest.raises(EnvError, match="action_repeat=0 is invalid"):
        make("gym:CartPole-v1", action_repeat=0)
    with pytest.raises(EnvError, match="size=True is invalid"):
        make("gym:CartPole-v1", size=True)


def test_not_implemented_backend_says_so(monkeypatch):
    monkeypatch.setitem(envs.BACKENDS, "brax", envs.Backend(
        "worldzoo.envs.no_such_adapter", "brax", "test", ("brax",)))
    with pytest.raises(EnvError, match=r"'brax' is not implemented yet.*worldzoo\[brax\]"):
        make("brax:ant")


def test_missing_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(envs.BACKENDS, "dmc", envs.Backend(
        "worldzoo.envs.dmc", "dmc", "test", ("no_such_module_xyz",)))
    with pytest.raises(EnvError, match=r"'dmc' needs the optional dependency: "
                                       r"pip install 'worldzoo\[dmc\]'"):
        make("dmc:walker-walk")


def test_backend_status_lists_every_backend():
    rows = {row["name"]: row for row in envs.backend_status()}
    assert set(rows) == set(envs.BACKENDS) >= {"gym", "dmc", "mujoco", "brax", "unity"}
    assert rows["gym"]["installed"] and rows["gym"]["implemented"]
    assert rows["brax"]["extra"] == "brax" and rows["brax"]["implemented"]


def test_unsupported_action_space_is_refused():
    from worldzoo.envs.gym import GymAdapter

    class MultiBinaryEnv(gymnasium.Env):
        observation_space = spaces.Box(-1, 1, (2,), np.float32)
        action_space = spaces.MultiBinary(3)

    with pytest.raises(EnvError, match="MultiBinary action space; only Box and Discrete"):
        GymAdapter(MultiBinaryEnv())


# ---------------------------------------------------------------- contract

CASES = [
    ("gym:Pendulum-v1", {}),
    ("gym:CartPole-v1", {"obs": "both", "size": 16}),
    pytest.param("dmc:cartpole-balance", {}, marks=needs_dmc),
    pytest.param("dmc:walker-walk", {"obs": "pixels", "size": 16}, marks=needs_dmc),
    pytest.param("dmc:walker-walk", {"obs": "both", "size": 64}, marks=needs_dmc),
]


@pytest.mark.parametrize("env_id, opts", CASES)
def test_contract(env_id, opts):
    env = make(env_id, seed=0, **opts)
    assert isinstance(env, gymnasium.Env) and isinstance(env.observation_space, spaces.Dict)
    keys = {"vector": ["vector"], "pixels": ["image"], "both": ["vector", "image"]}
    assert sorted(env.observation_space.spaces) == sorted(keys[opts.get("obs", "vector")])
    if "vector" in env.observation_space.spaces:
        box = env.observation_space["vector"]
        assert box.dtype == np.float32 and len(box.shape) == 1
    if "image" in env.observation_space.spaces:
        size = opts["size"]
        assert env.observation_space["image"] == spaces.Box(0, 255, (size, size, 3), np.uint8)
    act = env.action_space
    assert isinstance(act, spaces.Discrete) or (
        act.dtype == np.float32 and len(act.shape) == 1 and
        np.all(act.low == -1) and np.all(act.high == 1))
    obs, info = env.reset()
    assert obs in env.observation_space
    for _ in range(3):
        obs, reward, terminated, truncated, info = env.step(act.sample())
        assert obs in env.observation_space and isinstance(reward, float)
        assert isinstance(terminated, bool) and isinstance(truncated, bool)
        assert info["env_steps"] == (2 if env_id.startswith("dmc:") else 1)
    if "image" in obs:
        assert obs["image"].std() > 0, "blank frame: is the Mesa EGL driver installed?"
    env.close()


@pytest.mark.parametrize("env_id", ["gym:Pendulum-v1", "gym:CartPole-v1",
                                    pytest.param("dmc:cartpole-balance", marks=needs_dmc)])
def test_gymnasium_env_checker(env_id):
    env = make(env_id, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite bounds and "env is wrapped" notes
        check_env(env.unwrapped if env_id.startswith("dmc:") else env.env,
                  skip_render_check=True)


def test_gym_box_actions_are_rescaled():
    env = make("gym:Pendulum-v1", seed=0)  # native torque range [-2, 2]
    adapter = env.env.env
    assert np.allclose(adapter._native_action(np.array([-1.0])), [-2.0])
    assert np.allclose(adapter._native_action(np.array([0.5])), [1.0])
    assert np.allclose(adapter._native_action(np.array([3.0])), [2.0])  # clipped


# ---------------------------------------------------------------- episode ends


def test_cartpole_terminates():
    env = make("gym:CartPole-v1", seed=0)
    env.reset()
    for _ in range(200):
        _, _, terminated, truncated, _ = env.step(0)
        if terminated or truncated:
            break
    assert terminated and not truncated


def test_gym_time_limit_in_env_steps():
    env = make("gym:Pendulum-v1", seed=0, time_limit=7, action_repeat=3)
    env.reset()
    ends = [env.step(np.zeros(1, np.float32))[2:] for _ in range(3)]
    assert [(te, tr, i["env_steps"]) for te, tr, i in ends] == [
        (False, False, 3), (False, False, 3), (False, True, 1)]


@needs_dmc
def test_dmc_truncates_at_time_limit():
    env = make("dmc:cartpole-balance", seed=0, time_limit=9)  # repeat 2: 4 x 2 + 1 env steps
    env.reset()
    results = [env.step(np.zeros(1, np.float32))[2:] for _ in range(5)]
    assert [i["env_steps"] for _, _, i in results] == [2, 2, 2, 2, 1]
    assert not any(te or tr for te, tr, _ in results[:-1])
    assert results[-1][:2] == (False, True)


@needs_dmc
def test_dmc_discount_zero_is_terminal(monkeypatch):
    import dm_env
    env = make("dmc:cartpole-balance", seed=0, action_repeat=1).unwrapped
    env.reset()
    obs = env._env.physics.named.data.qpos  # any observation dict works
    monkeypatch.setattr(env._env, "step", lambda a: dm_env.termination(1.0, {"x": obs}))
    assert env.step(np.zeros(1))[1:4] == (1.0, True, False)
    monkeypatch.setattr(env._env, "step", lambda a: dm_env.truncation(1.0, {"x": obs}))
    assert env.step(np.zeros(1))[1:4] == (1.0, False, True)


# ---------------------------------------------------------------- action repeat


class CountingEnv(gymnasium.Env):
    """Reward 1 per step, terminal after 5 steps."""

    observation_space = spaces.Box(0, 10, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(1, self.t, np.float32), 1.0, self.t >= 5, False, {}


def test_action_repeat_sums_rewards_and_stops_at_terminal():
    env = ActionRepeat(CountingEnv(), 3)
    env.reset()
    assert env.step(0)[1:] == (3.0, False, False, {"env_steps": 3})
    assert env.step(0)[1:] == (2.0, True, False, {"env_steps": 2})


def test_action_repeat_equals_repeated_steps():
    actions = [np.array([a], np.float32) for a in (-1.0, 0.3, 1.0)]
    once, four = make("gym:Pendulum-v1", seed=3), make("gym:Pendulum-v1", seed=3, action_repeat=4)
    once.reset(), four.reset()
    for action in actions:
        total = sum(once.step(action)[1] for _ in range(4))
        reward = four.step(action)[1]
        assert reward == pytest.approx(total)


# ---------------------------------------------------------------- seeding


@pytest.mark.parametrize("env_id, opts", [
    ("gym:Pendulum-v1", {"time_limit": 5}),
    pytest.param("dmc:cartpole-balance", {"time_limit": 6}, marks=needs_dmc),
])
def test_same_seed_same_trajectories_over_episodes(env_id, opts):
    actions = [np.array([np.sin(i)], np.float32) for i in range(12)]  # spans 2+ episodes
    a, b, c = (make(env_id, seed=s, **opts) for s in (5, 5, 6))
    run_a, run_b, run_c = rollout(a, actions), rollout(b, actions), rollout(c, actions)
    assert same(run_a, run_b)
    assert not same(run_a[0], run_c[0])
    assert same(run_a[0], make(env_id, **opts).reset(seed=5)[0])  # seed= in make == in reset


@pytest.mark.parametrize("env_id", ["gym:Pendulum-v1",
                                    pytest.param("dmc:cartpole-balance", marks=needs_dmc)])
def test_seed_per_episode_resume(env_id):
    first = make(env_id, seed=11)
    starts = [first.reset()[0] for _ in range(4)]
    assert first.get_episode_index() == 4
    assert not same(starts[2], starts[3])
    resumed = make(env_id, seed=11)
    resumed.set_episode_index(3)
    assert same(resumed.reset()[0], starts[3])


def test_seed_none_draws_a_base_seed_once():
    env = make("gym:Pendulum-v1")
    assert isinstance(env, SeedPerEpisode) and isinstance(env.base_seed, int)
    again = make("gym:Pendulum-v1", seed=env.base_seed)
    assert same(env.reset()[0], again.reset()[0])


# ---------------------------------------------------------------- vector envs


@needs_dmc
def test_sync_vector_env_autoresets_after_truncation():
    fns = [lambda s=s: make("dmc:cartpole-balance", seed=s, time_limit=6) for s in (0, 1)]
    vec = gymnasium.vector.SyncVectorEnv(
        fns, autoreset_mode=gymnasium.vector.AutoresetMode.NEXT_STEP)
    obs, _ = vec.reset()
    assert obs["vector"].shape == (2, 5) and obs["vector"].dtype == np.float32
    truncs = [vec.step(np.zeros((2, 1), np.float32))[3].tolist() for _ in range(4)]
    assert truncs == [[False, False], [False, False], [True, True], [False, False]]
    assert vec.call("get_episode_index") == (2, 2)
    vec.set_attr("episode_index", [7, 9])
    assert vec.call("get_episode_index") == (7, 9)
    vec.close()


def test_async_vector_env_cartpole():
    vec = gymnasium.vector.AsyncVectorEnv(  # spawn, as the driver: JAX may be loaded
        [partial(make, "gym:CartPole-v1", seed=s) for s in (0, 1)],
        autoreset_mode=gymnasium.vector.AutoresetMode.NEXT_STEP, context="spawn")
    obs, _ = vec.reset()
    assert obs["vector"].shape == (2, 4)
    for _ in range(30):
        obs, reward, terminated, truncated, info = vec.step(np.zeros(2, np.int64))
    assert terminated.dtype == bool and set(info["env_steps"].tolist()) <= {0, 1}
    vec.close()
