"""worldzoo.native and the C posterior unroll (rssm_native): the kernels give the PyTorch fused
unroll's samples, values and gradients in float32 (another summation order and exp, so to
float32 rounding), imagination's C sample draws what `dists.sample_onehot` draws, and
WORLDZOO_NATIVE is honoured. Skipped where no C compiler (or no MKL) is there."""

from __future__ import annotations

import pytest
import torch
from _fakes import categorical_rssm, fake_batch, spaces, trained_params

from worldzoo import native
from worldzoo.components import rssm_fused, rssm_native
from worldzoo.components.rssm import CategoricalRSSM
from worldzoo.dists import sample_onehot

needs_kernels = pytest.mark.skipif(not native.available("observe"),
                                   reason="no C compiler or no MKL: the PyTorch path runs")


def _run(rssm, use_c: bool, monkeypatch, retain: bool = False):
    monkeypatch.setattr(rssm_native, "ENABLED", use_c)
    g = torch.Generator().manual_seed(1)
    B, T = 3, 9
    embed = torch.randn(B, T, 6, generator=g, requires_grad=True)
    action = (1.5 * torch.randn(B, T, 2, generator=g)).requires_grad_()
    is_first = torch.zeros(B, T, dtype=torch.bool)
    is_first[:, 0] = True
    is_first[1, 4] = is_first[2, 6] = True  # episodes starting mid-sequence
    wd, wl, ws = (torch.randn(B, T, *s, generator=g) for s in ((8,), (4, 5), (20,)))
    rssm.zero_grad()
    torch.manual_seed(7)
    post, prior = rssm.observe(embed, action, is_first)
    node = post["deter"].grad_fn.name()
    loss = ((post["deter"] * wd).sum() + (post["logits"] * wl).sum()
            + (post["stoch"] * ws).sum() + (prior["logits"] * wl).sum()
            + rssm.kl(post, prior).pow(2).sum())
    loss.backward(retain_graph=retain)
    grads = {n: p.grad.clone() for n, p in rssm.named_parameters() if p.grad is not None}
    grads.update(embed=embed.grad.clone(), action=action.grad.clone())
    if retain:  # a second backward through the kept graph adds the same gradients again
        loss.backward()
        torch.testing.assert_close(embed.grad, 2 * grads["embed"])
    return node, post, grads


@needs_kernels
@pytest.mark.parametrize("unimix,initial,act,norm", [
    (0.01, "learned", "silu", "layer"),  # DreamerV3
    (0.0, "zeros", "elu", "none"),       # DreamerV2: ELU blocks with biases, no LayerNorm
    (0.1, "zeros", "silu", "none"),
])
def test_c_unroll_matches_the_pytorch_unroll(monkeypatch, unimix, initial, act, norm):
    rssm = categorical_rssm(unimix, initial, act, norm)
    ref_node, ref_post, ref = _run(rssm, False, monkeypatch)
    node, post, got = _run(rssm, True, monkeypatch, retain=True)
    assert ref_node.startswith("_Observe") and node.startswith("NativeObserve")
    assert torch.equal(post["stoch"], ref_post["stoch"])  # the same samples
    for key in ("deter", "logits"):
        torch.testing.assert_close(post[key], ref_post[key], rtol=1e-5, atol=1e-6)
    assert got.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-4, atol=1e-5, msg=name)


@needs_kernels
def test_c_unroll_only_where_it_applies(monkeypatch):
    rssm = categorical_rssm(0.01, "zeros", "silu", "layer")
    x = torch.zeros(2, 3, 6)
    assert rssm_native.usable(rssm, x)
    assert not rssm_native.usable(rssm, x.double())  # float64: the PyTorch unroll
    monkeypatch.setattr(rssm_native.gemm, "cpu_gemm", lambda: "onednn")
    assert not rssm_native.usable(rssm, x)  # oneDNN's products stay with the PyTorch path


@needs_kernels
@pytest.mark.parametrize("shape,unimix", [((1024, 32, 32), 0.01), ((37, 4, 5), 0.0)])
def test_c_sample_draws_what_sample_onehot_draws(shape, unimix):
    n, k, classes = shape
    raw = 3 * torch.randn(n, k * classes)
    probs = torch.softmax(raw.view(shape), -1) * (1 - unimix) + unimix / classes
    torch.manual_seed(3)
    ref = sample_onehot(probs)
    torch.manual_seed(3)
    got = rssm_native.sample_onehot(raw, k, classes, unimix).view(shape)
    assert torch.equal(got.sum(-1), torch.ones(n, k))
    # the same uniforms and probabilities equal to rounding: the same classes but where a
    # uniform falls within rounding of a cdf boundary
    assert (got != ref).any(-1).float().mean() < 1e-3
    if n >= 1024:  # and the classes' frequencies are the probabilities'
        torch.manual_seed(4)
        many = torch.stack([rssm_native.sample_onehot(raw[:64], k, classes, unimix)
                            for _ in range(400)]).mean(0).view(64, k, classes)
        p = probs[:64]
        err = (many - p).abs() / (p * (1 - p) / 400).sqrt()
        assert err[p > 0.05].max() < 5.5  # (where counts are large enough to be ~normal)


