"""The learner step, acting, bf16 and a whole run on a CUDA device; skipped where torch sees
none (CI has no GPU: `benchmarks/gpu_check.sh` runs these on a GPU machine).

`WORLDZOO_TEST_DEVICE=cpu python -m pytest tests/test_cuda.py` runs the same tests on the CPU,
which checks the tests themselves on a machine without a GPU (the device/CPU comparisons then
compare the CPU with itself)."""

from __future__ import annotations

import math
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from _fakes import fake_batch, spaces

import worldzoo
from worldzoo.agent import Agent
from worldzoo.components.rssm import NormGRUCell
from worldzoo.config import apply_sets, get_recipe
from worldzoo.dists import TwoHotDist, symlog_bins
from worldzoo.graphs import GraphedTrainStep
from worldzoo.unroll import StepLinear, unrolled

DEVICE = os.environ.get("WORLDZOO_TEST_DEVICE", "cuda")
pytestmark = pytest.mark.skipif(DEVICE.startswith("cuda") and not torch.cuda.is_available(),
                                reason="torch sees no CUDA device")

OBS = spaces("vector", "continuous")[0]
needs_graphs = pytest.mark.skipif(not DEVICE.startswith("cuda"),
                                  reason="CUDA graphs need a CUDA device")


@pytest.fixture(autouse=True)
def exact_matmuls():
    """Full fp32 matmuls and convolutions (no TF32), so device and CPU results compare."""
    if not torch.cuda.is_available():
        yield
        return
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _agent(recipe: str, act_space: gym.Space, sets: tuple[str, ...] = ()) -> Agent:
    torch.manual_seed(0)
    cfg = apply_sets(get_recipe(recipe, "debug"), list(sets))
    return Agent(cfg, OBS, act_space).to(DEVICE)


def _batch(act_space: gym.Space) -> dict[str, torch.Tensor]:
    """tests/_fakes.py's batch of sequences (episode starts and a terminal inside), on the
    device."""
    return {k: v.to(DEVICE) for k, v in fake_batch(OBS, act_space, b=4, t=12).items()}


@pytest.mark.parametrize("recipe,act_space", [
    ("dreamerv1", gym.spaces.Box(-1, 1, (2,), np.float32)),
    ("dreamerv2", gym.spaces.Box(-1, 1, (2,), np.float32)),
    ("dreamerv2", gym.spaces.Discrete(3)),
    ("dreamerv3", gym.spaces.Box(-1, 1, (2,), np.float32)),
    ("dreamerv3", gym.spaces.Discrete(3)),
    ("dreamerv3_2024", gym.spaces.Box(-1, 1, (2,), np.float32)),
])
def test_train_step_on_device(recipe, act_space):
    agent = _agent(recipe, act_space)
    before = {k: v.detach().clone() for k, v in agent.state_dict().items()}
    for _ in range(2):
        metrics = agent.train_step(_batch(act_space))
    losses = {k: float(v) for k, v in metrics.items() if k.startswith("loss_")}
    assert {"loss_model", "loss_actor", "loss_critic"} <= losses.keys()
    assert all(math.isfinite(v) for v in losses.values()), losses
    after = agent.state_dict()
    assert all(v.device.type == torch.device(DEVICE).type for v in after.values())
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())
    changed = [k for k, v in after.items() if v.is_floating_point()
               and not torch.equal(v, before[k])]
    assert any(k.startswith("wm.") for k in changed) and any(".actor." in k for k in changed)


def test_bfloat16_train_step_on_device():
    if DEVICE.startswith("cuda") and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    act_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    agent = _agent("dreamerv3", act_space, ("train.precision=bfloat16",))
    metrics = agent.train_step(_batch(act_space))
    assert all(math.isfinite(float(v)) for k, v in metrics.items() if k.startswith("loss_"))
    # the nets return float32 under autocast: the recurrent state and losses stay float32
    assert all(p.dtype == torch.float32 for p in agent.parameters())


