"""A/B speed of the learner step between two checkouts, in lock-step, so that this shared
machine's drift (its matmul rate moves 200-330 GFLOP/s between minutes) cancels out: one
process per checkout, both alive at once, taking turns one update at a time (the order flips
every round), on the same synthetic batches. Prints the median seconds per phase of each,
their ratio, and the median and quartiles of the per-round (paired) ratios: an update's time
here swings by +-20% between minutes, and the paired ratio resolves a 5% change that the
ratio of the medians does not.

    python benchmarks/ab.py --base 849ed8c --recipe dreamerv3 --preset xs --updates 20
    python benchmarks/ab.py --base main~3 --head /path/to/other/checkout ...

`--base` is a git revision (checked out into a temporary worktree) or a directory; `--head`
defaults to this checkout. Both run on one CPU GEMM backend: `WORLDZOO_CPU_GEMM` if set, else
the one `auto` picks here, once (two processes probing at the same moment could each pick
another). Both must have `Agent.train_step(batch, phase)`. `--compile-head all`
runs the head's MLPs (every `nets.MLP`: encoder, decoder, heads, actor, critic and the RSSM's
nets) through `torch.compile` (inductor, static shapes), `--compile-head batched` only those
outside the RSSM (the nets that see whole [B, T] or imagined batches, not one step of a
recurrence), so `--base . --compile-head all` is eager against compiled on the same code; the
first update's time (it includes the compilation) is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GEMM_ENV = "WORLDZOO_CPU_GEMM"

CHILD = r"""
import contextlib, importlib.util, json, sys, time
from pathlib import Path
src = Path(sys.argv[2])  # this checkout's packages, not the editable install's mapping
for name, folder in (("worldzoo", "worldzoo"), ("worldzoo.algorithms", "algorithms"),
                     ("worldzoo.envs", "envs")):
    spec = importlib.util.spec_from_file_location(
        name, src / folder / "__init__.py", submodule_search_locations=[str(src / folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
import numpy as np, torch
from worldzoo.agent import Agent
import worldzoo.agent
assert Path(worldzoo.agent.__file__).is_relative_to(src), worldzoo.agent.__file__
from worldzoo.config import apply_sets, get_recipe
from worldzoo.perf import tune_allocator
from worldzoo.trainer import env_factory

recipe, preset, env_id, threads, sets, compiled = json.loads(sys.argv[1])
tune_allocator()
torch.set_num_threads(threads)
torch.manual_seed(0)
cfg = apply_sets(get_recipe(recipe, None if preset == "paper" else preset), sets)
opts = {k: v for k, v in cfg["env"].items() if k != "num_envs"}
env = env_factory(env_id, opts, 0, 0)()
obs_space, act_space = env.observation_space, env.action_space
env.close()
agent = Agent(cfg, obs_space, act_space)
if compiled:
    import torch._dynamo
    from worldzoo.nets import MLP
    # one code object (MLP.forward) serves every net and shape: room for all their graphs
    torch._dynamo.config.recompile_limit = 256
    torch._dynamo.config.accumulated_recompile_limit = 4096
    for name, module in agent.named_modules():
        if isinstance(module, MLP) and (compiled == "all" or not name.startswith("wm.rssm.")):
            module.compile(dynamic=False)
t = cfg["train"]
B, T = t["batch_size"], t["batch_length"]

def batch(i):
    rng = np.random.default_rng(i)
    out = {}
    for k in ("image", "vector"):
        if k in obs_space.spaces:
            shape = obs_space[k].shape
            x = (rng.integers(0, 256, (B, T, *shape), dtype=np.uint8) if k == "image"
                 else rng.standard_normal((B, T, *shape), dtype=np.float32))
            out[k] = torch.as_tensor(x)
    if agent.discrete:
        a = np.eye(agent.action_dim, dtype=np.float32)[rng.integers(0, agent.action_dim, (B, T))]
    else:
        a = rng.uniform(-1, 1, (B, T, agent.action_dim)).astype(np.float32)
    first = np.zeros((B, T), bool)
    first[:, 0] = True
    reward = rng.standard_normal((B, T), dtype=np.float32)
    out.update(action=torch.as_tensor(a), reward=torch.as_tensor(reward),
               is_first=torch.as_tensor(first), is_terminal=torch.zeros(B, T, dtype=torch.bool))
    return out

print("ready", flush=True)
for line in sys.stdin:
    i = int(line)
    times = {}
    @contextlib.contextmanager
    def phase(name):
        start = time.perf_counter()
        yield
        times[name] = time.perf_counter() - start
    b = batch(i)
    start = time.perf_counter()
    agent.train_step(b, phase)
    times["total"] = time.perf_counter() - start
    print(json.dumps(times), flush=True)
"""


def _checkout(rev: str, tmp: str) -> Path:
    path = Path(rev)
    if path.is_dir():
        return path.resolve()
    dest = Path(tmp) / "base"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(dest), rev],
                   check=True, capture_output=True)
    return dest


def _spawn(src: Path, args: argparse.Namespace, compiled: str | None = None) -> subprocess.Popen:
    spec = json.dumps([args.recipe, args.preset, args.env, args.threads, args.set, compiled])
    proc = subprocess.Popen([sys.executable, "-c", CHILD, spec, str(src)], cwd=src, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    if proc.stdout.readline().strip() != "ready":
        raise SystemExit(f"the {src} process did not start (see its error above)")
    return proc


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="git revision or checkout directory")
    ap.add_argument("--head", default=str(ROOT), help="checkout directory (default: this one)")
    ap.add_argument("--recipe", default="dreamerv3")
    ap.add_argument("--preset", default="xs")
    ap.add_argument("--env", default="dmc:cartpole-balance")
    ap.add_argument("--set", action="append", default=["env.obs=vector"],
                    help="override for both (repeatable; default env.obs=vector)")
    ap.add_argument("--updates", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--compile-head", choices=("all", "batched"),
                    help="torch.compile the head's MLPs: all, or those outside the RSSM "
                         "(inductor; needs a C++ compiler on CPU)")
    args = ap.parse_args(argv)
    if args.updates < 1:
        ap.error(f"--updates must be at least 1, got {args.updates}")
    if not os.environ.get(GEMM_ENV):  # one CPU GEMM backend for both, chosen once, here
        import torch

        from worldzoo import gemm
        torch.set_num_threads(args.threads)
        os.environ[GEMM_ENV] = gemm.cpu_gemm()
    print(f"{GEMM_ENV}={os.environ[GEMM_ENV]} for both processes")
    with tempfile.TemporaryDirectory() as tmp:
        base = _checkout(args.base, tmp)
        try:
            procs = {"base": _spawn(base, args),
                     "head": _spawn(Path(args.head), args, args.compile_head)}
            times: dict[str, list[dict]] = {k: [] for k in procs}
            first: dict[str, float] = {}
            for i in range(args.warmup + args.updates):
                order = list(procs) if i % 2 else list(procs)[::-1]
                for name in order:
                    procs[name].stdin.write(f"{i}\n")
                    procs[name].stdin.flush()
                    row = json.loads(procs[name].stdout.readline())
                    if i == 0:
                        first[name] = row["total"]
                    if i >= args.warmup:
                        times[name].append(row)
            for p in procs.values():
                p.stdin.close()
                p.wait()
        finally:
            if not Path(args.base).is_dir():
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(base)], capture_output=True)
    keys = list(times["head"][0])
    print(f"{args.recipe} {args.preset} ({' '.join(args.set)}), {args.updates} updates each, "
          f"alternating; base={args.base} head={args.head}"
          + (f" (compiled: {args.compile_head})" if args.compile_head else ""))
    print("first update s (includes compilation): " + ", ".join(
        f"{n} {v:.1f}" for n, v in first.items()))
    print("| checkout | " + " | ".join(f"{k} s" for k in keys) + " |")
    print("|---|" + "---|" * len(keys))
    med = {n: {k: statistics.median(r[k] for r in rows) for k in keys} for n, rows in times.items()}
    for name in times:
        print(f"| {name} | " + " | ".join(f"{med[name][k]:.3f}" for k in keys) + " |")
    print("| head / base | " + " | ".join(f"{med['head'][k] / med['base'][k]:.3f}" for k in keys)
          + " |")
    # each round ran both back to back: its ratio is paired, so drift between rounds cancels
    paired = {k: [h[k] / b[k] for h, b in zip(times["head"], times["base"])] for k in keys}
    quartiles = {k: statistics.quantiles(v, n=4, method="inclusive") if len(v) > 1 else v * 3
                 for k, v in paired.items()}
    print("| paired ratio: median [p25, p75] | " + " | ".join(
        f"{q[1]:.3f} [{q[0]:.3f}, {q[2]:.3f}]" for q in quartiles.values()) + " |")


if __name__ == "__main__":
    main()
