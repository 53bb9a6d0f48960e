"""The CPU matrix multiply behind every `nets.Linear` (and `unroll.StepLinear`): MKL, which
`torch.mm` and `nn.Linear` call on the CPU, or oneDNN, which PyTorch ships beside it.

MKL picks its kernels by CPU vendor: on an AMD EPYC (Zen 5, AVX-512) it ran a 2048^2 fp32
matmul at ~190 GFLOP/s on 2 threads where oneDNN's AVX-512 kernels ran the same product at
~440, the cores' FMA peak, and the learner's [1024-16384, 256-1280] products 2.2-2.7x faster
(results/speed/dreamerv3_cpu.md). On the Intel Xeon this project was first measured on, MKL
reached 260-330. So the backend is chosen per machine:

- `WORLDZOO_CPU_GEMM=auto` (the default): time both on one learner-sized product and take
  oneDNN only where it is at least `AUTO_MARGIN` times faster, so that a machine where the
  two are close stays on torch's default. The choice is kept per machine (CPU model, torch
  version, thread count) in `$XDG_CACHE_HOME/worldzoo/cpu_gemm.json` (default `~/.cache`):
  later runs there use the same backend, so a seed gives the same numbers run after run even
  when a probe is disturbed by other work starting beside it (delete the file to re-measure);
- `WORLDZOO_CPU_GEMM=mkl` or `onednn`: that one (`set_cpu_gemm` does the same in code).

Both compute in float32 with float32 accumulation (oneDNN's strict fp32 mode, no bf16
down-conversion): same maths, not the same bits. Only float32 CPU tensors outside autocast
use oneDNN here; CUDA, float64 and autocast's bf16 (which PyTorch already sends to oneDNN)
go through `torch` as before.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from worldzoo.perf import cpu_model

BACKENDS = ("auto", "mkl", "onednn")
AUTO_MARGIN = 1.25
MIN_ROWS = 4
ENV = "WORLDZOO_CPU_GEMM"

_resolved: str | None = None
_rates: dict[str, float] = {}


def onednn_available() -> bool:
    """Whether this PyTorch build can run float32 products on oneDNN."""
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def _dense(t: torch.Tensor) -> torch.Tensor:
    """`t`, copied where a dim of size > 1 has stride 0 (an `expand`): oneDNN multiplies
    those ~100x slower than the copy costs (a [16, 256] expanded state: 14 ms vs 0.1 ms)."""
    if any(st == 0 and n > 1 for st, n in zip(t.stride(), t.shape)):
        return t.contiguous()
    return t


def _nt(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """oneDNN's `a @ b^T (+ bias)` for 2-D `a` [M, K] and `b` [N, K] (any strides)."""
    return torch.ops.mkldnn._linear_pointwise(_dense(a), _dense(b), bias, "none", [], "")


def _nd(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`_nt` over the leading dims of `x` [..., K]: `F.linear`'s shapes."""
    return _nt(x.reshape(-1, x.shape[-1]), weight, bias).reshape(*x.shape[:-1], weight.shape[0])


def _register_flops() -> None:
    """Count oneDNN's product as torch.utils.flop_counter counts `mm` (the speed benchmark's
    FLOPs per update): 2 M K N."""
    from torch.utils.flop_counter import register_flop_formula

    @register_flop_formula(torch.ops.mkldnn._linear_pointwise)
    def _flops(x_shape, w_shape, *args, **kwargs) -> int:
        return 2 * math.prod(x_shape[:-1]) * x_shape[-1] * w_shape[0]


if onednn_available():
    _register_flops()


def rates(n: int = 1024, k: int = 1024, m: int = 256, reps: int = 7) -> dict[str, float]:
    """GFLOP/s of `[n, k] @ [k, m]^T` in float32 on this process's threads, per backend: the
    best of `reps` timings, taken in turns after one warm-up each, so that a burst of other
    work on the machine (another run starting beside this one) slows both alike or is
    discarded, rather than deciding the choice; oneDNN is left out where missing. The
    operands come from a private generator: in library use the probe runs lazily at the first
    float32 linear, after the caller seeded, and must not shift the seeded stream."""
    gen = torch.Generator().manual_seed(0)
    a, w = torch.randn(n, k, generator=gen), torch.randn(m, k, generator=gen)
    fns = {"mkl": lambda: F.linear(a, w)}
    if onednn_available():
        fns["onednn"] = lambda: _nt(a, w, None)
    best = dict.fromkeys(fns, float("inf"))
    for fn in fns.values():
        fn()
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: 2 * n * k * m / t / 1e9 for name, t in best.items()}