@pytest.mark.parametrize("act_space", [gym.spaces.Box(-1, 1, (2,), np.float32),
                                       gym.spaces.Discrete(3)])
def test_policy_acts_on_device(act_space):
    agent = _agent("dreamerv3", act_space)
    obs = {"vector": np.zeros((3, 5), np.float32), "is_first": np.ones(3, bool)}
    state = None
    for explore in (True, False):
        env_action, action, state = agent.policy(obs, state, explore=explore)
        obs["is_first"] = np.zeros(3, bool)
    assert isinstance(env_action, np.ndarray) and len(env_action) == 3
    assert action.device.type == torch.device(DEVICE).type
    latent, _ = state
    assert all(v.device.type == torch.device(DEVICE).type for v in latent.values())


def _pair(*shape, requires_grad: bool = True):
    """The same random tensor on the CPU and on the device, both leaves."""
    x = torch.randn(*shape)
    return x.clone().requires_grad_(requires_grad), x.to(DEVICE).requires_grad_(requires_grad)


def test_custom_autograd_kernels_agree_with_cpu():
    """The hand-written forward/backward nodes (GRU gating, two-hot cross-entropy, the
    unroll's deferred weight gradients) give the CPU's values and gradients on the device."""
    torch.manual_seed(0)
    cell = NormGRUCell(6, 8)
    cell_dev = NormGRUCell(6, 8).to(DEVICE)
    cell_dev.load_state_dict(cell.state_dict())
    (x, xd), (h, hd) = _pair(5, 6), _pair(5, 8)
    out, outd = cell(x, h), cell_dev(xd, hd)
    assert outd.grad_fn.name() == "_GRUGatesBackward"
    (out.pow(2).sum()).backward()
    (outd.pow(2).sum()).backward()
    _close(out, outd)
    _close(x.grad, xd.grad)
    _close(cell.linear.weight.grad, cell_dev.linear.weight.grad)

    bins = symlog_bins(255, -20, 20)
    (logits, logits_d), (target, target_d) = _pair(7, 255), _pair(7, requires_grad=False)
    target, target_d = 30 * target, 30 * target_d
    loss = TwoHotDist(logits, bins).loss(target)
    loss_d = TwoHotDist(logits_d, bins.to(DEVICE)).loss(target_d)
    loss.sum().backward()
    loss_d.sum().backward()
    _close(loss, loss_d)
    _close(logits.grad, logits_d.grad)
    _close(TwoHotDist(logits, bins).mean, TwoHotDist(logits_d, bins.to(DEVICE)).mean)

    layer = StepLinear(6, 6)
    layer.min_weight = 0  # defer the weight gradient even at this size
    layer_dev = StepLinear(6, 6).to(DEVICE)
    layer_dev.min_weight = 0
    layer_dev.load_state_dict(layer.state_dict())
    (x0, x0d) = _pair(4, 6)
    for lay, inp in ((layer, x0), (layer_dev, x0d)):
        with unrolled(lay):
            h = inp
            for _ in range(5):
                h = torch.tanh(lay(h))
        h.pow(2).sum().backward()
    _close(layer.weight.grad, layer_dev.weight.grad)
    _close(layer.bias.grad, layer_dev.bias.grad)
    _close(x0.grad, x0d.grad)


