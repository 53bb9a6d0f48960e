"""Recurrent state-space models. `gaussian` (DreamerV1) and `categorical` (DreamerV2/V3) share
one recurrent core and one interface; only the latent's statistics, sampling and KL differ.

A state is a dict of tensors: `deter` [.., D], `stoch` [.., S] (flat), plus the latent's
statistics (`mean`/`std` or `logits`). Sequences carry a time dim: [B, T, ...].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from worldzoo import gemm
from worldzoo.components import rssm_fused, rssm_native
from worldzoo.dists import sample_onehot
from worldzoo.nets import MLP, full_precision, linear_block
from worldzoo.registry import define_slot, register
from worldzoo.unroll import StepLinear, start_steps, unrolled

define_slot("rssm", "latent dynamics: Gaussian (V1) or categorical straight-through (V2/V3)")

State = dict[str, torch.Tensor]


def clip_action(action: torch.Tensor, clip: float) -> torch.Tensor:
    """DreamerV3's action clip at the dynamics' input: `a * sg(clip / max(clip, |a|))`, so an
    imagined sample outside [-clip, clip] enters the model as the env would execute it, while
    its gradient still flows (scaled). `clip <= 0` is the identity (V1/V2)."""
    if clip <= 0:
        return action
    return action * (clip / action.detach().abs().clamp(min=clip))


def _where(first: torch.Tensor, init: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """`init` where `first` (shape [B]) is 1, else `value` (blended, so gradients reach both)."""
    f = first.reshape(-1, *([1] * (value.dim() - 1)))
    return value * (1.0 - f) + init * f


class NormGRUCell(nn.Module):
    """GRU with LayerNorm on the fused gates and update bias -1 (DreamerV2/V3)."""

    def __init__(self, inp: int, size: int) -> None:
        super().__init__()
        self.linear = StepLinear(inp + size, 3 * size, bias=False)
        self.norm = nn.LayerNorm(3 * size, eps=1e-3)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        gates = self.norm(self.linear(torch.cat([x, h], -1)))
        if gates.requires_grad and gates.dtype == h.dtype:  # observe: one node, same bits
            return _GRUGates.apply(gates, h)
        reset, cand, update = gates.chunk(3, -1)
        reset = torch.sigmoid(reset)
        cand = torch.tanh(reset * cand)
        update = torch.sigmoid(update - 1.0)
        # update * cand + (1 - update) * h in one op (in h's dtype under autocast)
        return torch.lerp(h, cand.to(h.dtype), update.to(h.dtype))


class RSSM(nn.Module):
    """Shared recurrent core: img_in -> GRU -> deter; prior from deter; posterior from
    (deter, embed). Subclasses define the latent (`stats_dim`, `_stats`, `_sample`, `kl`)."""

    stats_keys: tuple[str, ...] = ()
    fused = True  # observe may run as one node where rssm_fused applies (train.fused_unroll)

    def __init__(self, embed: int, action: int, stoch_dim: int, stats_dim: int, deter: int,
                 hidden: int, act: str, norm: str, cell: str, initial: str = "zeros",
                 action_clip: float = 0.0) -> None:
        super().__init__()
        self.action_clip = float(action_clip)
        if initial not in ("zeros", "learned"):
            raise ValueError(f"unknown rssm.initial '{initial}'; known: zeros, learned")
        # V3 2023: a learned initial deter, tanh(w), with the prior's mode as its stoch
        self.init_deter = nn.Parameter(torch.zeros(deter)) if initial == "learned" else None
        self.deter, self.stoch_dim, self.action_dim = deter, stoch_dim, action
        self.feat_dim = deter + stoch_dim
        # the nets run at every step of `observe` are StepLinear (worldzoo.unroll)
        self.img_in = nn.Sequential(*linear_block(stoch_dim + action, hidden, act, norm,
                                                  StepLinear))
        cells = {"gru": nn.GRUCell, "norm_gru": NormGRUCell}
        if cell not in cells:
            raise ValueError(f"unknown rssm cell '{cell}'; known: {', '.join(cells)}")
        self.cell = cells[cell](hidden, deter)
        self.prior_net = MLP(deter, stats_dim, 1, hidden, act, norm)
        self.post_net = MLP(deter + embed, stats_dim, 1, hidden, act, norm, linear=StepLinear)

    # -- latent-specific -------------------------------------------------------------
    def _stats(self, raw: torch.Tensor) -> State:
        raise NotImplementedError

    def _sample(self, stats: State) -> torch.Tensor:
        raise NotImplementedError

    def _mode(self, stats: State) -> torch.Tensor:
        raise NotImplementedError

    def kl(self, lhs: State, rhs: State) -> torch.Tensor:
        """KL(lhs || rhs) summed over the latent, shape = batch shape."""
        raise NotImplementedError

    def kl_pair(self, post: State, prior: State) -> tuple[torch.Tensor, torch.Tensor]:
        """(KL(sg(post) || prior), KL(post || sg(prior))): the same values, the first
        training the prior, the second the posterior (DreamerV2's balancing, V3's dyn/rep)."""
        return (self.kl({k: v.detach() for k, v in post.items()}, prior),
                self.kl(post, {k: v.detach() for k, v in prior.items()}))

    def _latent(self, raw: torch.Tensor) -> tuple[State, torch.Tensor]:
        """(statistics, sample) from a net's raw output; subclasses may share work."""
        stats = self._stats(raw)
        return stats, self._sample(stats)

    def _sample_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """A sample from a net's raw output when its statistics are not needed."""
        return self._latent(raw)[1]

    # -- shared ----------------------------------------------------------------------
    def initial(self, batch: int, device: torch.device | str = "cpu") -> State:
        """The state every episode starts from: zeros, or (initial=learned) tanh(w) with the
        prior's mode as stoch; gradients reach w through the episodes' first steps."""
        if self.init_deter is None:
            like = {"device": device, "dtype": self.img_in[0].weight.dtype}
            zeros = torch.zeros(batch, self.deter, **like)
            state = {"deter": zeros, "stoch": torch.zeros(batch, self.stoch_dim, **like)}
            state.update(self._stats(torch.zeros(batch, self.prior_net.out_dim, **like)))
            return state
        deter = torch.tanh(self.init_deter).expand(batch, -1)
        stats = self._stats(self.prior_net(deter))
        return {"deter": deter, "stoch": self._mode(stats), **stats}

    def feat(self, state: State) -> torch.Tensor:
        return torch.cat([state["stoch"], state["deter"]], -1)

    def _core(self, deter: torch.Tensor, stoch: torch.Tensor, action: torch.Tensor,
              clip: bool = True) -> torch.Tensor:
        if clip:  # `observe` clips the whole sequence once
            action = clip_action(action, self.action_clip)
        lin = self.img_in[0]
        if (torch.is_grad_enabled() and (stoch.requires_grad or action.requires_grad
                                         or lin.weight.requires_grad)) \
                or gemm.uses_onednn(stoch, lin.weight):
            x = self.img_in(torch.cat([stoch, action], -1))
        else:  # imagination without gradients, on MKL: the two column blocks, not a copy
            S = stoch.shape[-1]  # of both per step ([1024, 1025] at XS: 0.4-0.6 ms)
            x = F.linear(action, lin.weight[:, S:], lin.bias)  # (addmm, not addmm_: the
            x = self.img_in[1:](torch.addmm(x, stoch, lin.weight[:, :S].t()))  # FLOP count)
        # under autocast (train.precision) the recurrent state stays float32
        return full_precision(self.cell(x.to(deter.dtype), deter))

    def _prior(self, deter: torch.Tensor, sample: bool = True) -> State:
        stats = self._stats(self.prior_net(deter))
        return {"deter": deter, "stoch": self._sample(stats), **stats} if sample else stats

    def _reset(self, state: State, action: torch.Tensor, is_first: torch.Tensor,
               init: State | None = None):
        """Where an episode starts: the initial state and a zero previous action."""
        first = is_first.float()
        if init is None:
            init = self.initial(len(first), first.device)
        mix = {k: _where(first, init[k], v) for k, v in state.items()}
        return mix, action * (1.0 - first).unsqueeze(-1)

    def img_step(self, state: State, action: torch.Tensor,
                 out: torch.Tensor | None = None) -> State:
        """One step of the prior: imagine the next state (`deter`, `stoch`; imagination needs
        no statistics) from a state and an action. `out`: a row of `feat_buffer`'s buffer to
        write the new state's features into (then `stoch` and `deter` are views of it)."""
        deter = self._core(state["deter"], state["stoch"], action)
        if out is not None:
            return self._img_into(deter, out)
        return {"deter": deter, "stoch": self._sample_raw(self.prior_net(deter))}

    def feat_buffer(self, start: State, steps: int) -> torch.Tensor | None:
        """A [steps + 1, N, feat] buffer for imagination to write each step's features into
        (`img_step(..., out=buffer[t + 1])`), where this RSSM can; else None."""
        return None

    def _img_into(self, deter: torch.Tensor, out: torch.Tensor) -> State:
        raise NotImplementedError

    def obs_step(self, state: State, action: torch.Tensor, embed: torch.Tensor,
                 is_first: torch.Tensor) -> State:
        """One posterior step (acting): previous state + action + new observation."""
        state, action = self._reset(state, action, is_first)
        deter = self._core(state["deter"], state["stoch"], action)
        stats, stoch = self._latent(self.post_net(torch.cat([deter, embed], -1)))
        return {"deter": deter, "stoch": stoch, **stats}

    def observe(self, embed: torch.Tensor, action: torch.Tensor, is_first: torch.Tensor,
                state: State | None = None) -> tuple[State, State]:
        """Posterior and prior over a sequence [B, T]. `action[:, t]` is the action that led to
        step t. Only the recurrence runs per step; the prior head runs once over all steps.
        The layouts of DreamerV2/V3 run as one autograd node (`rssm_fused`), others unrolled
        here with autograd."""
        B, T = embed.shape[:2]
        init = self.initial(B, embed.device)
        if state is None:
            state = init
        if rssm_fused.fusable(self, embed):  # V2/V3: the whole unroll as one node
            deter_seq, logits, stoch = rssm_fused.observe(
                self, embed, clip_action(action, self.action_clip), is_first,
                state["deter"], state["stoch"], init)
            prior = self._prior(deter_seq, sample=False)
            prior["deter"] = deter_seq
            return {"stoch": stoch, "logits": logits, "deter": deter_seq}, prior
        deters, posts = [], []
        deter, stoch = state["deter"], state["stoch"]
        starts = start_steps(is_first)  # one host sync per batch, not one per step
        action = clip_action(action, self.action_clip)  # elementwise: once, not per step
        # unbind, not embed[:, t]: one backward node stacks the steps' gradients (each
        # select's backward would fill and add a whole [B, T, E] gradient)
        embeds, actions = embed.unbind(1), action.unbind(1)
        with unrolled(self):  # per-step weight gradients become one matmul over the steps
            for t in range(T):
                act = actions[t]
                if starts[t]:  # blending is the identity on steps where no episode starts
                    first = is_first[:, t].float()
                    deter, stoch, act = (_where(first, init["deter"], deter),
                                         _where(first, init["stoch"], stoch),
                                         act * (1.0 - first).unsqueeze(-1))
                deter = self._core(deter, stoch, act, clip=False)
                stats, stoch = self._latent(self.post_net(torch.cat([deter, embeds[t]], -1)))
                deters.append(deter)
                posts.append({"stoch": stoch, **stats})
        deter_seq = torch.stack(deters, 1)
        post = {k: torch.stack([p[k] for p in posts], 1) for k in posts[0]}
        post["deter"] = deter_seq
        prior = self._prior(deter_seq, sample=False)
        prior["deter"] = deter_seq
        return post, prior


