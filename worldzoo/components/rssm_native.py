"""The fused posterior unroll (`rssm_fused`) with its per-step work in C
(`worldzoo/kernels/observe.c`, built by `worldzoo.native`): one call runs the forward over all
steps, one the backward through time, each step's four products on MKL (packed GEMM where
it is exported: each weight packed once per unroll; else sgemm) and everything between them
(LayerNorm, activation, the NormGRU gating, softmax, unimix, the one-hot sample and their
backwards) as plain loops over the batch's 16 rows. In Python each of those ~25 small ops per
step costs its dispatch, an allocation and a pass over cold memory, ~10 us each inside the
unroll; here a step's elementwise work is a few microseconds. Also here: imagination's prior
sample in C (`sample_onehot`, OpenMP over the rows) and the pointer writes into imagination's
feature buffer (`write_rows`, see `CategoricalRSSM.feat_buffer`).

Same maths as `rssm_fused` (which tests/test_native.py checks it against), float32 only, and
only where the CPU GEMM backend is MKL (`worldzoo.gemm`; on oneDNN machines the Python path
keeps oneDNN's products). The parameter gradients are, as there, one matmul over all steps
each, taken here from [T, B, x] buffers the kernel fills (no concatenation)."""

from __future__ import annotations

import ctypes
from ctypes import POINTER, Structure, c_float, c_int, c_void_p

import torch

from worldzoo import gemm, native

ENABLED = True  # tests and benchmarks switch the C path off here; a run: WORLDZOO_NATIVE=off

_RECORDS = ("z", "u1", "m1", "r1", "n1", "xh", "ug", "mg", "rg", "reset", "cand", "newh",
            "upd", "u2", "m2", "r2", "n2", "y", "soft", "probs", "h")
_GRADS = ("g_o", "g_n2", "g_u2", "g_ng", "g_ug", "g_n1", "g_u1")


class _Args(Structure):
    _fields_ = ([(n, c_int) for n in ("B", "T", "S", "k", "K", "H", "D", "act", "normed",
                                      "ld_in", "ld_post")]
                + [(n, c_float) for n in ("unimix", "eps_in", "eps_gru", "eps_post")]
                + [(n, c_void_p) for n in (
                    "sgemm", "pack_size", "pack", "compute",
                    "w_s", "w_gru", "w_d", "w_out", "b_out", "wt_s", "wt_gru", "wt_d",
                    "wt_out", "ln_in_w", "ln_in_b",
                    "ln_gru_w", "ln_gru_b", "ln_post_w", "ln_post_b", "pa", "pe", "first",
                    "h0", "z0", "init_h", "init_z", "uniform", "starts", *_RECORDS,
                    "out_deter", "out_logits", "out_stoch", "work")])


class _GradArgs(Structure):
    _fields_ = [("f", POINTER(_Args))] + [(n, c_void_p) for n in (
        "g_deter", "g_logits", "g_stoch", *_GRADS, "gh", "gz", "g_init_h", "g_init_z", "work")]


def _takes(t: torch.Tensor) -> bool:
    """Whether the kernels can take `t`: float32 on the CPU, the C path on and built."""
    return (ENABLED and t.device.type == "cpu" and t.dtype == torch.float32
            and native.available("observe"))


def usable(rssm, x: torch.Tensor) -> bool:
    """Whether the C unroll runs for `rssm.observe` on `x` (given `rssm_fused.fusable`)."""
    return (_takes(x) and all(p.is_contiguous() for p in rssm.parameters())
            and gemm.cpu_gemm() == "mkl")


def _ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


