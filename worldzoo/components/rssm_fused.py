"""The categorical RSSM's posterior unroll (`observe`) as one autograd node, as cuDNN runs an
RNN: a forward loop over the steps that records no graph, and a hand-written backward through
time. Each step is ~25 small ops on [B, x] tensors (B = 16), where per-op cost rules: at the
XS size the autograd unroll's forward took 66 ms, the same ops written out without modules or
a graph 28 ms (results/speed/dreamerv3_cpu.md, stop 21). Same maths as `RSSM.observe`, not the
same bits (float32 summation order):

- the projections of the inputs that do not depend on the recurrence (the previous action's
  columns of `img_in`, the embedding's columns of the posterior net, and those layers' biases
  where they have them) run once over all [B, T] before the loop (no per-step concatenation),
  and autograd takes their gradients from there;
- every weight gradient is one matmul over all steps at the end, every LayerNorm's scale and
  shift gradient one reduction.

`fusable(rssm, x)` says when this path applies: the categorical latent (any unimix) with the
NormGRU cell, `img_in` and the posterior net made of Linear -> LayerNorm -> SiLU/ELU blocks
(DreamerV3) or Linear with bias -> SiLU/ELU (DreamerV2), float32 or float64, no autocast, not
inside `torch.compile`. Elsewhere `observe` runs the autograd unroll. The backward supports
`retain_graph`, not double backward."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worldzoo import gemm
from worldzoo.components import rssm_native
from worldzoo.dists import sample_onehot
from worldzoo.unroll import start_steps

ENABLED = True  # tests and benchmarks switch the fused path off here; a run: train.fused_unroll


def _act_kind(module: nn.Module) -> str | None:
    if type(module) is nn.SiLU:
        return "silu"
    if type(module) is nn.ELU and module.alpha == 1.0 and not module.inplace:
        return "elu"
    return None


def _normed(block: list[nn.Module]) -> bool | None:
    """Linear (no bias) -> LayerNorm (affine) -> activation: True; Linear (bias) -> Identity
    -> activation: False; anything else None."""
    lin, norm, a = block
    if not isinstance(lin, nn.Linear) or _act_kind(a) is None:
        return None
    if type(norm) is nn.LayerNorm and norm.elementwise_affine and norm.bias is not None:
        return True if lin.bias is None else None
    return False if type(norm) is nn.Identity and lin.bias is not None else None


def fusable(rssm: nn.Module, x: torch.Tensor) -> bool:
    """Whether `rssm.observe` on inputs like `x` can run as one node (module docstring)."""
    from worldzoo.components.rssm import CategoricalRSSM, NormGRUCell  # (imports this)

    if not (ENABLED and isinstance(rssm, CategoricalRSSM) and rssm.fused) or x.dim() != 3 \
            or x.dtype not in (torch.float32, torch.float64):
        return False
    if torch.is_autocast_enabled(x.device.type) or torch.compiler.is_compiling():
        return False
    img, post = list(rssm.img_in), list(rssm.post_net)
    if len(img) != 3 or len(post) != 4 or not isinstance(rssm.cell, NormGRUCell):
        return False
    normed = _normed(img)
    return (normed is not None and _normed(post[:3]) == normed
            and _act_kind(img[2]) == _act_kind(post[2]) and isinstance(post[3], nn.Linear)
            and post[3].bias is not None and rssm.cell.norm.bias is not None)


class _Weight:
    """One weight block W [out, in] of a step: `fwd(x, add)` = x @ W^T + add and `bwd(g)` =
    g @ W at every step, on the process's CPU GEMM backend (MKL: by a row-major W^T, made once
    per unroll, as `worldzoo.unroll`), and `grad(G, X)` = G^T X over all steps at the end."""

    def __init__(self, weight: torch.Tensor, forward: bool = True) -> None:
        self.w = weight.contiguous()
        self.onednn = gemm.uses_onednn(self.w, self.w)
        self.wt = None if self.onednn or not forward else self.w.t().contiguous()

    def fwd(self, x: torch.Tensor, add: torch.Tensor | None = None) -> torch.Tensor:
        if self.onednn:
            y = gemm.matmul_nt(x, self.w, None, "onednn")
            return y if add is None else y.add_(add)
        return x @ self.wt if add is None else torch.addmm(add, x, self.wt)

    def bwd(self, g: torch.Tensor) -> torch.Tensor:
        return gemm.matmul_nt(g, self.w.t())

    @staticmethod
    def grad(gs: list[torch.Tensor], xs: list[torch.Tensor]) -> torch.Tensor:
        return gemm.matmul_nt(torch.cat(gs).t(), torch.cat(xs).t())


def _act(kind: str, x: torch.Tensor) -> torch.Tensor:
    return F.silu(x) if kind == "silu" else F.elu(x)


def _act_backward(kind: str, grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if kind == "silu":
        return torch.ops.aten.silu_backward(grad, x)
    return torch.ops.aten.elu_backward(grad, 1.0, 1, 1, False, x)


def _norm(x: torch.Tensor, norm: nn.Module):
    """(normed x, mean, rstd) of a LayerNorm, or (x, None, None) for the Identity."""
    if type(norm) is nn.Identity:
        return x, None, None
    return torch.native_layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def _norm_backward(grad, x, mean, rstd, norm: nn.Module) -> torch.Tensor:
    if type(norm) is nn.Identity:
        return grad
    return torch.ops.aten.native_layer_norm_backward(
        grad, x, norm.normalized_shape, mean, rstd, norm.weight, norm.bias,
        [True, False, False])[0]


def _affine_grads(gs, xs, means, rstds) -> tuple[torch.Tensor, torch.Tensor]:
    """A LayerNorm's scale and shift gradients over all steps: sum(g * xhat), sum(g)."""
    g = torch.cat(gs)
    xhat = (torch.cat(xs) - torch.cat(means)) * torch.cat(rstds)
    return (g * xhat).sum(0), g.sum(0)