@register("rssm", "gaussian")
class GaussianRSSM(RSSM):
    """DreamerV1: diagonal Gaussian latent, std = softplus(raw) + min_std, reparameterised."""

    stats_keys = ("mean", "std")

    def __init__(self, embed: int, action: int, stoch: int = 30, deter: int = 200,
                 hidden: int = 200, act: str = "elu", norm: str = "none", cell: str = "gru",
                 min_std: float = 0.1, initial: str = "zeros", action_clip: float = 0.0) -> None:
        self.min_std = min_std
        super().__init__(embed, action, stoch, 2 * stoch, deter, hidden, act, norm, cell,
                         initial, action_clip)

    def _stats(self, raw: torch.Tensor) -> State:
        mean, std = raw.chunk(2, -1)
        return {"mean": mean, "std": F.softplus(std) + self.min_std}

    def _sample(self, stats: State) -> torch.Tensor:
        return stats["mean"] + stats["std"] * torch.randn_like(stats["std"])

    def _mode(self, stats: State) -> torch.Tensor:
        return stats["mean"]

    def kl(self, lhs: State, rhs: State) -> torch.Tensor:
        var_ratio = (lhs["std"] / rhs["std"]).pow(2)
        t1 = ((lhs["mean"] - rhs["mean"]) / rhs["std"]).pow(2)
        return 0.5 * (var_ratio + t1 - 1 - var_ratio.log()).sum(-1)


