"""Where a learner update's time goes, op by op, and what that allows: each aten op of a few
steady-state updates timed by wall clock (a TorchDispatchMode around the update, forward and
backward), grouped by op and input shapes, with the page faults it took. Products (mm, addmm,
bmm, oneDNN's linear, convolutions forward and backward: what the FLOP count counts) are split
from the rest, and the table ends with the share of the matmul peak the update could reach if
every non-product op took no time at all.

    python benchmarks/op_times.py --recipe dreamerv3 --preset xs --top 30
    python benchmarks/op_times.py --preset xs --phase world_model   # one phase of the update

Why not torch.profiler: on this CPU it makes allocation-heavy ops look slow. Its own
allocations keep glibc from reusing freed blocks, so large fresh outputs page-fault: the
[16, 1024, 1280] stack of imagined features took 159 ms per update under the profiler and
6.7 ms (0 faults) without it. The mode adds ~10 us per op, so the sum of op times is a bit
above the plain update; the update's own time is printed beside it.
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import time
from collections import defaultdict

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from worldzoo.benchmarks.speed import PHASES, build, matmul_peak

PRODUCTS = ("aten.mm.", "aten.addmm.", "aten.bmm.", "aten.baddbmm.", "mkldnn",
            "aten.convolution.", "aten.convolution_backward.", "aten.mkldnn_convolution.")


def _faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class OpTimer(TorchDispatchMode):
    """Wall time, calls and minor page faults per (op, input shapes)."""

    def __init__(self) -> None:
        super().__init__()
        self.stats: dict[tuple, list[float]] = defaultdict(lambda: [0, 0.0, 0])

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        f0, t0 = _faults(), time.perf_counter()
        out = func(*args, **(kwargs or {}))
        dt, df = time.perf_counter() - t0, _faults() - f0
        shapes = _shapes(args)
        s = self.stats[(str(func), shapes)]
        s[0] += 1
        s[1] += dt
        s[2] += df
        return out


def _shapes(args: tuple) -> tuple:
    """Input shapes; a list of tensors (cat, stack) as its first shape and its length."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            out.append(tuple(a.shape))
        elif isinstance(a, (list, tuple)) and a and isinstance(a[0], torch.Tensor):
            out.append(f"{len(a)}x{tuple(a[0].shape)}")
    return tuple(out)


def is_product(op: str) -> bool:
    return op.startswith(PRODUCTS)


def in_phase(mode, want: str):
    """A `phase` callback for `Agent.train_step` that enters the context `mode()` around the
    phase `want` only."""
    return lambda name: mode() if name == want else contextlib.nullcontext()


@contextlib.contextmanager
def _clock(times: list[float]):
    t0 = time.perf_counter()
    yield
    times.append(time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipe", default="dreamerv3")
    p.add_argument("--preset", default="xs")
    p.add_argument("--obs", default="vector", choices=["vector", "pixels"])
    p.add_argument("--env", default="dmc:cartpole-balance")
    p.add_argument("--set", dest="sets", action="append", default=[])
    p.add_argument("--updates", type=int, default=3, help="timed updates (after 6 warm-ups)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--top", type=int, default=30, help="rows of the table")
    p.add_argument("--peak-seconds", type=float, default=1.5, help="matmul peak timing")
    p.add_argument("--phase", choices=PHASES, help="time only this phase of the update")
    a = p.parse_args(argv)
    if a.updates < 1 or a.top < 1:
        p.error("--updates and --top must be at least 1")
    torch.set_num_threads(a.threads)
    cfg, agent, _, envs, replay, _ = build(a.recipe, a.preset, a.obs, a.env, a.sets, "cpu")
    envs.close()
    t = cfg["train"]
    batches = [replay.sample(t["batch_size"], t["batch_length"], "cpu")
               for _ in range(6 + 2 * a.updates)]
    for b in batches[:6]:
        agent.train_step(b)
    plain: list[float] = []
    for b in batches[6:6 + a.updates]:
        _run(agent, b, lambda: _clock(plain), a.phase)
    timer = OpTimer()
    for b in batches[6 + a.updates:]:
        _run(agent, b, lambda: timer, a.phase)
    peak = matmul_peak("cpu", seconds=a.peak_seconds)
    n = a.updates
    rows = sorted(timer.stats.items(), key=lambda kv: -kv[1][1])
    prod = sum(s[1] for k, s in rows if is_product(k[0])) / n
    rest = sum(s[1] for k, s in rows if not is_product(k[0])) / n
    faults = sum(s[2] for _, s in rows) / n
    what = f"{a.phase} phase" if a.phase else "update"
    print(f"{a.recipe} {a.preset} {a.obs}, {a.threads} threads, {n} updates: plain {what} "
          f"{sorted(plain)[n // 2]:.3f} s (median); under the timer: products {prod:.3f} s, "
          f"other ops {rest:.3f} s, {faults:.0f} page faults per {what}")
    print("\n| ms per update | calls | faults | op | input shapes |\n|---|---|---|---|---|")
    for (op, shapes), (calls, dt, df) in rows[:a.top]:
        print(f"| {dt / n * 1e3:.1f} | {calls / n:.0f} | {df / n:.0f} | {op} | "
              f"{' x '.join(map(str, shapes))[:90]} |")
    flops = _flops(agent, batches[0], a.phase)
    print(f"\nFLOPs per {what} {flops / 1e9:.1f} G; matmul peak {peak:.0f} GFLOP/s; products "
          f"at {flops / prod / 1e9:.0f} GFLOP/s ({flops / prod / 1e9 / peak:.0%} of peak); "
          f"the {what} at {flops / (prod + rest) / 1e9 / peak:.0%} of peak under the timer; "
          f"with every other op free: {flops / prod / 1e9 / peak:.0%}")
    from worldzoo import native

    if native.describe() == "c":
        print("The C kernels (worldzoo/native.py) run outside the timed ops: neither their time "
              "nor their products are above (WORLDZOO_NATIVE=off times the PyTorch path)")


def _flops(agent, batch, phase: str | None = None) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    _run(agent, batch, lambda: counter, phase)
    return float(counter.get_total_flops())


def _run(agent, batch, mode, phase: str | None) -> None:
    """One update inside the context `mode()`, or only its phase `phase` inside it."""
    if phase is None:
        with mode():
            agent.train_step(batch)
    else:
        agent.train_step(batch, in_phase(mode, phase))


if __name__ == "__main__":
    main()