def test_fused_observe_agrees_with_the_autograd_unroll_on_device(monkeypatch):
    """The one-node posterior unroll (worldzoo.components.rssm_fused) on the device: the same
    samples, values and gradients as the autograd unroll there."""
    from worldzoo.components import rssm_fused
    from worldzoo.components.rssm import CategoricalRSSM

    torch.manual_seed(0)
    rssm = CategoricalRSSM(embed=6, action=2, stoch=4, classes=5, deter=8, hidden=7, act="silu",
                           norm="layer", cell="norm_gru", unimix=0.01, initial="learned",
                           action_clip=1.0).to(DEVICE)
    embed = torch.randn(3, 9, 6, device=DEVICE)
    action = torch.randn(3, 9, 2, device=DEVICE)
    is_first = torch.zeros(3, 9, dtype=torch.bool, device=DEVICE)
    is_first[:, 0] = is_first[1, 4] = True
    assert rssm_fused.fusable(rssm, embed)
    outs = []
    for fused in (False, True):
        monkeypatch.setattr(rssm_fused, "ENABLED", fused)
        rssm.zero_grad()
        e = embed.clone().requires_grad_()
        torch.manual_seed(1)
        post, prior = rssm.observe(e, action, is_first)
        (post["deter"].pow(2).sum() + post["logits"].sum() + post["stoch"].cumsum(-1).sum()
         + rssm.kl(post, prior).sum()).backward()
        outs.append([post["stoch"], post["deter"], e.grad]
                    + [p.grad.clone() for p in rssm.parameters()])
    for ref, got in zip(*outs):
        torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def _close(cpu: torch.Tensor, dev: torch.Tensor) -> None:
    torch.testing.assert_close(dev.detach().cpu(), cpu.detach(), rtol=1e-5, atol=1e-5)


def test_run_on_device_then_load_on_cpu(tmp_path):
    """A whole run (acting, replay, updates, evaluation, checkpoints) with --device; its
    checkpoint loads and evaluates on the CPU."""
    res = worldzoo.run("dreamerv3", "gym:Pendulum-v1", preset="debug", steps=400, seed=0,
                       device=DEVICE, results=tmp_path, quiet=True)
    assert res.result["env_steps"] == 400
    assert math.isfinite(res.metrics["loss_model"]["values"][-1])
    agent = worldzoo.load(res.dir, device="cpu")
    returns = agent.evaluate(episodes=1)
    assert len(returns) == 1 and -2000 < returns[0] <= 0  # Pendulum's range


@needs_graphs
@pytest.mark.parametrize("recipe,act_space,precision", [
    ("dreamerv1", gym.spaces.Box(-1, 1, (2,), np.float32), "float32"),
    ("dreamerv2", gym.spaces.Discrete(3), "float32"),
    ("dreamerv3", gym.spaces.Box(-1, 1, (2,), np.float32), "float32"),
    ("dreamerv3", gym.spaces.Discrete(3), "bfloat16"),
])
def test_cuda_graph_replays_the_eager_updates(recipe, act_space, precision):
    """train.cuda_graph: eager warm-ups, then the captured update replayed; from the same
    seed the losses follow the eager run's (a replay draws the random numbers the eager
    update at that point would draw), and the parameters end where the eager run's do."""
    batch = _batch(act_space)
    losses, params = {}, {}
    for graphed in (False, True):
        agent = _agent(recipe, act_space, (f"train.precision={precision}",))
        step = GraphedTrainStep(agent, warmup=2) if graphed else agent.train_step
        torch.manual_seed(1)
        losses[graphed] = [float(step(batch)["loss_model"]) for _ in range(6)]
        params[graphed] = torch.cat([p.detach().flatten() for p in agent.parameters()])
    assert step.graph is not None and all(math.isfinite(v) for v in losses[True])
    print(recipe, precision, "eager", losses[False], "graph", losses[True])
    torch.testing.assert_close(losses[True][:2], losses[False][:2], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(losses[True], losses[False], rtol=1e-2, atol=1e-3)
    assert (params[True] - params[False]).norm() <= 1e-2 * params[False].norm()


@needs_graphs
def test_cuda_graph_run(tmp_path):
    """A whole run with train.cuda_graph=true; its checkpoint loads and acts on the CPU."""
    res = worldzoo.run("dreamerv3", "gym:Pendulum-v1", preset="debug", steps=400, seed=0,
                       device=DEVICE, results=tmp_path, quiet=True,
                       sets=["train.cuda_graph=true"])
    assert res.result["env_steps"] == 400
    values = res.metrics["loss_model"]["values"]
    assert len(values) > 1 and all(math.isfinite(v) for v in values)
    agent = worldzoo.load(res.dir, device="cpu")
    assert len(agent.evaluate(episodes=1)) == 1
