"""The MuJoCo backend (mujoco:model.xml|.mjb) and gymnasium's MuJoCo ids through gym:."""

import importlib.util
import textwrap
import warnings

import numpy as np
import pytest
from _env_checks import check_contract, train
from gymnasium.utils.env_checker import check_env, data_equivalence

from worldzoo.envs import EnvError, make

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mujoco") is None,
                                reason="needs pip install 'worldzoo[mujoco]'")
CRAWLER = "mujoco:crawler"


@pytest.mark.parametrize("opts", [
    {}, {"obs": "pixels", "size": 32, "camera": "side"},
    {"obs": "both", "size": 16, "camera": "track"}, {"obs": "pixels", "size": 16, "camera": 0}])
def test_contract(opts):
    env = make(CRAWLER, seed=0, **opts)
    ob = check_contract(env, opts.get("obs", "vector"), opts.get("size", 64))
    if "vector" in ob:  # qpos (7) + qvel (7) + sensors: velocimeter (3) + gyro (3)
        assert ob["vector"].shape == (20,)
    if "image" in ob:
        assert ob["image"].std() > 0, "blank frame: is the Mesa EGL driver installed?"
    env.close()


def test_path_and_mjb_load_the_same_model(tmp_path):
    import mujoco

    from worldzoo.envs.mujoco import ASSETS
    xml = ASSETS / "crawler.xml"
    mjb = tmp_path / "crawler.mjb"
    mujoco.mj_saveModel(mujoco.MjModel.from_xml_path(str(xml)), str(mjb), None)
    a, b = make(f"mujoco:{xml}", seed=4), make(f"mujoco:{mjb}", seed=4)
    actions = [np.full(4, np.sin(i), np.float32) for i in range(5)]
    assert data_equivalence([a.reset()[0]] + [a.step(x)[:2] for x in actions],
                            [b.reset()[0]] + [b.step(x)[:2] for x in actions])


def test_gymnasium_env_checker():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite observation bounds
        check_env(make(CRAWLER, seed=0).unwrapped, skip_render_check=True)


def test_frame_skip_and_default_reward():
    env = make(CRAWLER, seed=0, frame_skip=3)
    env.reset()
    sim = env.unwrapped
    x0 = sim.data.subtree_com[0, 0]
    action = np.array([1.0, -1.0, 0.5, 0.0], np.float32)
    _, reward, *_ = env.step(action)
    dt = 3 * sim.model.opt.timestep
    assert sim.data.time == pytest.approx(dt)
    velocity = (sim.data.subtree_com[0, 0] - x0) / dt  # ctrlrange [-1, 1]: ctrl = action
    assert reward == pytest.approx(velocity - 1e-3 * np.sum(action ** 2), rel=1e-5)


@pytest.fixture
def callables(tmp_path, monkeypatch):
    (tmp_path / "my_crawler_fns.py").write_text(textwrap.dedent("""
        import numpy as np

        def height(model, data, action):
            return float(data.qpos[1])

        def fell(model, data):
            return bool(data.qpos[1] < -0.05)

        def lifted(model, data, rng):
            data.qpos[1] = 0.5 + rng.uniform(0, 0.01)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    return {"reward": "my_crawler_fns:height", "terminate": "my_crawler_fns:fell",
            "reset": "my_crawler_fns:lifted"}


def test_reward_termination_and_reset_callables(callables):
    env = make(CRAWLER, seed=0, time_limit=200, **callables)
    ob, _ = env.reset()
    assert 0.5 <= ob["vector"][1] <= 0.51  # qpos[1] (rootz) from the reset callable
    rewards, ends = [], None
    for _ in range(200):  # it falls from 0.5 m onto the floor: the terminate callable fires
        ob, reward, terminated, truncated, _ = env.step(np.zeros(4, np.float32))
        rewards.append(reward)
        if terminated or truncated:
            ends = (terminated, truncated)
            break
    assert ends == (True, False)
    assert rewards[-1] == pytest.approx(float(ob["vector"][1]))


def test_time_limit_truncates():
    env = make(CRAWLER, seed=0, time_limit=4)
    env.reset()
    flags = [env.step(np.zeros(4, np.float32))[2:4] for _ in range(4)]
    assert flags == [(False, False)] * 3 + [(False, True)]


def test_same_seed_same_episodes():
    actions = [np.full(4, np.cos(i), np.float32) for i in range(6)]

    def run(seed):
        env = make(CRAWLER, seed=seed, time_limit=3)
        out = [env.reset()[0]]
        for a in actions:
            ob, r, te, tr, _ = env.step(a)
            out.append((ob, r))
            if te or tr:
                out.append(env.reset()[0])
        return out

    assert data_equivalence(run(1), run(1))
    assert not data_equivalence(run(1)[0], run(2)[0])


@pytest.mark.parametrize("env_id, opts, message", [
    ("mujoco:no/such/model.xml", {}, "not found; give a path to an MJCF .xml or compiled .mjb"),
    (CRAWLER, {"camera": "front"}, "camera='front' is not a camera of this model; cameras: "
                                   "side, or 'track'"),
    (CRAWLER, {"camera": 3}, "camera=3 is out of range"),
    (CRAWLER, {"reward": "upright"}, "reward='upright' is invalid; use None or 'module:function'"),
    (CRAWLER, {"reward": "no_such_module_xyz:f"}, "cannot import module 'no_such_module_xyz'"),
    (CRAWLER, {"terminate": "numpy:no_such_fn"}, "module 'numpy' has no function 'no_such_fn'"),
    (CRAWLER, {"frame_skip": 0}, "frame_skip=0 is invalid"),
])
def test_errors_say_what_would_be_right(env_id, opts, message):
    with pytest.raises(EnvError, match=message):
        make(env_id, **opts)


def test_bad_models_are_refused(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_text("<mujoco><worldbody><geom type='sphere'/></worldbody>")
    with pytest.raises(EnvError, match="mujoco could not load"):
        make(f"mujoco:{broken}")
    passive = tmp_path / "passive.xml"
    passive.write_text("<mujoco><worldbody><body><freejoint/><geom size='.1'/></body>"
                       "</worldbody></mujoco>")
    with pytest.raises(EnvError, match="no actuators"):
        make(f"mujoco:{passive}")


def test_gymnasium_mujoco_ids_work_through_gym():
    env = make("gym:Walker2d-v5", seed=0)
    check_contract(env)
    assert env.observation_space["vector"].shape == (17,)
    pixels = make("gym:Walker2d-v5", seed=0, obs="pixels", size=32)
    assert check_contract(pixels, "pixels", 32)["image"].std() > 0


def test_training_with_two_env_processes_counts_every_env(tmp_path):
    """num_envs=2 on a backend without a native vector env: gymnasium's AsyncVectorEnv."""
    res = train(tmp_path, CRAWLER, ("env.num_envs=2", "env.time_limit=50"), steps=200)
    m = res.metrics
    assert res.result["env_steps"] == 200  # 2 envs x 2 episodes x 50 steps
    assert m["train_length"]["values"] == [50, 50, 50, 50]  # each env's episodes apart
    assert m["policy_steps"]["values"][-1] >= 200
