"""worldzoo: World Models, DreamerV1, V2 and V3 from one registry of swappable components.

    import worldzoo
    res = worldzoo.run("dreamerv1", "dmc:cartpole-balance", preset="small", steps=50_000)
    agent = worldzoo.load(res.dir)
    agent.evaluate(episodes=5)
    rssm = worldzoo.build("rssm", "categorical", embed=64, action=2)
"""

from worldzoo.registry import build, variants

__all__ = ["build", "variants", "run", "load", "get_recipe", "apply_sets"]


def __getattr__(name: str):  # lazy: importing worldzoo stays cheap
    if name == "run":
        from worldzoo.runs import run
        return run
    if name == "load":
        from worldzoo.api import load
        return load
    if name in ("get_recipe", "apply_sets"):
        from worldzoo import config
        return getattr(config, name)
    raise AttributeError(name)