def set_cpu_gemm(name: str) -> str:
    """Use `name` (auto | mkl | onednn) from now on in this process; returns the backend that
    `auto` resolved to (it measures both once)."""
    global _resolved
    if name not in BACKENDS:
        raise ValueError(f"unknown CPU GEMM backend '{name}'; known: {', '.join(BACKENDS)} "
                         f"(set {ENV} to one of them)")
    if name == "onednn" and not onednn_available():
        raise ValueError("CPU GEMM backend 'onednn' asked for, but this PyTorch build has no "
                         "oneDNN (torch.backends.mkldnn.is_available() is False); use 'mkl'")
    if name == "auto":
        name = _auto()
    _resolved = name
    return name


def cache_path() -> Path:
    """Where `auto` keeps each machine's choice (module docstring)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "worldzoo" / "cpu_gemm.json"


def machine_key() -> str:
    """What a kept choice holds for: CPU model, torch version, intra-op threads."""
    return f"{cpu_model()} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def _auto() -> str:
    """`auto`: the kept choice for this machine, else measure both, choose and keep it."""
    path, key = cache_path(), machine_key()
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = {}
    entry = kept.get(key) if isinstance(kept, dict) else None
    if isinstance(entry, dict) and entry.get("backend") in ("mkl", "onednn") and (
            entry["backend"] == "mkl" or onednn_available()):
        _rates.clear()
        _rates.update(entry.get("rates", {}))
        return entry["backend"]
    _rates.clear()
    _rates.update(rates())
    fast = onednn_available() and _rates.get("onednn", 0.0) >= AUTO_MARGIN * _rates["mkl"]
    name = "onednn" if fast else "mkl"
    kept = kept if isinstance(kept, dict) else {}
    kept[key] = {"backend": name, "rates": {k: round(v, 1) for k, v in _rates.items()}}
    try:  # atomic: runs starting together each write a whole file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(kept, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, path)
    except OSError:  # a read-only home: measure again next time
        pass
    return name


def cpu_gemm() -> str:
    """The backend in use (resolving `WORLDZOO_CPU_GEMM`, default auto, on first call)."""
    if _resolved is None:
        set_cpu_gemm(os.environ.get(ENV, "auto") or "auto")
    return _resolved


def probe_rates() -> dict[str, float]:
    """The GFLOP/s behind `auto`'s choice (measured now or kept from the run that chose;
    empty if the backend was named)."""
    return dict(_rates)


def uses_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether `x @ weight^T` goes to oneDNN here (float32 CPU tensors, no autocast, not
    inside `torch.compile`, whose inductor lowers linears to its own kernels)."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 == weight.dtype
            and not torch.is_autocast_enabled("cpu") and not torch.compiler.is_compiling()
            and cpu_gemm() == "onednn")


def matmul_nt(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None,
              backend: str | None = None) -> torch.Tensor:
    """`a @ b^T (+ bias)` for 2-D tensors, without autograd (custom backward passes use it),
    on the process's backend or the one named."""
    if backend == "onednn" or (backend is None and uses_onednn(a, b)):
        return _nt(a, b, bias)
    return F.linear(a, b, bias)


class _OneDNNLinear(torch.autograd.Function):
    """`F.linear` by oneDNN: the forward and both gradients (input: g @ W, weight: g^T x)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None):
        ctx.save_for_backward(x.reshape(-1, x.shape[-1]), weight)
        ctx.shape, ctx.has_bias = x.shape, bias is not None
        return _nd(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x2, weight = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        need_x, need_w, need_b = ctx.needs_input_grad
        grad_x = _nt(g, weight.t(), None).reshape(ctx.shape) if need_x else None
        grad_w = _nt(g.t(), x2.t(), None) if need_w else None
        grad_b = g.sum(0) if ctx.has_bias and need_b else None
        return grad_x, grad_w, grad_b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear(x, weight, bias)` on the process's CPU GEMM backend. Products of fewer than
    `MIN_ROWS` rows (acting in one env) stay on torch's: there oneDNN is no faster and the
    extra Python costs more than the product (1 row of XS: 34 vs 19 us); without gradients
    the oneDNN product runs without an autograd node."""
    if x.dim() < 2 or x.numel() < MIN_ROWS * x.shape[-1] or not uses_onednn(x, weight):
        return F.linear(x, weight, bias)
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (x, weight, bias)):
        return _OneDNNLinear.apply(x, weight, bias)
    return _nd(x, weight, bias)