def gru_gates_backward(grad, reset, cand, new, upd, h) -> tuple[torch.Tensor, torch.Tensor]:
    """NormGRU gating `lerp(h, tanh(reset * cand), upd)` (reset, upd after their sigmoids)
    backwards: (gradient w.r.t. the normed gates [reset | cand | update], w.r.t. h), by
    autograd's formulas for sigmoid, tanh, mul and lerp in its order."""
    g_pre = torch.ops.aten.tanh_backward(grad * upd, new)  # w.r.t. reset * cand
    g_reset = torch.ops.aten.sigmoid_backward(g_pre * cand, reset)
    g_upd = torch.ops.aten.sigmoid_backward(grad * (new - h), upd)
    return torch.cat([g_reset, g_pre * reset, g_upd], -1), grad * (1 - upd)


def latent_backward(g_sample, g_logits, soft, probs, unimix: float) -> torch.Tensor:
    """The posterior's softmax -> unimix -> (log, straight-through one-hot sample) backwards:
    the gradient w.r.t. the raw outputs from those w.r.t. the sample and the logits (the log
    of the mixed probabilities with unimix, else the raw outputs themselves)."""
    if unimix > 0:
        g = (g_sample + g_logits / probs) * (1 - unimix)
        return torch._softmax_backward_data(g, soft, -1, soft.dtype)
    return torch._softmax_backward_data(g_sample, soft, -1, soft.dtype) + g_logits


