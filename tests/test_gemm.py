"""The CPU GEMM backends behind nets.Linear and StepLinear: same results, same gradients,
same checkpoints, clear errors."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from worldzoo import gemm
from worldzoo.nets import MLP, Linear
from worldzoo.unroll import StepLinear, unrolled

needs_onednn = pytest.mark.skipif(not gemm.onednn_available(), reason="no oneDNN in this build")


@pytest.fixture
def backend(request):
    """Run the test on the backend named by the parameter, then restore the process's."""
    before = gemm.cpu_gemm()
    gemm.set_cpu_gemm(request.param)
    yield request.param
    gemm.set_cpu_gemm(before)


def _grads(fn, *tensors):
    out = fn(*tensors)
    out.backward(torch.linspace(-1, 1, out.numel()).reshape(out.shape))
    grads = [t.grad.clone() for t in tensors]
    for t in tensors:
        t.grad = None
    return out.detach(), grads


@needs_onednn
@pytest.mark.parametrize("backend", ["onednn"], indirect=True)
@pytest.mark.parametrize("shape", [(7, 33), (3, 5, 33)])
@pytest.mark.parametrize("bias", [True, False])
def test_onednn_linear_matches_f_linear(backend, shape, bias):
    torch.manual_seed(0)
    x = torch.randn(*shape, requires_grad=True)
    w = torch.randn(19, 33, requires_grad=True)
    b = torch.randn(19, requires_grad=True) if bias else None
    params = [x, w] + ([b] if bias else [])

    def ours(x, w, *b):
        return gemm.linear(x, w, *b)

    def ref(x, w, *b):
        return F.linear(x, w, *b)

    out, grads = _grads(ours, *params)
    ref_out, ref_grads = _grads(ref, *params)
    assert out.grad_fn is None and out.shape == ref_out.shape
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize("backend", ["onednn"], indirect=True)
def test_onednn_expanded_and_transposed_inputs(backend):
    """Stride-0 (expand) and transposed operands give F.linear's result."""
    x = torch.randn(1, 64).expand(16, -1)
    w = torch.randn(64, 32).t()
    torch.testing.assert_close(gemm.linear(x, w), F.linear(x, w), rtol=1e-5, atol=1e-5)
    b = torch.randn(16, 8).t()  # [8, 16], column-major
    torch.testing.assert_close(gemm.matmul_nt(x.t(), b), x.t() @ b.t(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ["mkl"], indirect=True)
def test_mkl_backend_is_f_linear_bit_for_bit(backend):
    layer = Linear(33, 19)
    x = torch.randn(4, 33)
    assert torch.equal(layer(x), F.linear(x, layer.weight, layer.bias))


def test_linear_is_an_nn_linear_checkpoint():
    ours, ref = Linear(8, 4), nn.Linear(8, 4)
    assert isinstance(ours, nn.Linear)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["mkl", pytest.param("onednn", marks=needs_onednn)],
                         indirect=True)
