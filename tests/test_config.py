import pytest

from worldzoo.config import ConfigError, apply_sets, cast, get_recipe, label, parse_set


def test_recipe_is_resolved_with_every_kwarg():
    cfg = get_recipe("dreamerv1")
    assert cfg["rssm"] == {"name": "gaussian", "stoch": 30, "deter": 200, "hidden": 200,
                           "act": "elu", "norm": "none", "cell": "gru", "min_std": 0.1,
                           "initial": "zeros", "action_clip": 0.0}
    assert cfg["kl"]["free"] == 3.0
    assert cfg["train"]["batch_size"] == 50 and cfg["train"]["horizon"] == 15


def test_presets_apply_and_unknown_preset_fails():
    assert get_recipe("dreamerv1", "debug")["rssm"]["deter"] == 16
    with pytest.raises(ConfigError, match="unknown preset 'huge'.*debug"):
        get_recipe("dreamerv1", "huge")


def test_overrides_cast_to_the_default_type():
    cfg = apply_sets(get_recipe("dreamerv1"), ["rssm.deter=64", "optim.model_lr=1e-3",
                                               "train.eval_video=true", "actor.act=silu"])
    assert cfg["rssm"]["deter"] == 64 and isinstance(cfg["rssm"]["deter"], int)
    assert cfg["optim"]["model_lr"] == 1e-3
    assert cfg["train"]["eval_video"] is True
    assert cfg["actor"]["act"] == "silu"


def test_env_options_parse_without_a_default_type():
    cfg = apply_sets(get_recipe("dreamerv1"), ["env.shadows=true", "env.camera=None",
                                               "env.size=32", "env.obs=pixels",
                                               "env.time_limit=null", "env.flag=False"])
    assert cfg["env"] == {**cfg["env"], "shadows": True, "camera": None, "size": 32,
                          "obs": "pixels", "time_limit": None, "flag": False}


def test_switching_a_variant_keeps_shared_kwargs_and_takes_new_defaults():
    cfg = apply_sets(get_recipe("dreamerv1"), ["rssm.deter=64", "rssm=categorical"])
    assert cfg["rssm"]["name"] == "categorical"
    assert cfg["rssm"]["deter"] == 64          # carried over
    assert cfg["rssm"]["classes"] == 32        # the new variant's default
    assert "min_std" not in cfg["rssm"]        # not a kwarg of the new variant


@pytest.mark.parametrize("item, message", [
    ("rssm=gausian", "unknown variant 'gausian' for slot 'rssm'; known variants"),
    ("rssm.classes=4", "rssm=gaussian has no kwarg 'classes'; it takes: stoch"),
    ("train.batchsize=4", "unknown key 'train.batchsize'; known train keys: .*batch_size"),
    ("rsm.deter=4", "unknown key 'rsm.deter'; known slots"),
    ("rssm.deter=big", "bad value 'big' for rssm.deter: expected int"),
    ("rssm.deter=2.5", "bad value '2.5' for rssm.deter: expected int"),
    ("train.eval_video=maybe", "expected bool"),
    ("nonsense", "malformed --set 'nonsense'; expected KEY=VALUE"),
])
def test_bad_overrides_fail_with_a_clear_message(item, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        apply_sets(get_recipe("dreamerv1"), [item])


def test_unknown_recipe():
    with pytest.raises(ConfigError, match="unknown recipe 'dreamerv9'; known recipes: .*dreamerv1"):
        get_recipe("dreamerv9")


def test_label_and_parse():
    assert label("dreamerv1", []) == "dreamerv1"
    assert label("dreamerv1", ["rssm.stoch=64", "kl=split"]) == "dreamerv1[rssm.stoch=64,kl=split]"
    assert parse_set("a.b = 3") == ("a.b", "3")
    assert cast("1,2", (0, 0), "k") == ("1", "2")


def test_runtime_settings_stay_out_of_labels():
    from worldzoo.config import label, learning_label

    assert label("dreamerv3", ["train.threads=1", "rssm=gaussian"]) == "dreamerv3[rssm=gaussian]"
    assert label("dreamerv3", ["train.threads=1"]) == "dreamerv3"
    assert learning_label("dreamerv3[train.threads=1]") == "dreamerv3"
    assert (learning_label("dreamerv3[train.train_ratio=32,train.threads=1]")
            == "dreamerv3[train.train_ratio=32]")
    assert learning_label("dreamerv1") == "dreamerv1"
