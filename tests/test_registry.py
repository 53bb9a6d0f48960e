import pytest

from worldzoo import registry
from worldzoo.registry import RegistryError, build, register


def test_every_slot_of_the_design_has_its_variants():
    want = {
        "encoder": {"mlp", "cnn", "multi"}, "decoder": {"mlp", "cnn", "multi", "none"},
        "rssm": {"gaussian", "categorical"}, "kl": {"free_nats", "balanced", "split"},
        "reward": {"normal", "mse"}, "critic": {"normal", "mse"},
        "cont": {"none", "bernoulli"}, "actor": {"dynamics", "reinforce", "mixed"},
        "return_norm": {"none", "percentile"},
        "critic_target": {"none", "slow", "slow_reg"}, "optim": {"adam"},
    }
    for slot, names in want.items():
        assert names <= set(registry.variants(slot)), slot


def test_registering_twice_fails():
    register("kl", "_twice")(lambda: None)
    with pytest.raises(RegistryError, match="already registered"):
        register("kl", "_twice")(lambda: None)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(RegistryError, match="known variants: .*gaussian"):
        registry.lookup("rssm", "gausian")
    with pytest.raises(RegistryError, match="unknown slot 'rsm'; known slots"):
        registry.variants("rsm")


def test_build_checks_kwargs_and_reports_the_known_ones():
    rssm = build("rssm", "gaussian", 8, 2, deter=16, hidden=8, stoch=4)
    assert rssm.feat_dim == 20
    with pytest.raises(RegistryError, match="takes no kwarg 'classes'.*deter"):
        build("rssm", "gaussian", 8, 2, classes=4)


def test_variant_kwargs_are_the_defaulted_parameters():
    kw = registry.variant_kwargs("rssm", "categorical")
    assert kw["stoch"] == 32 and kw["classes"] == 32 and "embed" not in kw