class _Observe(torch.autograd.Function):
    @staticmethod
    def forward(ctx, rssm, is_first, starts, pa, pe, h0, z0, init_h, init_z, *params):
        w_in, w_gru, w_post, w_out, b_out = params[:5]
        n_in, n_gru, n_post = rssm.img_in[1], rssm.cell.norm, rssm.post_net[1]
        act = _act_kind(rssm.img_in[2])
        S, D = rssm.stoch_dim, rssm.deter
        k, K, eps = rssm.stoch, rssm.classes, rssm.unimix
        lin_s, lin_g = _Weight(w_in[:, :S]), _Weight(w_gru)
        lin_d, lin_o = _Weight(w_post[:, :D]), _Weight(w_out)
        B, T = is_first.shape
        first = is_first.to(h0.dtype).unsqueeze(-1)  # [B, T, 1]
        pa_t, pe_t = pa.transpose(0, 1).contiguous(), pe.transpose(0, 1).contiguous()
        rec = {name: [] for name in (
            "z", "u1", "m1", "r1", "n1", "xh", "ug", "mg", "rg", "reset", "cand", "new", "upd",
            "u2", "m2", "r2", "n2", "y", "soft", "probs")}
        h, z = h0, z0
        deters, stochs, raws = [], [], []
        uniform = torch.rand(T, B, k, 1, dtype=h0.dtype, device=h0.device)  # = T draws
        for t in range(T):
            if starts[t]:
                f = first[:, t]
                h, z = h * (1.0 - f) + init_h * f, z * (1.0 - f) + init_z * f
            u1 = lin_s.fwd(z, pa_t[t])
            n1, m1, r1 = _norm(u1, n_in)
            xh = torch.cat([_act(act, n1), h], -1)
            ug = lin_g.fwd(xh)
            ng, mg, rg = _norm(ug, n_gru)
            reset, cand, upd = ng.chunk(3, -1)
            reset = torch.sigmoid(reset)
            new = torch.tanh(reset * cand)
            upd = torch.sigmoid(upd - 1.0)
            h = torch.lerp(h, new, upd)
            u2 = lin_d.fwd(h, pe_t[t])
            n2, m2, r2 = _norm(u2, n_post)
            y = _act(act, n2)
            o = lin_o.fwd(y, b_out).view(B, k, K)
            soft = torch.softmax(o, -1)
            probs = soft.mul(1 - eps).add_(eps / K) if eps > 0 else soft
            for name, v in (("z", z), ("u1", u1), ("m1", m1), ("r1", r1), ("n1", n1),
                            ("xh", xh), ("ug", ug), ("mg", mg), ("rg", rg), ("reset", reset),
                            ("cand", cand), ("new", new), ("upd", upd),
                            ("u2", u2), ("m2", m2), ("r2", r2), ("n2", n2), ("y", y),
                            ("soft", soft), ("probs", probs)):
                rec[name].append(v)
            z = sample_onehot(probs, uniform[t]).view(B, S)
            deters.append(h)
            stochs.append(z)
            if eps == 0:
                raws.append(o)
        ctx.rssm, ctx.starts, ctx.first, ctx.rec, ctx.act = rssm, starts, first, rec, act
        ctx.deters = deters
        ctx.save_for_backward(*params)  # autograd checks them for in-place changes
        # the posterior's logits: log of the mixed probabilities (unimix) or the raw outputs
        logits = torch.stack(rec["probs"], 1).log_() if eps > 0 else torch.stack(raws, 1)
        return torch.stack(deters, 1), logits, torch.stack(stochs, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_deter, g_logits, g_stoch):
        params = ctx.saved_tensors
        w_in, w_gru, w_post, w_out, _ = params[:5]
        rssm, rec, act, first = ctx.rssm, ctx.rec, ctx.act, ctx.first
        n_in, n_gru, n_post = rssm.img_in[1], rssm.cell.norm, rssm.post_net[1]
        S, D = rssm.stoch_dim, rssm.deter
        k, K, eps = rssm.stoch, rssm.classes, rssm.unimix
        lin_s, lin_g = _Weight(w_in[:, :S], False), _Weight(w_gru, False)
        lin_d, lin_o = _Weight(w_post[:, :D], False), _Weight(w_out, False)
        B, T = first.shape[:2]
        gs = {name: [None] * T for name in ("o", "n2", "u2", "ng", "ug", "n1", "u1")}
        gh, gz = g_deter.new_zeros(B, D), g_deter.new_zeros(B, S)
        g_init_h = g_init_z = None
        for t in reversed(range(T)):
            gz = gz + g_stoch[:, t]
            gh = gh + g_deter[:, t]
            soft, probs = rec["soft"][t], rec["probs"][t]
            go = latent_backward(gz.view(B, k, K), g_logits[:, t], soft, probs, eps)
            go = go.reshape(B, k * K)
            gn2 = _act_backward(act, lin_o.bwd(go), rec["n2"][t])
            gu2 = _norm_backward(gn2, rec["u2"][t], rec["m2"][t], rec["r2"][t], n_post)
            gh = gh + lin_d.bwd(gu2)
            reset, cand, new, upd = rec["reset"][t], rec["cand"][t], rec["new"][t], rec["upd"][t]
            h_prev = rec["xh"][t][:, w_in.shape[0]:]  # the GRU's input [x | h]
            gng, gh_direct = gru_gates_backward(gh, reset, cand, new, upd, h_prev)
            gug = _norm_backward(gng, rec["ug"][t], rec["mg"][t], rec["rg"][t], n_gru)
            gx, gh_gru = lin_g.bwd(gug).split([w_in.shape[0], D], -1)
            gh = gh_direct + gh_gru
            gn1 = _act_backward(act, gx, rec["n1"][t])
            gu1 = _norm_backward(gn1, rec["u1"][t], rec["m1"][t], rec["r1"][t], n_in)
            gz = lin_s.bwd(gu1)
            for name, v in (("o", go), ("n2", gn2), ("u2", gu2), ("ng", gng), ("ug", gug),
                            ("n1", gn1), ("u1", gu1)):
                gs[name][t] = v
            if ctx.starts[t]:
                f = first[:, t]
                g_init_h = gh * f if g_init_h is None else g_init_h + gh * f
                g_init_z = gz * f if g_init_z is None else g_init_z + gz * f
                gh, gz = gh * (1.0 - f), gz * (1.0 - f)
        # parameter gradients: one reduction over all steps each
        g_w_in = torch.zeros_like(w_in)
        g_w_in[:, :S] = _Weight.grad(gs["u1"], rec["z"])
        g_w_post = torch.zeros_like(w_post)
        g_w_post[:, :D] = _Weight.grad(gs["u2"], ctx.deters)
        g_w_gru = _Weight.grad(gs["ug"], rec["xh"])
        g_w_out = _Weight.grad(gs["o"], rec["y"])
        g_b_out = torch.cat(gs["o"]).sum(0)
        norms = [_affine_grads(gs[g], rec[x], rec[m], rec[r]) for g, x, m, r in (
            ("ng", "ug", "mg", "rg"), ("n1", "u1", "m1", "r1"), ("n2", "u2", "m2", "r2"))
            if g == "ng" or type(n_in) is not nn.Identity]
        g_pa = torch.stack(gs["u1"], 1)
        g_pe = torch.stack(gs["u2"], 1)
        if g_init_h is None:
            g_init_h, g_init_z = torch.zeros_like(gh), torch.zeros_like(gz)
        return (None, None, None, g_pa, g_pe, gh, gz, g_init_h, g_init_z,
                g_w_in, g_w_gru, g_w_post, g_w_out, g_b_out, *(g for n in norms for g in n))


