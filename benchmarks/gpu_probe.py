"""Where a GPU learner step loses time, in three measurements (run by gpu_check.sh):

1. host syncs: every operation inside `Agent.train_step` that makes the CPU wait for the GPU
   (torch.cuda.set_sync_debug_mode), with the worldzoo line that caused it;
2. GPU busy share: the union of kernel and copy intervals (torch.profiler, CUPTI) over the
   unprofiled wall time of the same updates, and kernels launched per update: a step whose
   GPU idles between many small kernels is bound by launch overhead, not by arithmetic;
3. CUDA graph: `train.cuda_graph`'s step (`worldzoo.graphs.GraphedTrainStep`: the whole
   update captured once and replayed on new batches copied into its static inputs), timed
   against eager updates of an identical agent on the same batches, with both runs' losses
   side by side (interleaved on one generator, so their random draws differ).

    python benchmarks/gpu_probe.py --recipe dreamerv3 --preset xs --env gym:Pendulum-v1
"""

from __future__ import annotations

import argparse
import collections
import statistics
import time
import traceback
import warnings

import torch

from worldzoo.benchmarks.speed import build
from worldzoo.graphs import GraphedTrainStep


def _setup(args: argparse.Namespace):
    """(agent, batch function) for one configuration, with a filled replay."""
    preset = None if args.preset == "paper" else args.preset
    cfg, agent, _, envs, replay, _ = build(args.recipe, preset, args.obs, args.env, args.set,
                                           args.device, 0, args.precision)
    envs.close()
    t = cfg["train"]
    return agent, lambda: replay.sample(t["batch_size"], t["batch_length"], args.device)


def host_syncs(agent, batch_fn) -> collections.Counter:
    """{(worldzoo line, message): count} of the syncs in one train step."""
    hits: collections.Counter = collections.Counter()

    def show(message, category, filename, lineno, file=None, line=None):
        frames = [f for f in traceback.extract_stack()[:-1]
                  if "worldzoo" in f.filename and "benchmarks" not in f.filename]
        where = (f"{frames[-1].filename.rsplit('worldzoo/', 1)[-1]}:{frames[-1].lineno} "
                 f"`{frames[-1].line}`" if frames else f"{filename}:{lineno}")
        hits[(where, str(message).splitlines()[0][:90])] += 1

    batch = batch_fn()
    torch.cuda.synchronize()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show  # catch_warnings restores the original on exit
        torch.cuda.set_sync_debug_mode("warn")
        try:
            agent.train_step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    torch.cuda.synchronize()
    return hits


def _union_us(intervals: list[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def gpu_busy(agent, batch_fn, n: int = 5) -> dict:
    """Kernel/copy time and launches per update, and their share of the plain wall time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    batches = [batch_fn() for _ in range(2 * n)]
    torch.cuda.synchronize()
    start = time.perf_counter()
    for b in batches[:n]:
        agent.train_step(b)
    torch.cuda.synchronize()
    wall = (time.perf_counter() - start) / n
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for b in batches[n:]:
            agent.train_step(b)
        torch.cuda.synchronize()
    dev = [e for e in prof.events() if e.device_type == DeviceType.CUDA]
    busy = _union_us([(e.time_range.start, e.time_range.end) for e in dev]) / 1e6 / n
    table = ""
    for key in ("self_device_time_total", "self_cuda_time_total"):
        try:
            table = prof.key_averages().table(sort_by=key, row_limit=15)
            break
        except (AttributeError, KeyError, ValueError):
            continue
    return {"wall_s": wall, "gpu_busy_s": busy, "busy_share": busy / wall,
            "device_ops_per_update": len(dev) / n, "table": table}


def graph_probe(args: argparse.Namespace, updates: int = 30) -> dict:
    """`train.cuda_graph`'s step (worldzoo.graphs) against eager updates of an identical agent
    on the same `updates` new batches, after 3 warm-ups and the capture on one batch."""
    agent, batch_fn = _setup(args)
    graphed = GraphedTrainStep(agent, warmup=3)
    first = batch_fn()
    for _ in range(3):
        graphed(first)
    torch.cuda.synchronize()
    start = time.perf_counter()
    graphed(first)  # the capture, then its first replay
    torch.cuda.synchronize()
    capture_s = time.perf_counter() - start
    batches = [batch_fn() for _ in range(updates)]

    eager, _ = _setup(args)
    for _ in range(4):
        eager.train_step(first)
    res: dict[str, list[float]] = {"graph_s": [], "eager_s": [], "graph_loss": [],
                                   "eager_loss": []}
    for b in batches:
        for name, step in (("graph", graphed), ("eager", eager.train_step)):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            metrics = step(b)
            torch.cuda.synchronize()
            res[f"{name}_s"].append(time.perf_counter() - t0)
            res[f"{name}_loss"].append(float(metrics["loss_model"]))
    return {"capture_s": capture_s, **res}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="dreamerv3")
    p.add_argument("--preset", default="xs", help="a preset of the recipe, or paper")
    p.add_argument("--obs", default="vector", choices=["vector", "pixels"])
    p.add_argument("--precision", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--env", default="gym:Pendulum-v1")
    p.add_argument("--set", action="append", default=[])
    p.add_argument("--device", default="cuda")
    p.add_argument("--skip", nargs="*", default=[], choices=["syncs", "busy", "graph"])
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_probe.py needs a CUDA device (torch sees none)")
    print(f"# {args.recipe} {args.preset} {args.obs} {args.precision} on "
          f"{torch.cuda.get_device_name()}, torch {torch.__version__}", flush=True)
    agent, batch_fn = _setup(args)
    for _ in range(2):
        agent.train_step(batch_fn())
    if "syncs" not in args.skip:
        hits = host_syncs(agent, batch_fn)
        print(f"\n## host syncs in one train step: {sum(hits.values())}")
        for (where, msg), n in hits.most_common():
            print(f"- {n} x {where}: {msg}")
    if "busy" not in args.skip:
        r = gpu_busy(agent, batch_fn)
        print(f"\n## GPU busy: {r['gpu_busy_s'] * 1e3:.1f} ms of kernels and copies in a "
              f"{r['wall_s'] * 1e3:.1f} ms update ({100 * r['busy_share']:.0f}%), "
              f"{r['device_ops_per_update']:.0f} device ops per update\n{r['table']}",
              flush=True)
    if "graph" not in args.skip:
        try:
            g = graph_probe(args)
        except Exception:  # the probe's answer is the reason, printed in full
            print("\n## CUDA graph capture failed:\n" + traceback.format_exc(), flush=True)
            return
        med = {k: statistics.median(g[k]) for k in ("graph_s", "eager_s")}
        print(f"\n## CUDA graph of the whole update: capture and first replay "
              f"{g['capture_s']:.2f} s; replay "
              f"{med['graph_s'] * 1e3:.1f} ms vs eager {med['eager_s'] * 1e3:.1f} ms "
              f"({med['eager_s'] / med['graph_s']:.2f}x), median of {len(g['graph_s'])}")
        print("loss_model graph: " + " ".join(f"{x:.3f}" for x in g["graph_loss"]))
        print("loss_model eager: " + " ".join(f"{x:.3f}" for x in g["eager_loss"]))


if __name__ == "__main__":
    main()