def test_native_modes(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv(native.ENV, "bogus")
    with pytest.raises(ValueError, match="WORLDZOO_NATIVE='bogus' is not one of"):
        native.mode()
    native.load.cache_clear()
    try:
        monkeypatch.setenv(native.ENV, "off")
        assert native.load("observe") is None
        assert native.describe() == "pytorch (WORLDZOO_NATIVE=off)"
        native.load.cache_clear()
        monkeypatch.setenv(native.ENV, "on")
        monkeypatch.setenv("CC", "/nonexistent/cc")
        with pytest.raises(native.NativeError, match="no C compiler found"):
            native.load("observe")
        native.load.cache_clear()
        monkeypatch.setenv(native.ENV, "auto")
        assert native.load("observe") is None  # auto: the PyTorch path, no error
        assert "no C compiler found" in native.describe()
    finally:
        native.load.cache_clear()


@needs_kernels
def test_build_is_cached_per_source(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = native.build("observe")
    assert first.parent == tmp_path / "worldzoo" / "native" and first.exists()
    assert native.build("observe") == first  # found, not rebuilt
    src = tmp_path / "src"
    src.mkdir()
    (src / "observe.c").write_text((native.SOURCES / "observe.c").read_text() + "\n/* edit */\n")
    monkeypatch.setattr(native, "SOURCES", src)
    assert native.build("observe") != first  # an edited source builds afresh
    (src / "broken.c").write_text("this is not C\n")
    with pytest.raises(native.NativeError, match="building .*broken.c .* failed"):
        native.build("broken")


@needs_kernels
def test_c_unroll_in_whole_updates():
    """Three DreamerV3 updates (debug preset, float32) with the C unroll and with the PyTorch
    one from one seed: the parameters stay within float32 rounding of each other."""
    from _fakes import fake_batch, spaces

    from worldzoo.agent import Agent
    from worldzoo.config import apply_sets, get_recipe

    cfg = apply_sets(get_recipe("dreamerv3", "debug"), ["train.horizon=3"])
    o, a = spaces("vector", "continuous")
    torch.manual_seed(0)
    batches = [fake_batch(o, a) for _ in range(3)]
    params = {}
    try:
        for use_c in (True, False):
            rssm_native.ENABLED = use_c
            torch.manual_seed(1)
            agent = Agent(cfg, o, a)
            assert rssm_native.usable(agent.wm.rssm, batches[0]["vector"]) == use_c
            assert rssm_fused.fusable(agent.wm.rssm, batches[0]["vector"])
            params[use_c] = trained_params(agent, batches)
    finally:
        rssm_native.ENABLED = True
    torch.testing.assert_close(params[True], params[False], rtol=1e-4, atol=1e-5)


@needs_kernels
def test_imagination_feature_buffer_changes_no_bit(monkeypatch):
    """Imagination writing each step's features into one buffer through C (no concatenation,
    no stack; autograd's version counter bypassed for rows no saved tensor reads) trains
    exactly as the stacked features do: the same parameters, bit for bit, after 3 updates."""
    import copy

    from worldzoo.agent import Agent
    from worldzoo.config import apply_sets, get_recipe

    cfg = apply_sets(get_recipe("dreamerv3", "debug"), ["train.horizon=4"])
    o, a = spaces("vector", "continuous")
    torch.manual_seed(0)
    batches = [fake_batch(o, a) for _ in range(3)]
    agent = Agent(cfg, o, a)
    start = {"deter": torch.zeros(5, agent.wm.rssm.deter), "stoch": torch.zeros(5, 1)}
    with torch.no_grad():
        assert agent.wm.rssm.feat_buffer(start, 4).shape[:2] == (5, 5)
    params, writes = [], []
    into = CategoricalRSSM._img_into
    monkeypatch.setattr(CategoricalRSSM, "_img_into",
                        lambda self, *a: writes.append(1) or into(self, *a))
    for use_buffer in (True, False):
        if not use_buffer:
            monkeypatch.setattr(CategoricalRSSM, "feat_buffer", lambda self, s, n: None)
        params.append(trained_params(copy.deepcopy(agent), batches))
        assert len(writes) == (3 * 4 if use_buffer else 12)  # 3 updates x horizon 4, then none
    assert torch.equal(params[0], params[1])


@needs_kernels
def test_writes_through_pointers_check_their_target():
    src = torch.randn(4, 3)
    buf = torch.zeros(4, 8)
    rssm_native.write_rows(src, buf[:, 5:])
    assert torch.equal(buf[:, 5:], src) and buf[:, :5].abs().sum() == 0
    with pytest.raises(ValueError, match=r"expected a \[4, 3\] float32 CPU view"):
        rssm_native.write_rows(src, buf[:, 4:])
    with pytest.raises(ValueError, match="unit column stride"):
        rssm_native.write_rows(src, torch.zeros(3, 4).t())


@needs_kernels
def test_feature_buffer_only_without_gradients():
    rssm = categorical_rssm(0.01, "zeros")
    start = {"deter": torch.zeros(3, 8), "stoch": torch.zeros(3, 20)}
    assert rssm.feat_buffer(start, 4) is None  # the prior's parameters train: no buffer
    with torch.no_grad():
        assert rssm.feat_buffer(start, 4).shape == (5, 3, 28)


@needs_kernels
def test_c_unroll_without_packed_gemm(monkeypatch):
    """Where MKL's packed GEMM is not exported, the unroll multiplies by plain sgemm (on
    transposed copies of the weights): the same values to rounding."""
    rssm = categorical_rssm(0.01, "learned", "silu", "layer")
    _, packed_post, packed = _run(rssm, True, monkeypatch)
    monkeypatch.setattr(native.load("observe"), "wz_pack", [None] * 3)
    _, post, plain = _run(rssm, True, monkeypatch)
    assert torch.equal(post["stoch"], packed_post["stoch"])
    torch.testing.assert_close(post["deter"], packed_post["deter"], rtol=1e-5, atol=1e-6)
    for name in packed:
        torch.testing.assert_close(plain[name], packed[name], rtol=1e-4, atol=1e-5, msg=name)
