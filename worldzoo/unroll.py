"""Linear layers applied at every step of an unrolled recurrence over a few rows (the world
model's `observe`: batch 16, 64 steps), computed as cuDNN computes an RNN's weights.

On a CPU, MKL multiplies 16 rows by a transposed weight (`nn.Linear`'s `x @ W^T`) 2-3x slower
than by a row-major one, and autograd adds each step's weight gradient into `W.grad` on its
own (one `g_t^T x_t` matmul with an inner dim of 16, then a pass over the whole gradient).
Inside `unrolled(module)`, each `StepLinear` of `module` instead
- multiplies by a row-major copy of `W^T`, made once per unroll;
- backpropagates each step's input gradient `g_t @ W` as before;
- defers the weight (and bias) gradient to one matmul over all steps, `G^T X`, once every
  step's gradient is in (autograd runs that node after all its consumers).
Same maths, not the same bits: the sums run in another order (float32 rounding, ~1e-7).
Outside `unrolled`, with gradients off, under autocast or for inputs that are not 2-D, a
`StepLinear` is an `nn.Linear`; its parameters and checkpoints are an `nn.Linear`'s. The
deferred gradients support `retain_graph` but not double backward (`create_graph`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from worldzoo import gemm
from worldzoo.nets import Linear


class _Tape:
    """One unroll of one layer: the row-major weight copy (MKL only: oneDNN takes W as it is,
    `worldzoo.gemm`), every step's input and output gradient, and `token`, a scalar every step
    reads so that autograd runs `_Collect`'s backward once, after all the steps' backwards
    (held only during the unroll: its node holds the tape, see `unrolled`)."""

    def __init__(self, layer: nn.Linear) -> None:
        self.layer, self.version = layer, layer.weight._version
        weight = layer.weight.detach()
        self.onednn = gemm.uses_onednn(weight, weight)
        self.weight_t = None if self.onednn else weight.t().contiguous()
        self.inputs: list[torch.Tensor] = []
        self.grads: dict[int, torch.Tensor] = {}
        params = (layer.weight,) if layer.bias is None else (layer.weight, layer.bias)
        self.token = _Collect.apply(self, *params)


class _Collect(torch.autograd.Function):
    """A scalar zero that depends on the layer's parameters; its backward turns the steps'
    (input, output gradient) pairs into the weight and bias gradients with one matmul."""

    @staticmethod
    def forward(ctx, tape: _Tape, weight: torch.Tensor, bias: torch.Tensor | None = None):
        ctx.tape, ctx.has_bias = tape, bias is not None
        return weight.new_zeros(())

    @staticmethod
    def backward(ctx, _):
        tape = ctx.tape
        steps = sorted(tape.grads)
        tape.grads, grads = {}, [tape.grads[i] for i in steps]
        if not steps:
            return None, None, None
        g = torch.cat(grads)
        x = torch.cat([tape.inputs[i] for i in steps])
        return None, gemm.matmul_nt(g.t(), x.t()), g.sum(0) if ctx.has_bias else None


class _Step(torch.autograd.Function):
    """`x @ W^T (+ b)` for one step; backward gives the input gradient and files the output
    gradient with the tape (the parameter gradients come from `_Collect`)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, token: torch.Tensor, tape: _Tape):
        ctx.tape, ctx.index = tape, len(tape.inputs)
        tape.inputs.append(x.detach())
        bias = tape.layer.bias
        bias = None if bias is None else bias.detach()
        if tape.onednn:  # (under torch.compile matmul_nt falls back to torch's own)
            return gemm.matmul_nt(x, tape.layer.weight.detach(), bias)
        return x @ tape.weight_t if bias is None else torch.addmm(bias, x, tape.weight_t)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        tape = ctx.tape
        if tape.layer.weight._version != tape.version:  # autograd's own check, for W
            raise RuntimeError("a StepLinear weight was modified in place between the unroll "
                               "and its backward; step the optimiser after backward()")
        tape.grads[ctx.index] = grad
        weight = tape.layer.weight.detach()
        grad_x = gemm.matmul_nt(grad, weight.t()) if ctx.needs_input_grad[0] else None
        return grad_x, tape.layer.weight.new_zeros(()), None  # the token's zero gradient


class StepLinear(Linear):
    """`nn.Linear` that, inside `unrolled`, computes as the module docstring says, when its
    weight has at least `min_weight` entries: below that (DreamerV1's 200-unit layers) the
    custom autograd nodes cost more than they save (measured in-process on the 2-core CPU,
    world-model loss forward + backward: DreamerV1 `small` 5% slower with all its layers
    deferred, DreamerV3 `xs` 12% and `s` 18% faster)."""

    min_weight = 1 << 17
    _tape: _Tape | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tape = self._tape
        if tape is None or x.dim() != 2 or not torch.is_grad_enabled():
            return super().forward(x)
        return _Step.apply(x, tape.token, tape)


@contextlib.contextmanager
def unrolled(module: nn.Module) -> Iterator[None]:
    """Within: `module`'s `StepLinear` layers defer their weight gradients over the steps run
    here (when gradients are on, the weights train, and no autocast is active)."""
    layers = [m for m in module.modules() if isinstance(m, StepLinear)
              and m.weight.requires_grad and m.weight.numel() >= m.min_weight]
    if not layers or not torch.is_grad_enabled() or torch.is_autocast_enabled(
            layers[0].weight.device.type):
        yield
        return
    for layer in layers:
        layer._tape = _Tape(layer)
    try:
        yield
    finally:
        for layer in layers:
            # the token's node holds the tape: dropping the tape's hold on the token breaks
            # the cycle, so the update's graph is freed with its last tensor, not by the GC
            layer._tape.token = None
            layer._tape = None


def start_steps(is_first: torch.Tensor) -> list[bool]:
    """Which steps of `is_first` [B, T] start an episode in any row: the unrolls blend in the
    initial state only there. One host sync per batch; while a CUDA graph is being captured
    (no sync allowed) every step blends, which is exact (a zero blend weight leaves the state
    unchanged) and holds for any batch the graph replays."""
    if is_first.is_cuda and torch.cuda.is_current_stream_capturing():
        return [True] * is_first.shape[1]
    return is_first.any(0).tolist()