class NativeObserve(torch.autograd.Function):
    """`rssm_fused._Observe` with the loops in C: the same inputs and outputs."""

    @staticmethod
    def forward(ctx, rssm, is_first, starts, pa, pe, h0, z0, init_h, init_z, *params):
        lib = native.load("observe")
        w_in, w_gru, w_post, w_out, b_out = params[:5]
        n_in, n_gru, n_post = rssm.img_in[1], rssm.cell.norm, rssm.post_net[1]
        normed = type(n_in) is torch.nn.LayerNorm
        B, T = is_first.shape
        S, D, H = rssm.stoch_dim, rssm.deter, w_in.shape[0]
        k, K = rssm.stoch, rssm.classes
        from worldzoo.components.rssm_fused import _act_kind  # (imports this module)

        sizes = {"z": S, "u1": H, "m1": 1, "r1": 1, "n1": H, "xh": H + D, "ug": 3 * D,
                 "mg": 1, "rg": 1, "reset": D, "cand": D, "newh": D, "upd": D, "u2": H,
                 "m2": 1, "r2": 1, "n2": H, "y": H, "soft": S, "probs": S, "h": D}
        rec = {n: torch.empty(T, B, sizes[n]) for n in _RECORDS}
        keep = {  # what the kernel reads, alive (and contiguous) while it runs
            "pa": pa.transpose(0, 1).contiguous(), "pe": pe.transpose(0, 1).contiguous(),
            "first": is_first.to(torch.float32).contiguous(),
            "starts": torch.tensor(starts, dtype=torch.uint8),
            "h0": h0.detach().contiguous(), "z0": z0.detach().contiguous(),
            "init_h": init_h.detach().contiguous(), "init_z": init_z.detach().contiguous(),
            "uniform": torch.rand(T, B, k),
            "work": torch.empty(B * (D + S + 3 * D) + S + 2 * k),
        }
        packed = lib.wz_pack[0] is not None
        if not packed:  # plain sgemm: the forward's products by row-major transposes
            keep.update(wt_s=w_in[:, :S].t().contiguous(), wt_gru=w_gru.t().contiguous(),
                        wt_d=w_post[:, :D].t().contiguous(), wt_out=w_out.t().contiguous())
        out = {"out_deter": torch.empty(B, T, D), "out_logits": torch.empty(B, T, k, K),
               "out_stoch": torch.empty(B, T, S)}
        norm = {"ln_gru_w": n_gru.weight, "ln_gru_b": n_gru.bias}
        if normed:
            norm.update(ln_in_w=n_in.weight, ln_in_b=n_in.bias, ln_post_w=n_post.weight,
                        ln_post_b=n_post.bias)
        args = _Args(
            B=B, T=T, S=S, k=k, K=K, H=H, D=D, act=0 if _act_kind(rssm.img_in[2]) == "silu"
            else 1, normed=int(normed), ld_in=w_in.shape[1], ld_post=w_post.shape[1],
            unimix=rssm.unimix, eps_in=n_in.eps if normed else 0.0, eps_gru=n_gru.eps,
            eps_post=n_post.eps if normed else 0.0, sgemm=lib.wz_sgemm,
            pack_size=lib.wz_pack[0], pack=lib.wz_pack[1], compute=lib.wz_pack[2],
            w_s=_ptr(w_in), w_gru=_ptr(w_gru), w_d=_ptr(w_post), w_out=_ptr(w_out),
            b_out=_ptr(b_out), **{n: _ptr(v) for n, v in norm.items()},
            **{n: _ptr(v) for n, v in (*keep.items(), *rec.items(), *out.items())})
        lib.wz_observe_forward(ctypes.byref(args))
        ctx.rssm, ctx.args, ctx.rec, ctx.keep, ctx.normed = rssm, args, rec, keep, normed
        ctx.save_for_backward(*params)  # autograd checks them for in-place changes
        logits = out["out_logits"]
        return out["out_deter"], logits.log_() if rssm.unimix > 0 else logits, \
            out["out_stoch"]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_deter, g_logits, g_stoch):
        params = ctx.saved_tensors
        w_in, w_gru, w_post, w_out, _ = params[:5]
        args, rec = ctx.args, ctx.rec
        B, T, S, D, H = args.B, args.T, args.S, args.D, args.H
        sizes = {"g_o": S, "g_n2": H, "g_u2": H, "g_ng": 3 * D, "g_ug": 3 * D, "g_n1": H,
                 "g_u1": H}
        gs = {n: torch.empty(T, B, sizes[n]) for n in _GRADS}
        carry = {"gh": torch.zeros(B, D), "gz": torch.zeros(B, S),
                 "g_init_h": torch.zeros(B, D), "g_init_z": torch.zeros(B, S)}
        ins = {"g_deter": g_deter.contiguous(), "g_logits": g_logits.contiguous(),
               "g_stoch": g_stoch.contiguous(),
               "work": torch.empty(B * (H + (H + D) + D + S))}
        grad_args = _GradArgs(f=ctypes.pointer(args), **{
            n: _ptr(v) for n, v in (*ins.items(), *gs.items(), *carry.items())})
        native.load("observe").wz_observe_backward(ctypes.byref(grad_args))
        # parameter gradients: one product (or reduction) over all T * B rows each
        flat = {n: v.view(T * B, -1) for n, v in (*rec.items(), *gs.items())}

        def grad(g: str, x: str) -> torch.Tensor:  # G^T X
            return gemm.matmul_nt(flat[g].t(), flat[x].t())

        g_w_in = torch.zeros_like(w_in)
        g_w_in[:, :S] = grad("g_u1", "z")
        g_w_post = torch.zeros_like(w_post)
        g_w_post[:, :D] = grad("g_u2", "h")
        norms = [("g_ng", "ug", "mg", "rg")]
        if ctx.normed:
            norms += [("g_n1", "u1", "m1", "r1"), ("g_n2", "u2", "m2", "r2")]
        affine = []
        for g, x, m, r in norms:
            xhat = (flat[x] - flat[m]) * flat[r]
            affine += [(flat[g] * xhat).sum(0), flat[g].sum(0)]
        return (None, None, None, gs["g_u1"].transpose(0, 1), gs["g_u2"].transpose(0, 1),
                carry["gh"], carry["gz"], carry["g_init_h"], carry["g_init_z"], g_w_in,
                grad("g_ug", "xh"), g_w_post, grad("g_o", "y"), flat["g_o"].sum(0), *affine)


