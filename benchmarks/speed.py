"""Speed benchmark of the Dreamer learner step. For each recipe x preset x observation kind x
precision it reports seconds per update (median) split into world model / imagination / actor /
critic, FLOPs per update (torch.utils.flop_counter) and the achieved GFLOP/s against this
machine's matmul peak (measured here with a large matmul in the same precision), peak memory,
acting speed, and env steps/s of the whole training loop at the recipe's train ratio. Every
configuration runs in a fresh process, so peak memory is its own. Prints (and with --out
writes) a Markdown table with the machine.

    python benchmarks/speed.py --recipes dreamerv3 --presets xs s --obs vector \
        --env dmc:cartpole-balance --updates 30 --out results/speed/dreamerv3_cpu.md

Data: random-action episodes of the real env in the replay, then steady-state updates on
batches sampled from it (batch and length from the preset); warm-up updates are not timed.
Nothing is compiled (torch.compile is not used by worldzoo), so compile time is zero.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing as mp
import os
import platform
import resource
import statistics
import time
from collections import defaultdict

import numpy as np
import torch

PHASES = ("world_model", "imagination", "actor", "critic")


def matmul_peak(device: str, n: int = 2048, seconds: float = 1.5,
                dtype: torch.dtype = torch.float32) -> float:
    """Sustained GFLOP/s of an n x n matmul in `dtype` (the update's precision): the median
    over `seconds` of back-to-back runs after one warm-up, with the fastest kernel this
    process has (on the CPU in float32: the better of MKL and oneDNN, `worldzoo.gemm`; MKL
    runs AVX2 kernels on AMD CPUs, at under half of their AVX-512 peak). Measured right
    before and after the timed updates in the same process, because this shared machine's
    rate drifts (200-330 GFLOP/s fp32 with MKL on 2 threads of the Intel Xeon)."""
    from worldzoo import gemm

    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    fns = [lambda: a @ b]
    if device == "cpu" and dtype == torch.float32 and gemm.onednn_available():
        fns.append(lambda: gemm.matmul_nt(a, b, backend="onednn"))
    best = 0.0
    for fn in fns:
        fn()
        rates, end = [], time.perf_counter() + seconds / len(fns)
        while time.perf_counter() < end or len(rates) < 3:
            _sync(device)
            t0 = time.perf_counter()
            fn()
            _sync(device)
            rates.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
        best = max(best, statistics.median(rates))
    return best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def build(recipe: str, preset: str | None, obs: str, env_id: str, sets: list[str],
          device: str, seed: int = 0, precision: str = "float32"):
    """(config, agent, driver, envs, replay) with random-action episodes of the real env in the
    replay: what the timed updates sample from."""
    from worldzoo.agent import Agent
    from worldzoo.config import apply_sets, get_recipe
    from worldzoo.driver import Driver, make_vector_env
    from worldzoo.graphs import check_cuda_graph
    from worldzoo.perf import tune_allocator
    from worldzoo.replay import Replay
    from worldzoo.trainer import env_factory

    tune_allocator()
    torch.manual_seed(seed)
    cfg = apply_sets(get_recipe(recipe, preset),
                     [f"env.obs={obs}", f"train.precision={precision}", *sets])
    check_cuda_graph(cfg, device)
    t = cfg["train"]
    opts = {k: v for k, v in cfg["env"].items() if k != "num_envs"}
    envs = make_vector_env([env_factory(env_id, opts, seed, 0)], False)
    agent = Agent(cfg, envs.single_observation_space, envs.single_action_space).to(device)
    driver = Driver(envs, agent.action_dim, agent.discrete)
    replay = Replay(100_000, 1, seed)
    rng = np.random.default_rng(seed)
    step = driver.reset()
    for _ in range(t["batch_length"] * 4):  # random data to learn from
        replay.add(step)
        env_act, agent_act = driver.random_actions(rng)
        if driver.all_last():
            env_act, agent_act = driver.zero_actions(), 0.0
        step, _ = driver.step(env_act, agent_act)
    return cfg, agent, driver, envs, replay, step


def measure(recipe: str, preset: str | None, obs: str, env_id: str, sets: list[str],
            updates: int, max_seconds: float, act_steps: int, device: str,
            seed: int = 0, precision: str = "float32", peak_seconds: float = 1.5) -> dict:
    """Time up to `updates` train steps (at least 3, at most ~max_seconds) after 2 warm-up
    updates, count one update's FLOPs, and time `act_steps` policy steps in the env."""
    from torch.utils.flop_counter import FlopCounterMode

    from worldzoo import gemm, native
    from worldzoo.agent import PRECISIONS

    cfg, agent, driver, envs, replay, step = build(recipe, preset, obs, env_id, sets, device,
                                                   seed, precision)
    dtype = PRECISIONS[precision] or torch.float32
    t = cfg["train"]
    # acting speed (policy + env)
    state, t0, env_steps = None, time.perf_counter(), 0
    for _ in range(act_steps):
        if driver.all_last():
            step, _ = driver.step(driver.zero_actions(), 0.0)
            state = None
            continue
        env_act, action, state = agent.policy(step, state, explore=True)
        step, _ = driver.step(env_act, action.cpu().numpy())
        env_steps += driver.last_env_steps
    act_time = time.perf_counter() - t0
    envs.close()

    def batch():
        return replay.sample(t["batch_size"], t["batch_length"], device)

    for _ in range(2):  # warm-up
        agent.train_step(batch())
    phase_flops: dict[str, int] = {}

    @contextlib.contextmanager
    def count(name: str):
        with FlopCounterMode(display=False) as counter:
            yield
        phase_flops[name] = counter.get_total_flops()

    # counted on the PyTorch path: the C unroll (worldzoo/native.py) makes the same products,
    # but inside C, where the counter does not see them
    with pytorch_path(), FlopCounterMode(display=False) as counter:
        agent.train_step(batch())
    flops = counter.get_total_flops()
    with pytorch_path():
        agent.train_step(batch(), count)  # the same work, counted per phase
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    phases: dict[str, list[float]] = defaultdict(list)

    @contextlib.contextmanager
    def phase(name: str):
        _sync(device)
        start = time.perf_counter()
        yield
        _sync(device)
        phases[name].append(time.perf_counter() - start)

    step = lambda b: agent.train_step(b, phase)  # noqa: E731
    if t.get("cuda_graph"):  # one replay per update: no phases to time
        from worldzoo.graphs import GraphedTrainStep

        step = GraphedTrainStep(agent, warmup=1)
        for _ in range(2):  # a side-stream warm-up, then the capture (and its replay)
            step(batch())
    peak_before = matmul_peak(device, dtype=dtype, seconds=peak_seconds)
    totals, begin = [], time.perf_counter()
    while len(totals) < updates and (len(totals) < 3 or time.perf_counter() - begin < max_seconds):
        b = batch()
        _sync(device)
        start = time.perf_counter()
        step(b)
        _sync(device)
        totals.append(time.perf_counter() - start)
    sec = statistics.median(totals)
    peak = (peak_before + matmul_peak(device, dtype=dtype, seconds=peak_seconds)) / 2
    if device.startswith("cuda"):
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:  # the process's peak resident memory (Linux reports KiB)
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seq = t["batch_size"] * t["batch_length"]
    policy_per_update = seq / t["train_ratio"]
    repeat = env_steps / max(1, act_steps)
    loop_policy_steps_s = policy_per_update / (sec + policy_per_update * act_time / act_steps)
    return {
        "recipe": recipe, "preset": preset or "paper", "obs": obs, "precision": precision,
        "cuda_graph": "yes" if t.get("cuda_graph") else "no",
        "gemm": gemm.cpu_gemm() if device == "cpu" else "-",
        "native": native.describe().split(" ")[0] if device == "cpu" else "-",
        "params_wm_M": sum(p.numel() for p in agent.wm.parameters()) / 1e6,
        "batch": f"{t['batch_size']}x{t['batch_length']}", "horizon": t["horizon"],
        "updates": len(totals), "s_per_update": sec,
        **{f"{k}_s": _median(phases[k]) for k in PHASES},
        **{f"{k}_pct": 100 * phase_flops.get(k, 0) / 1e9 / _median(phases[k]) / peak
           for k in PHASES},
        "gflop_per_update": flops / 1e9, "gflop_per_s": flops / 1e9 / sec,
        "peak_gflop_per_s": peak, "pct_peak": 100 * flops / 1e9 / sec / peak,
        "peak_mem_mb": peak_mb, "act_policy_steps_per_s": act_steps / act_time,
        "train_ratio": t["train_ratio"], "loop_env_steps_per_s": loop_policy_steps_s * repeat,
    }


def _median(xs: list[float]) -> float:
    """The median, NaN for none (phases are not timed inside a CUDA graph)."""
    return statistics.median(xs) if xs else float("nan")


COLUMNS = {  # column: format
    "recipe": "{}", "preset": "{}", "obs": "{}", "precision": "{}", "cuda_graph": "{}",
    "gemm": "{}", "native": "{}",
    "params_wm_M": "{:.2f}",
    "batch": "{}", "horizon": "{}", "updates": "{}", "s_per_update": "{:.3f}",
    "world_model_s": "{:.3f}", "imagination_s": "{:.3f}", "actor_s": "{:.3f}", "critic_s": "{:.3f}",
    "gflop_per_update": "{:.1f}", "gflop_per_s": "{:.0f}", "peak_gflop_per_s": "{:.0f}",
    "pct_peak": "{:.0f}%", **{f"{k}_pct": "{:.0f}%" for k in PHASES},
    "peak_mem_mb": "{:.0f}", "act_policy_steps_per_s": "{:.0f}", "train_ratio": "{:g}",
    "loop_env_steps_per_s": "{:.1f}",
}


def to_markdown(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(f.format(r[c]) for c, f in COLUMNS.items()) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def pytorch_path():
    """Within: the C kernels off (FLOP counting sees only PyTorch's ops)."""
    from worldzoo.components import rssm_native

    before, rssm_native.ENABLED = rssm_native.ENABLED, False
    try:
        yield
    finally:
        rssm_native.ENABLED = before


def machine(device: str) -> str:
    if device.startswith("cuda"):
        name = (f"{torch.cuda.get_device_name(torch.device(device))} (float32 matmuls: TF32 "
                f"{'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})")
    else:
        from worldzoo.perf import cpu_model

        name = f"{cpu_model()}, {os.cpu_count()} cores"
    return (f"{name}; {torch.get_num_threads()} torch threads, torch {torch.__version__}, "
            f"Python {platform.python_version()}")


def _child(queue, kwargs) -> None:
    torch.set_num_threads(kwargs.pop("threads"))
    queue.put(measure(**kwargs))


def _result(queue, proc) -> dict:
    """The child's row; fails (instead of waiting forever) if the child died without one."""
    import queue as queues

    while True:
        try:
            row = queue.get(timeout=5)
            proc.join()
            return row
        except queues.Empty:
            if not proc.is_alive():
                raise SystemExit(f"benchmark process failed (exit code {proc.exitcode}); "
                                 "its traceback is above") from None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="+", default=["dreamerv3"])
    p.add_argument("--presets", nargs="+", default=["small", "paper"])
    p.add_argument("--obs", nargs="+", default=["vector"], choices=["vector", "pixels"])
    p.add_argument("--precision", nargs="+", default=["float32"],
                   choices=["float32", "bfloat16"], help="train.precision of the updates")
    p.add_argument("--env", default="dmc:cartpole-balance")
    p.add_argument("--set", dest="sets", action="append", default=[])
    p.add_argument("--updates", type=int, default=30, help="timed updates (median reported)")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="stop timing a configuration after this long (at least 3 updates)")
    p.add_argument("--act-steps", type=int, default=200)
    p.add_argument("--peak-seconds", type=float, default=1.5,
                   help="time spent on each of the two matmul-peak measurements")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--out", help="also write the table to this Markdown file")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ctx, rows, failed = mp.get_context("spawn"), [], []
    for recipe in a.recipes:
        for preset in a.presets:
            for obs, precision in itertools.product(a.obs, a.precision):
                queue = ctx.Queue()
                kw = dict(recipe=recipe, preset=None if preset == "paper" else preset, obs=obs,
                          env_id=a.env, sets=a.sets, updates=a.updates,
                          max_seconds=a.max_seconds, act_steps=a.act_steps, device=a.device,
                          threads=a.threads, precision=precision,
                          peak_seconds=a.peak_seconds)
                proc = ctx.Process(target=_child, args=(queue, kw))
                proc.start()
                try:
                    rows.append(_result(queue, proc))
                except SystemExit as e:  # the next configurations still run
                    failed.append(f"{recipe} {preset} {obs} {precision}: {e}")
                    print(failed[-1], flush=True)
                    continue
                print(to_markdown(rows[-1:]), flush=True)
                if a.out:  # after every row: a run cut short keeps what it measured
                    write(a.out, rows, a)
    print(write(a.out, rows, a))
    if failed:
        raise SystemExit("failed configurations:\n" + "\n".join(failed))


def write(path: str | None, rows: list[dict], a: argparse.Namespace) -> str:
    """The table with its machine and method line; written to `path` if given."""
    text = (f"Machine: {machine(a.device)}. Env {a.env}. Median of up to {a.updates} updates "
            f"after 2 warm-up ones; phases are medians too. FLOPs: torch.utils.flop_counter "
            f"(matmuls and convolutions); <phase>_pct: that phase's FLOPs over its median time, as "
            f"a share of the peak. Peak: median rate of 2048^2 matmuls in the row's "
            f"precision (float32 on the CPU: the faster of MKL and oneDNN), in the same process "
            f"just before and after the updates; gemm: the backend of the update's float32 "
            f"CPU linears (worldzoo.gemm). cuda_graph: the update replayed as one CUDA graph "
            f"(train.cuda_graph; phases not timed, nan). Loop env "
            f"steps/s: acting + updates at the recipe's train ratio. No compilation (compile "
            f"time 0).\n\n"
            f"{to_markdown(rows)}\n")
    if path:
        with open(path, "w") as f:
            f.write(text)
    return text


if __name__ == "__main__":
    main()