def observe(rssm, embed: torch.Tensor, action: torch.Tensor, is_first: torch.Tensor,
            h0: torch.Tensor, z0: torch.Tensor, init: dict[str, torch.Tensor]):
    """(deter, logits, stoch) over [B, T] by the fused unroll; `action` already clipped."""
    S, D = rssm.stoch_dim, rssm.deter
    w_in, w_post = rssm.img_in[0].weight, rssm.post_net[0].weight
    # the recurrence-free inputs, projected once: the previous action (zero where an
    # episode starts) and the embedding
    action = action * (1.0 - is_first.to(action.dtype)).unsqueeze(-1)
    pa = F.linear(action, w_in[:, S:], rssm.img_in[0].bias)  # (the biases where not normed)
    pe = F.linear(embed, w_post[:, D:], rssm.post_net[0].bias)
    starts = start_steps(is_first)  # one host sync per batch, not one per step
    init_h = init["deter"].expand(len(embed), D)
    init_z = init["stoch"].expand(len(embed), S)
    out = rssm.post_net[3]
    norms = [rssm.cell.norm] + ([rssm.img_in[1], rssm.post_net[1]]
                                if type(rssm.img_in[1]) is nn.LayerNorm else [])
    params = (w_in, rssm.cell.linear.weight, w_post, out.weight, out.bias,
              *(p for n in norms for p in (n.weight, n.bias)))
    node = rssm_native.NativeObserve if rssm_native.usable(rssm, embed) else _Observe
    return node.apply(rssm, is_first, starts, pa, pe, h0, z0, init_h, init_z, *params)