def sample_usable(raw: torch.Tensor) -> bool:
    """Whether `sample_onehot` takes `raw` (a prior's raw output, or a state of the rows it
    will be drawn for, that needs no gradient)."""
    return (_takes(raw) and raw.dim() == 2 and not raw.requires_grad
            and not torch.is_autocast_enabled("cpu"))


def sample_onehot(raw: torch.Tensor, k: int, classes: int, unimix: float,
                  out: torch.Tensor | None = None) -> torch.Tensor:
    """One-hot samples [N, k * K] of softmax(raw) mixed with `unimix` uniform, by inverse CDF
    with one uniform per latent (torch's stream, as `dists.sample_onehot` draws it), on
    torch's intra-op threads (OpenMP). `out`: a [N, k * K] view (unit column stride) to write
    them into, through its pointer (see `write_rows`)."""
    raw = raw.contiguous()
    N = raw.shape[0]
    if out is None:
        out = torch.empty_like(raw)
    _check_rows(out, N, k * classes)
    uniform = torch.rand(N, k)
    native.load("observe").wz_sample_onehot(
        c_void_p(raw.data_ptr()), c_void_p(out.data_ptr()), out.stride(0),
        c_void_p(uniform.data_ptr()), N, k, classes, c_float(unimix))
    return out


def write_rows(src: torch.Tensor, out: torch.Tensor) -> None:
    """`out[:] = src` for 2-D float32 CPU tensors, through the pointers: autograd's version
    counter of `out`'s storage does not move. For imagination's feature buffer only, whose
    earlier steps' views the actor saved for its backward and whose rows written here no
    saved tensor reads (a torch copy would fail the backward's version check)."""
    src = src.contiguous()
    _check_rows(out, *src.shape)
    native.load("observe").wz_copy_rows(c_void_p(src.data_ptr()), src.shape[1],
                                        c_void_p(out.data_ptr()), out.stride(0), *src.shape)


def _check_rows(out: torch.Tensor, rows: int, cols: int) -> None:
    if not (out.dtype == torch.float32 and out.device.type == "cpu" and out.dim() == 2
            and out.shape == (rows, cols) and out.stride(1) == 1):
        raise ValueError(f"expected a [{rows}, {cols}] float32 CPU view with unit column "
                         f"stride, got {tuple(out.shape)} {out.dtype} strides {out.stride()}")
