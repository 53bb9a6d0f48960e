"""Command line: `worldzoo run | list | eval | bench | plot | compare` (a thin layer over the
Python API)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _user_errors() -> tuple[type[BaseException], ...]:
    from worldzoo.checkpoint import CheckpointError
    from worldzoo.config import ConfigError
    from worldzoo.envs import EnvError
    from worldzoo.registry import RegistryError

    return (ConfigError, RegistryError, EnvError, CheckpointError)


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: what was wrong, and where the right usage is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="worldzoo", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("run", help="train a recipe on an env (a Sacred run under results/runs)",
                       description="Train RECIPE on --env, or continue a run with --resume.")
    r.add_argument("recipe", nargs="?", help="recipe name, e.g. dreamerv1 (see `worldzoo list`)")
    r.add_argument("--env", help="env id: dmc:walker-walk, gym:Pendulum-v1, or a bare "
                   "unambiguous id like walker-walk")
    r.add_argument("--steps", type=int, help="env steps to train for, action repeat counted "
                   "(default: the recipe's train.steps)")
    r.add_argument("--seed", type=int, help="random seed (default 0)")
    r.add_argument("--preset", help="size preset of the recipe: debug (tests), small (CPU "
                   "experiments), paper (default)")
    r.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override: slot=variant, slot.kwarg=value, train.key=value, "
                   "env.key=value; repeatable, applied in order")
    r.add_argument("--results", default="results", help="results directory (default results/)")
    r.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda[:N]")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its "
                   "newest checkpoint (recipe and options come from the run's config)")
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    sub.add_parser("list", help="recipes with presets, slots with variants, env backends")

    e = sub.add_parser("eval", help="evaluate a trained agent",
                       description="Run evaluation episodes with a run's newest checkpoint "
                       "(or the given checkpoint directory).")
    e.add_argument("checkpoint", help="run directory or checkpoint directory")
    e.add_argument("--episodes", type=int, default=10, help="episodes (default 10)")
    e.add_argument("--video", help="write the first episode as a video, e.g. out.mp4")
    e.add_argument("--env", help="evaluate on another env id than the run's")
    e.add_argument("--policy", choices=("mode", "sample"),
                   help="act with the policy's mode or sample from it (default: the run's "
                        "train.eval_policy)")
    e.add_argument("--device", default="cpu", help="cpu or cuda[:N] (default cpu)")
    b = sub.add_parser("bench", help="run a benchmark suite (resumable sweep)",
                       description="Run every method x task x seed of SUITE that the run store "
                       "does not hold finished yet; continue interrupted runs from their "
                       "checkpoints; write results/scores/SUITE.csv.")
    b.add_argument("suite", help="suite name: smoke, cpu-proprio, dmc-proprio, dmc-vision")
    b.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the suite's)")
    b.add_argument("--recipes", nargs="+", metavar="METHOD", help="methods instead of the "
                   "suite's, e.g. dreamerv3 'dreamerv3[rssm=gaussian]'")
    b.add_argument("--tasks", nargs="+", metavar="ENV", help="env ids instead of the suite's")
    b.add_argument("--steps", type=int, help="env-step budget per run (default: the suite's)")
    b.add_argument("--workers", type=int, help="local pool size (default: sized to the machine)")
    b.add_argument("--ray", metavar="ADDRESS", help="run as Ray tasks on the cluster at ADDRESS "
                   "(auto: the running cluster; local: start one here)")
    b.add_argument("--observer", action="append", default=[], metavar="sql[:URL]",
                   help="also record runs with Sacred's SQL observer: sql (SQLite file "
                   "RESULTS/runs.sqlite) or sql:URL, e.g. sql:postgresql://user:pw@host/db")
    b.add_argument("--results", default="results", help="results directory (default results/)")
    b.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda[:N]")
    b.add_argument("--dry-run", action="store_true", help="print the plan, run nothing")
    b.add_argument("--scores-only", action="store_true", help="only rewrite the scores table")

    pl = sub.add_parser("plot", help="plots and tables from results/scores",
                        description="Regenerate results/plots/ from the score tables alone.")
    pl.add_argument("--results", default="results", help="results directory (default results/)")
    pl.add_argument("--reference", metavar="DIR", help="overlay the papers' curves from DIR "
                    "(../shared/reference-scores format)")
    pl.add_argument("--runs", metavar="DIR", help="first (re)write results/scores/adhoc.csv "
                    "from the finished runs under DIR/runs that no suite made (e.g. runs of "
                    "`worldzoo run --results DIR`)")
    pl.add_argument("--partial", action="store_true", help="with --runs: include runs that "
                    "have not finished (running or interrupted), with their curves so far")
    pl.add_argument("--merge", action="store_true", help="with --runs: keep the rows of "
                    "adhoc.csv whose runs are not under DIR (runs of other results dirs)")
    pl.add_argument("--label", metavar="TEXT", help="with --runs: append TEXT to the method "
                    "of every run read from DIR (e.g. a code version), so runs of one recipe "
                    "made by two checkouts plot as two lines")
    pl.add_argument("--method", metavar="NAME", help="with --runs: plot every run read from "
                    "DIR as method NAME instead of its run label (e.g. runs made with an "
                    "override that the preset has since adopted, beside runs of the preset); "
                    "runs of other settings under one name are refused")

    c = sub.add_parser("compare", help="is one method's score different from another's beyond "
                       "seed noise? (permutation test and Welch interval over seeds)",
                       description="Two methods of the score tables (results/scores/*.csv) on "
                       "one task at one budget: per-seed returns, the difference of means "
                       "with a 95% Welch interval and a two-sided permutation test. A side "
                       "given as 'A + B' pools the seeds of methods A and B.")
    c.add_argument("first", help="baseline method, as the score tables name it (e.g. dreamerv3); "
                   "'A + B' pools two methods' seeds")
    c.add_argument("second", help="the method compared against it")
    c.add_argument("--task", required=True, help="env id as in the tables, e.g. "
                   "dmc:cartpole-balance")
    c.add_argument("--at", type=int, required=True, metavar="STEPS",
                   help="budget in env steps (action repeat counted)")
    c.add_argument("--measure", choices=("eval", "train"), default="eval",
                   help="eval: each seed's last evaluation in the budget's last 10%%; train: "
                   "mean training-episode return over the last 10k env steps (the reference "
                   "scores' protocol). Default eval")
    c.add_argument("--results", default="results", help="results directory (default results/)")
    return p


def cmd_bench(args) -> int:
    from worldzoo import bench, scores, sqlstore
    from worldzoo.benchmarks import get_suite

    for name in ("seeds", "steps", "workers"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            raise _user_errors()[0](f"--{name} must be >= 1, got {getattr(args, name)}")
    suite = get_suite(args.suite, seeds=args.seeds, steps=args.steps,
                      methods=tuple(args.recipes) if args.recipes else None,
                      tasks=tuple(args.tasks) if args.tasks else None)
    if args.scores_only:
        urls = [sqlstore.url_of(o, args.results) for o in args.observer]
        print(f"scores written: {scores.write_suite(suite.name, args.results, urls)}")
        return 0
    out = bench.sweep(suite, args.results, args.observer, workers=args.workers, ray=args.ray,
                      device=args.device, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    for job, err in out["failures"]:
        print(f"failed: {job}: {err}", file=sys.stderr)
    print(f"bench {suite.name}: {out['total']} runs, {out['skipped']} already finished, "
          f"{out['resumed']} resumed, {out['started']} started, {len(out['failures'])} failed "
          f"in {out['seconds']:.0f} s; scores: {out['scores']}")
    return 1 if out["failures"] else 0


def cmd_list() -> None:
    from worldzoo import config, registry
    from worldzoo.envs import backend_status

    print("recipes:")
    for name in config.recipes():
        print(f"  {name:<14} presets: {', '.join(config.presets(name))}")
    print("slots (set with --set SLOT=VARIANT):")
    for slot in registry.slots():
        print(f"  {slot:<14} {', '.join(registry.variants(slot)):<40} {registry.slot_doc(slot)}")
    print("env backends:")
    for b in backend_status():
        mark = "installed" if b["installed"] else f"missing: pip install 'worldzoo[{b['extra']}]'"
        print(f"  {b['name']:<8} {mark:<44} {b['summary']}")


def check_video_path(video: str | None) -> None:
    """A video path must end in .mp4 or .gif and lie in an existing directory."""
    if video is None:
        return
    from pathlib import Path

    from worldzoo.config import ConfigError

    path = Path(video)
    if path.suffix.lower() not in (".mp4", ".gif"):
        raise ConfigError(f"--video {video}: unknown video type '{path.suffix}'; use a name "
                          "ending in .mp4 or .gif")
    if not path.parent.is_dir():
        raise ConfigError(f"--video {video}: directory {path.parent} does not exist; create "
                          "it or write the video elsewhere")


def main(argv: list[str] | None = None) -> int:
    from worldzoo.faults import RunStoppedError

    args = build_parser().parse_args(argv)
    try:
        if args.command == "list":
            cmd_list()
        elif args.command == "run":
            from worldzoo.runs import run

            if args.resume is None and (args.recipe is None or args.env is None):
                raise _user_errors()[0]("run needs RECIPE and --env ENV (or --resume RUN_DIR)")
            res = run(args.recipe, args.env, steps=args.steps, seed=args.seed,
                      preset=args.preset, sets=args.sets, results=args.results,
                      device=args.device, resume=args.resume, quiet=args.quiet)
            print(f"run finished: {res.dir}  eval return {res.result.get('eval_return')}")
        elif args.command == "bench":
            return cmd_bench(args)
        elif args.command == "plot":
            from worldzoo import plots, scores

            for flag in ("partial", "merge", "label", "method"):
                if getattr(args, flag) and args.runs is None:
                    raise _user_errors()[0](f"--{flag} needs --runs DIR")
            if args.runs is not None:
                if not (Path(args.runs) / "runs").is_dir():
                    raise _user_errors()[0](f"--runs {args.runs}: no runs/ directory there; "
                                            "pass the --results DIR the runs were made with")
                df = scores.from_stores(args.runs, partial=args.partial)
                df = df[df["suite"] == "adhoc"]
                if args.method:
                    df = df.assign(method=args.method)
                if args.label:
                    df = df.assign(method=df["method"] + f" {args.label}")
                path = Path(args.results) / "scores" / "adhoc.csv"
                if args.merge and path.is_file():
                    df = scores.merge(scores.load_table(path), df)
                scores.check_unique_seeds(df)
                scores.check_same_config(df)
                path.parent.mkdir(parents=True, exist_ok=True)
                df.to_csv(path, index=False, float_format="%.6g")
                print(f"wrote {path}")
            for path in plots.plot_all(args.results, args.reference):
                print(f"wrote {path}")
            why = scores.mixed_configs(scores.load(args.results))
            if why:  # suite tables: `bench` writes them; say so, but still plot
                print(f"warning: {why}; the plots pool their seeds as one method (delete the "
                      "stale runs and sweep again, or sweep into another --results)",
                      file=sys.stderr)
        elif args.command == "compare":
            from worldzoo import compare, scores

            df = scores.load(args.results)
            if df.empty:
                raise _user_errors()[0](f"no score tables under {args.results}/scores; make "
                                        "them with `worldzoo bench` or `worldzoo plot --runs`")
            print(compare.compare(df, args.task, args.first, args.second, args.at,
                                  args.measure).markdown())
        elif args.command == "eval":
            from worldzoo.api import load

            if args.episodes < 1:
                raise _user_errors()[0](f"--episodes must be >= 1, got {args.episodes}")
            check_video_path(args.video)
            agent = load(args.checkpoint, args.device)
            kw = {}
            if args.policy:
                if not hasattr(agent, "agent"):
                    raise _user_errors()[0]("--policy is for Dreamer runs: a World Models "
                                            "controller is deterministic")
                kw["policy"] = args.policy
            returns = agent.evaluate(args.episodes, env=args.env, video=args.video, **kw)
            mean = sum(returns) / len(returns)
            print(f"{len(returns)} episodes: mean return {mean:.2f} "
                  f"(min {min(returns):.2f}, max {max(returns):.2f})")
    except KeyboardInterrupt:
        print("worldzoo: interrupted", file=sys.stderr)
        return 130
    except _user_errors() as e:
        print(f"worldzoo: error: {e}", file=sys.stderr)
        return 2
    except RunStoppedError as e:
        print(f"worldzoo: stopped: {e}", file=sys.stderr)
        return 3
    except ImportError as e:
        print(f"worldzoo: error: missing dependency ({e}); install the extra that provides "
              "it, e.g. pip install 'worldzoo[dmc]'", file=sys.stderr)
        return 2
    return 0