@register("rssm", "categorical")
class CategoricalRSSM(RSSM):
    """DreamerV2/V3: `stoch` categorical latents of `classes` classes, one-hot samples with
    straight-through gradients, optional `unimix` (V3: 1% uniform mixed into the probs)."""

    stats_keys = ("logits",)

    def __init__(self, embed: int, action: int, stoch: int = 32, classes: int = 32,
                 deter: int = 512, hidden: int = 512, act: str = "elu", norm: str = "layer",
                 cell: str = "norm_gru", unimix: float = 0.0, initial: str = "zeros",
                 action_clip: float = 0.0) -> None:
        self.stoch, self.classes, self.unimix = stoch, classes, unimix
        super().__init__(embed, action, stoch * classes, stoch * classes, deter, hidden, act,
                         norm, cell, initial, action_clip)

    def _probs(self, raw: torch.Tensor, logits: bool = True):
        """(logits, probs) [..., stoch, classes], with unimix applied to both; logits None
        when not asked for."""
        out = raw.reshape(*raw.shape[:-1], self.stoch, self.classes)
        probs = torch.softmax(out, -1)
        if self.unimix > 0:
            if probs.requires_grad:
                probs = (1 - self.unimix) * probs + self.unimix / self.classes
            else:  # imagination without gradient: mix in place
                probs = probs.mul_(1 - self.unimix).add_(self.unimix / self.classes)
            out = torch.log(probs) if logits else None
        return out, probs

    def _stats(self, raw: torch.Tensor) -> State:
        return {"logits": self._probs(raw)[0]}

    def _onehot(self, probs: torch.Tensor) -> torch.Tensor:
        sample = sample_onehot(probs.detach())
        if probs.requires_grad:
            sample = sample + probs - probs.detach()  # straight-through
        return sample.reshape(*sample.shape[:-2], self.stoch_dim)

    def _sample(self, stats: State) -> torch.Tensor:
        return self._onehot(torch.softmax(stats["logits"], -1))

    def _latent(self, raw: torch.Tensor) -> tuple[State, torch.Tensor]:
        if raw.requires_grad and self.unimix > 0:  # the posterior in observe: one node
            out = raw.reshape(*raw.shape[:-1], self.stoch, self.classes)
            logits, sample = _MixedStraightThrough.apply(out, self.unimix)
            return {"logits": logits}, sample.reshape(*sample.shape[:-2], self.stoch_dim)
        logits, probs = self._probs(raw)
        return {"logits": logits}, self._onehot(probs)

    def feat_buffer(self, start: State, steps: int) -> torch.Tensor | None:
        """Where the C sample runs (float32 on the CPU, no gradient through the dynamics):
        the features [stoch | deter] of every imagined step are written into one buffer by
        C (the sample straight into its columns; no per-step concatenation, no final stack:
        ~13 ms per DreamerV3 XS update). Its rows go through pointers, which autograd's
        version counter does not see: the actor saves each step's row for its backward
        while the next rows are written, and a torch write would fail that check."""
        deter = start["deter"]
        if not rssm_native.sample_usable(deter):
            return None
        if torch.is_grad_enabled() and any(p.requires_grad for p in self.parameters()):
            return None  # (imagination outside `behavior.frozen`: the prior trains)
        return deter.new_empty(steps + 1, deter.shape[0], self.stoch_dim + self.deter)

    def _img_into(self, deter: torch.Tensor, out: torch.Tensor) -> State:
        S = self.stoch_dim
        raw = self.prior_net(deter)
        if raw.requires_grad:
            raise ValueError("img_step(out=...) is for imagination without gradients")
        rssm_native.sample_onehot(raw, self.stoch, self.classes, self.unimix, out=out[:, :S])
        rssm_native.write_rows(deter, out[:, S:])
        return {"deter": out[:, S:], "stoch": out[:, :S]}

    def _sample_raw(self, raw: torch.Tensor) -> torch.Tensor:
        if rssm_native.sample_usable(raw):  # imagination on the CPU: one C pass
            return rssm_native.sample_onehot(raw, self.stoch, self.classes, self.unimix)
        return self._onehot(self._probs(raw, logits=False)[1])

    def _mode(self, stats: State) -> torch.Tensor:
        probs = torch.softmax(stats["logits"], -1)
        onehot = F.one_hot(probs.argmax(-1), self.classes).to(probs.dtype)
        mode = onehot + probs - probs.detach()
        return mode.reshape(*mode.shape[:-2], self.stoch_dim)

    def kl(self, lhs: State, rhs: State) -> torch.Tensor:
        lp = torch.log_softmax(lhs["logits"], -1)
        rp = torch.log_softmax(rhs["logits"], -1)
        return (lp.exp() * (lp - rp)).sum((-2, -1))

    def kl_pair(self, post: State, prior: State) -> tuple[torch.Tensor, torch.Tensor]:
        if torch.is_autocast_enabled(post["logits"].device.type):
            return super().kl_pair(post, prior)
        return _KLPair.apply(post["logits"], prior["logits"])


