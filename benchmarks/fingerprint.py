"""Fingerprint of every Dreamer recipe's learner step: the sha256 of all parameters after two
updates from fixed seeds on the test suite's synthetic batches (debug preset, vector and pixel
observations, continuous actions, one thread), plus DreamerV3 at size XS (vector), whose
256-unit layers take the paths the debug sizes do not (`worldzoo/unroll.py`). A change meant to
keep the maths bit for bit (a speed change) must leave every line unchanged: run it in both
checkouts and diff.

    python benchmarks/fingerprint.py > after.txt
    git worktree add /tmp/before REV && python /tmp/before/benchmarks/fingerprint.py > before.txt
    diff before.txt after.txt

(A checkout older than this script: copy the script there; it imports the checkout it is in.)
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fingerprints(sets: list[str]) -> list[str]:
    """One line per recipe x observation kind: `recipe obs sha256[:16]`."""
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout's worldzoo, test helpers
    import torch
    from test_recipes import RECIPES, fake_batch, spaces

    from worldzoo.agent import Agent
    from worldzoo.config import apply_sets, get_recipe

    torch.set_num_threads(1)
    cases = [(r, "debug", obs) for r in RECIPES for obs in ("vector", "pixel")]
    lines = []
    for recipe, preset, obs in [*cases, ("dreamerv3", "xs", "vector")]:
        o, a = spaces(obs, "continuous")
        torch.manual_seed(0)
        agent = Agent(apply_sets(get_recipe(recipe, preset), ["train.horizon=3", *sets]), o, a)
        torch.manual_seed(1)
        for _ in range(2):
            agent.train_step(fake_batch(o, a))
        h = hashlib.sha256()
        for k, v in agent.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        lines.append(f"{recipe} {obs} {h.hexdigest()[:16]}" if preset == "debug"
                     else f"{recipe} {preset} {obs} {h.hexdigest()[:16]}")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--set", dest="sets", action="append", default=[],
                   help="extra --set overrides for every recipe")
    print("\n".join(fingerprints(p.parse_args().sets)))


if __name__ == "__main__":
    main()
