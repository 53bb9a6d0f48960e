"""The Brax backend: one jitted env (make) and the batched vector env (make_vector).

The tests use Brax's own trivial ``fast`` env (compiles in about a second) and a terminating
variant of it registered here; the physics backends are exercised by the slow test and by
``benchmarks/brax_speed.py``.
"""

import importlib.util

import numpy as np
import pytest
from _env_checks import check_contract, train

from worldzoo import envs
from worldzoo.envs import EnvError, make, make_vector

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("brax") is None or importlib.util.find_spec("jax") is None,
    reason="needs pip install 'worldzoo[brax]'")


@pytest.fixture(scope="module", autouse=True)
def fast_done():
    """``fast_done``: Brax's ``fast`` env that terminates once its velocity passes 0.05."""
    from brax import envs as brax_envs
    from brax.envs.fast import Fast

    class FastDone(Fast):
        def step(self, state, action):
            state = super().step(state, action)
            return state.replace(done=(state.obs[1] > 0.05).astype(float))

    brax_envs.register_environment("fast_done", FastDone)
    yield
    brax_envs._envs.pop("fast_done", None)


def test_single_env_contract():
    env = make("brax:fast", seed=0)
    check_contract(env)
    assert env.observation_space["vector"].shape == (2,)
    ob, *_ = env.step(np.ones(1, np.float32))
    assert ob["vector"][1] > 0  # velocity grows with a positive action


def test_vector_env_steps_all_envs_in_one_call():
    vec = make_vector("brax:fast", 4, seed=0)
    assert vec.num_envs == 4 and vec.single_observation_space["vector"].shape == (2,)
    ob, _ = vec.reset()
    assert ob["vector"].shape == (4, 2) and ob["vector"].dtype == np.float32
    actions = np.array([[1.0], [-1.0], [1.0], [-1.0]], np.float32)
    ob, reward, terminated, truncated, info = vec.step(actions)
    assert reward.shape == terminated.shape == truncated.shape == (4,)
    assert info["env_steps"].tolist() == [1, 1, 1, 1] and info["_env_steps"].all()
    assert (ob["vector"][[0, 2], 1] > 0).all() and (ob["vector"][[1, 3], 1] == 0).all()


def test_time_limit_action_repeat_and_next_step_autoreset():
    vec = make_vector("brax:fast", 2, seed=0, time_limit=5, action_repeat=2)
    vec.reset()
    rows = [vec.step(np.ones((2, 1), np.float32)) for _ in range(4)]
    steps = [r[4]["env_steps"].tolist() for r in rows]
    assert steps == [[2, 2], [2, 2], [1, 1], [0, 0]]  # 2 + 2 + 1 = 5, then the reset step
    assert [r[3].tolist() for r in rows] == [[False] * 2, [False] * 2, [True] * 2, [False] * 2]
    assert not any(r[2].any() for r in rows)
    assert np.all(rows[3][0]["vector"] == 0) and np.all(rows[3][1] == 0)  # fresh start
    assert vec.get_attr("episode_index") == (2, 2)


def test_termination_is_not_truncation():
    vec = make_vector("brax:fast_done", 2, seed=0, time_limit=100)
    vec.reset()
    ends = []
    for _ in range(6):
        _, _, terminated, truncated, _ = vec.step(np.array([[1.0], [-1.0]], np.float32))
        ends.append((terminated.tolist(), truncated.tolist()))
    assert ([True, False], [False, False]) in ends  # env 0 runs off, env 1 stays
    single = make("brax:fast_done", seed=0, time_limit=100)
    single.reset()
    flags = [single.step(np.ones(1, np.float32))[2:4] for _ in range(4)]
    assert (True, False) in flags


def test_seeds_and_episode_index_restore():
    a, b = make_vector("brax:fast", 3, seed=7), make_vector("brax:fast", 3, seed=7)
    a.reset(), b.reset()
    assert a.get_attr("episode_index") == (1, 1, 1)
    b.set_attr("episode_index", [5, 6, 7])
    assert b.call("get_episode_index") == (5, 6, 7)
    from worldzoo.envs.brax import BraxVectorEnv
    assert isinstance(a, BraxVectorEnv) and a._seeds(np.array([True, False, True]))[1] == 0


def test_observations_reach_torch_without_a_copy():
    vec = make_vector("brax:fast", 2, seed=0)
    vec.reset()
    ob, *_ = vec.step(np.ones((2, 1), np.float32))
    tensor = vec.torch_obs()["vector"]
    assert tensor.data_ptr() == vec._obs.unsafe_buffer_pointer()
    assert np.array_equal(tensor.numpy(), ob["vector"]) and ob["vector"].flags.writeable


def test_gymnasium_env_checker():
    import warnings

    from gymnasium.utils.env_checker import check_env
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(make("brax:fast", seed=0).unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id, opts, message", [
    ("brax:antt", {}, "unknown brax env 'antt'; did you mean brax:ant"),
    ("brax:ant", {"obs": "pixels"}, "vector observations only"),
    ("brax:ant", {"backend": "euler"}, "backend='euler' is invalid; use one of 'generalized'"),
])
def test_errors_say_what_would_be_right(env_id, opts, message):
    with pytest.raises(EnvError, match=message):
        make(env_id, **opts)


def test_other_backends_have_no_native_vector_env():
    assert make_vector("gym:CartPole-v1", 2, seed=0) is None
    with pytest.raises(EnvError, match="num_envs must be a positive int"):
        make_vector("brax:fast", 0)


def test_missing_dependency_names_the_extra(monkeypatch):
    monkeypatch.setitem(envs.BACKENDS, "brax", envs.Backend(
        "worldzoo.envs.brax", "brax", "test", ("brax", "no_such_jax_xyz")))
    with pytest.raises(EnvError, match=r"needs the optional dependency: "
                                       r"pip install 'worldzoo\[brax\]'"):
        make("brax:ant")


def test_training_updates_on_the_batched_env(tmp_path):
    res = train(tmp_path, "brax:fast", ("env.num_envs=2", "env.time_limit=50"), steps=200)
    assert res.result["env_steps"] == 200  # both envs counted: 100 batched steps
    assert res.metrics["train_length"]["values"] == [50, 50, 50, 50]


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["generalized", "positional", "spring", "mjx"])
def test_physics_backends(backend):
    vec = make_vector("brax:inverted_pendulum", 2, seed=0, backend=backend, time_limit=20)
    ob, _ = vec.reset()
    assert ob["vector"].shape == (2, 4)
    for _ in range(25):
        ob, reward, terminated, truncated, info = vec.step(np.ones((2, 1), np.float32))
    assert np.isfinite(ob["vector"]).all()