class _KLPair(torch.autograd.Function):
    """`CategoricalRSSM.kl_pair` as one node: the KL computed once for both terms, and each
    term's gradient by its closed form (what autograd gives through log_softmax): w.r.t. the
    prior's logits g_dyn * (q - p), w.r.t. the posterior's g_rep * p * (log p - log q - the
    latent's KL). Half the passes over [B, T, stoch, classes] of two `kl` calls."""

    @staticmethod
    def forward(ctx, post_logits: torch.Tensor, prior_logits: torch.Tensor):
        lp = torch.log_softmax(post_logits, -1)
        rp = torch.log_softmax(prior_logits, -1)
        p, diff = lp.exp(), lp - rp
        per_latent = (p * diff).sum(-1, keepdim=True)
        ctx.save_for_backward(p, rp, diff, per_latent)
        kl = per_latent.sum((-2, -1))
        return kl, kl.clone()

    @staticmethod
    def backward(ctx, g_dyn: torch.Tensor, g_rep: torch.Tensor):
        p, rp, diff, per_latent = ctx.saved_tensors
        g_post = g_rep[..., None, None] * p * (diff - per_latent)
        g_prior = g_dyn[..., None, None] * (rp.exp() - p)
        return g_post, g_prior


class _MixedStraightThrough(torch.autograd.Function):
    """`CategoricalRSSM._probs` then `_onehot` with unimix, as one autograd node: softmax,
    mixing, log and the straight-through one-hot sample computed as written there, and the
    backward their chain rule in three ops (autograd's order of operations: the same bits)
    instead of a dozen nodes. It runs at each of observe's 64 steps over 16 rows, where the
    cost is per op, not per element."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, unimix: float):
        soft = torch.softmax(out, -1)
        probs = (1 - unimix) * soft + unimix / out.shape[-1]
        ctx.save_for_backward(soft, probs)
        ctx.unimix = unimix
        return torch.log(probs), sample_onehot(probs) + probs - probs

    @staticmethod
    def backward(ctx, grad_logits: torch.Tensor, grad_sample: torch.Tensor):
        soft, probs = ctx.saved_tensors
        return rssm_fused.latent_backward(grad_sample, grad_logits, soft, probs,
                                          ctx.unimix), None


class _GRUGates(torch.autograd.Function):
    """`NormGRUCell`'s gating from the normed gates [.., 3D] and the state h, as one autograd
    node: the forward as written there, the backward autograd's formulas for sigmoid, tanh,
    mul and lerp in its order (the same bits), without its per-node overhead at each of
    observe's steps."""

    @staticmethod
    def forward(ctx, gates: torch.Tensor, h: torch.Tensor):
        reset, cand, update = gates.chunk(3, -1)
        reset = torch.sigmoid(reset)
        new = torch.tanh(reset * cand)
        update = torch.sigmoid(update - 1.0)
        ctx.save_for_backward(reset, cand, new, update, h)
        return torch.lerp(h, new, update)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return rssm_fused.gru_gates_backward(grad, *ctx.saved_tensors)