def test_step_linear_unroll_gradients_agree_with_nn_linear(backend):
    """StepLinear's deferred weight gradient over an unroll, on either backend, against
    plain nn.Linear steps."""
    torch.manual_seed(0)
    step, ref = StepLinear(512, 512), nn.Linear(512, 512)  # >= min_weight: deferred
    ref.load_state_dict(step.state_dict())
    xs = torch.randn(6, 16, 512)

    def unroll(layer, ctx):
        h = torch.zeros(16, 512)
        with ctx:
            for x in xs:
                h = torch.tanh(layer(x + h))
        h.square().sum().backward()
        return h.detach()

    h = unroll(step, unrolled(step))
    h_ref = unroll(ref, torch.enable_grad())
    torch.testing.assert_close(h, h_ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(step.weight.grad, ref.weight.grad, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(step.bias.grad, ref.bias.grad, rtol=1e-4, atol=1e-4)


@needs_onednn
@pytest.mark.parametrize("backend", ["onednn"], indirect=True)
def test_flop_counter_counts_onednn_products(backend):
    from torch.utils.flop_counter import FlopCounterMode

    net = MLP(32, 8, 2, 64)
    x = torch.randn(10, 32)
    with FlopCounterMode(display=False) as counter:
        net(x).sum().backward()
    forward = 2 * 10 * (32 * 64 + 64 * 64 + 64 * 8)
    assert counter.get_total_flops() == 3 * forward - 2 * 10 * 32 * 64  # no grad for x


def test_unknown_backend_is_refused_by_name():
    with pytest.raises(ValueError, match="unknown CPU GEMM backend 'blas'.*auto, mkl, onednn"):
        gemm.set_cpu_gemm("blas")


def test_auto_picks_a_backend_and_keeps_its_measurement():
    before = gemm.cpu_gemm()
    try:
        chosen = gemm.set_cpu_gemm("auto")
        assert chosen in ("mkl", "onednn") and gemm.cpu_gemm() == chosen
        rates = gemm.probe_rates()
        assert rates["mkl"] > 0
        if chosen == "onednn":
            assert rates["onednn"] >= gemm.AUTO_MARGIN * rates["mkl"]
    finally:
        gemm.set_cpu_gemm(before)


def test_cli_refuses_a_bad_backend_name_before_writing(tmp_path, monkeypatch, capsys):
    from worldzoo import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(gemm.ENV, "fast")
    monkeypatch.setattr(gemm, "_resolved", None)
    code = cli.main(["run", "dreamerv1", "--env", "gym:Pendulum-v1", "--preset", "debug"])
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert "unknown CPU GEMM backend 'fast'" in lines[0] and "WORLDZOO_CPU_GEMM" in lines[0]
    assert not any(tmp_path.iterdir())


@needs_onednn
@pytest.mark.parametrize("backend", ["onednn"], indirect=True)
def test_onednn_without_gradients_and_few_rows(backend):
    """Acting: no autograd node without gradients; under MIN_ROWS rows torch's own product."""
    w, b = torch.randn(19, 33), torch.randn(19)
    x = torch.randn(8, 33)
    with torch.no_grad():
        out = gemm.linear(x, w, b)
    assert out.grad_fn is None
    torch.testing.assert_close(out, F.linear(x, w, b), rtol=1e-5, atol=1e-5)
    one = torch.randn(1, 33)
    assert torch.equal(gemm.linear(one, w, b), F.linear(one, w, b))


def test_auto_probe_leaves_the_seeded_stream_alone():
    """In library use the probe runs lazily at the first float32 linear, after seeding: it
    must not shift the draws that follow (results would depend on WORLDZOO_CPU_GEMM)."""
    before = gemm.cpu_gemm()
    try:
        torch.manual_seed(3)
        expected = torch.rand(4)
        torch.manual_seed(3)
        gemm.set_cpu_gemm("auto")
        assert torch.equal(torch.rand(4), expected)
    finally:
        gemm.set_cpu_gemm(before)


def test_auto_keeps_its_choice_per_machine(tmp_path, monkeypatch):
    """`auto` measures once per machine key and later processes reuse that choice (a seed gives
    the same numbers run after run); another key measures again; a corrupt file is measured
    over."""
    before = gemm.cpu_gemm()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []
    monkeypatch.setattr(gemm, "rates", lambda: calls.append(1) or {"mkl": 100.0, "onednn": 90.0})
    try:
        assert gemm.set_cpu_gemm("auto") == "mkl" and len(calls) == 1
        path = tmp_path / "worldzoo" / "cpu_gemm.json"
        kept = json.loads(path.read_text())
        assert kept[gemm.machine_key()] == {"backend": "mkl",
                                            "rates": {"mkl": 100.0, "onednn": 90.0}}
        # a disturbed probe would now say onednn: the kept choice wins
        monkeypatch.setattr(gemm, "rates", lambda: calls.append(1) or {"mkl": 50.0, "onednn": 90.0})
        assert gemm.set_cpu_gemm("auto") == "mkl" and len(calls) == 1
        assert gemm.probe_rates() == {"mkl": 100.0, "onednn": 90.0}
        monkeypatch.setattr(gemm, "machine_key", lambda: "another CPU | torch x | 2 threads")
        expect = "onednn" if gemm.onednn_available() else "mkl"
        assert gemm.set_cpu_gemm("auto") == expect and len(calls) == 2
        assert len(json.loads(path.read_text())) == 2
        path.write_text("{not json")
        assert gemm.set_cpu_gemm("auto") == expect and len(calls) == 3
    finally:
        gemm.set_cpu_gemm(before)


def test_machine_key_names_cpu_torch_and_threads():
    key = gemm.machine_key()
    assert torch.__version__ in key and f"{torch.get_num_threads()} threads" in key
