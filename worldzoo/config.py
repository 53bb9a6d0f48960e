"""Recipes and overrides. A recipe is a function in `worldzoo.algorithms.<name>` returning a
config: one `{"name": variant, **kwargs}` per slot, plus plain `train` and `env` sections.
`resolve` fills every variant's kwargs from its defaults; `apply_override` handles one
`--set KEY=VALUE` with the value cast to the default's type; unknown keys fail clearly."""

from __future__ import annotations

import ast
import copy
import hashlib
import importlib
import json
import pkgutil
from collections.abc import Callable
from typing import Any

from worldzoo import registry

Config = dict[str, Any]


class ConfigError(ValueError):
    """A user-caused configuration error; the message says what would be right."""


# -- recipes ---------------------------------------------------------------------------------
_RECIPES: dict[str, Callable[[], Config]] = {}
_PRESETS: dict[str, dict[str, dict[str, Any]]] = {}


def recipe(presets: dict[str, dict[str, Any]] | None = None):
    """Decorator registering a recipe under its function name, with named presets: dicts of
    dotted overrides (`{"rssm.deter": 64, "train.batch_size": 8}`)."""

    def deco(fn: Callable[[], Config]) -> Callable[[], Config]:
        if fn.__name__ in _RECIPES:
            raise ConfigError(f"recipe '{fn.__name__}' is registered twice")
        _RECIPES[fn.__name__] = fn
        _PRESETS[fn.__name__] = dict(presets or {})
        return fn

    return deco


def _load_recipes() -> None:
    import worldzoo.algorithms as algos

    for mod in pkgutil.iter_modules(algos.__path__):
        importlib.import_module(f"worldzoo.algorithms.{mod.name}")


def recipes() -> list[str]:
    _load_recipes()
    return sorted(_RECIPES)


def presets(name: str) -> list[str]:
    _load_recipes()
    return sorted(_PRESETS.get(name, {}))


def get_recipe(name: str, preset: str | None = None) -> Config:
    """The resolved config of a recipe, with a preset applied."""
    known = recipes()
    if name not in known:
        raise ConfigError(f"unknown recipe '{name}'; known recipes: {', '.join(known)}")
    cfg = resolve(_RECIPES[name]())
    if preset:
        if preset not in _PRESETS[name]:
            raise ConfigError(f"unknown preset '{preset}' for {name}; known presets: "
                              f"{', '.join(sorted(_PRESETS[name])) or 'none'}")
        for key, value in _PRESETS[name][preset].items():
            cfg = apply_override(cfg, key, value)
    return cfg


def slot_names(cfg: Config) -> list[str]:
    """Keys of a config that are slots (a dict with a variant `name`); the others (`train`,
    `env`, and plain values like `pipeline`) are settings."""
    return [k for k in cfg if isinstance(cfg[k], dict) and "name" in cfg[k]]


# Train settings every recipe has (robustness, docs/robustness.md); a recipe may override them.
TRAIN_DEFAULTS: dict[str, Any] = {
    "replay_storage": "memory",   # or "disk": chunk files under the run dir (exceeds RAM)
    "max_env_faults": 10,         # env faults in a row (per env) before the run stops
    "max_skipped_updates": 20,    # non-finite updates in a row before the run stops
    "threads": 0,                 # torch intra-op threads (0: torch's own choice); on a
                                  # busy CPU, 1 per run is often much faster for small nets
    "precision": "float32",       # learner-step compute: float32 or bfloat16 (autocast)
    "cuda_graph": False,          # CUDA only: the whole update as one CUDA graph (graphs.py)
    "fused_unroll": True,         # V2/V3 posterior unroll as one node (rssm_fused); false: the
                                  # autograd unroll (the same maths, for learning A/Bs)
    "eval_policy": "mode",        # evaluation acts with the policy's mode, or samples from it
}


def resolve(cfg: Config) -> Config:
    """Fill each slot's kwargs from its variant's defaults (recipe values win); check names."""
    cfg = copy.deepcopy(cfg)
    if isinstance(cfg.get("train"), dict):
        cfg["train"] = {**TRAIN_DEFAULTS, **cfg["train"]}
    for slot in slot_names(cfg):
        given = dict(cfg[slot])
        name = given.pop("name")
        defaults = _variant_defaults(slot, name)
        unknown = [k for k in given if k not in defaults]
        if unknown:
            raise ConfigError(f"{slot}={name} takes no kwarg {', '.join(unknown)}; it takes: "
                              f"{', '.join(defaults) or 'none'}")
        cfg[slot] = {"name": name, **defaults, **given}
    return cfg


def _variant_defaults(slot: str, name: str) -> dict[str, Any]:
    try:
        return registry.variant_kwargs(slot, name)
    except registry.RegistryError as e:
        raise ConfigError(str(e)) from None


# -- overrides ---------------------------------------------------------------------------------
def parse_set(item: str) -> tuple[str, str]:
    """'KEY=VALUE' -> (KEY, VALUE)."""
    if "=" not in item or item.startswith("="):
        raise ConfigError(f"malformed --set '{item}'; expected KEY=VALUE, e.g. rssm=gaussian, "
                          "rssm.deter=256 or train.batch_size=16")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


def cast(value: Any, default: Any, key: str) -> Any:
    """Cast a string to the type of `default` (bool, int, float, str, list/tuple, None)."""
    if not isinstance(value, str):
        return value
    try:
        if isinstance(default, bool):
            low = value.lower()
            if low in ("true", "1", "yes", "on"):
                return True
            if low in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if isinstance(default, int):
            as_float = float(value)
            if not as_float.is_integer():
                raise ValueError
            return int(as_float)
        if isinstance(default, float):
            return float(value)
        if isinstance(default, str):
            return value
        if isinstance(default, (list, tuple)):
            parsed = ast.literal_eval(value) if value[:1] in "[(" else value.split(",")
            return type(default)(parsed)
        if default is None:  # no type to follow (env options): JSON/YAML-style words too
            words = {"true": True, "false": False, "none": None, "null": None}
            if value.lower() in words:
                return words[value.lower()]
            try:
                return ast.literal_eval(value)
            except (ValueError, SyntaxError):
                return value
    except (ValueError, SyntaxError):
        pass
    raise ConfigError(f"bad value '{value}' for {key}: expected {type(default).__name__} "
                      f"like the default {default!r}")


def apply_override(cfg: Config, key: str, value: Any) -> Config:
    """Apply one override: `slot=variant`, `slot.kwarg=value`, `train.key=value` or
    `env.key=value` (env options are checked by the env backend)."""
    cfg = copy.deepcopy(cfg)
    slots = slot_names(cfg)
    sections = [k for k in cfg if k not in slots and isinstance(cfg[k], dict)]
    head, _, rest = key.partition(".")
    if head in slots and not rest:
        name = str(value)
        new = _variant_defaults(head, name)
        # sizes and options the new variant shares with the old one carry over
        carried = {k: v for k, v in cfg[head].items() if k in new and k != "name"}
        cfg[head] = {"name": name, **new, **carried}
        return cfg
    if head in slots:
        kwargs = cfg[head]
        if rest not in kwargs or rest == "name":
            known = [k for k in kwargs if k != "name"]
            raise ConfigError(f"{head}={kwargs['name']} has no kwarg '{rest}'; it takes: "
                              f"{', '.join(known) or 'none'}")
        kwargs[rest] = cast(value, kwargs[rest], key)
        return cfg
    if head == "env" and rest:
        cfg["env"][rest] = cast(value, None, key) if isinstance(value, str) else value
        return cfg
    if head in sections and rest:
        section = cfg[head]
        if rest not in section:
            raise ConfigError(f"unknown key '{key}'; known {head} keys: {', '.join(section)}")
        section[rest] = cast(value, section[rest], key)
        return cfg
    raise ConfigError(f"unknown key '{key}'; known slots: {', '.join(slots)}; "
                      f"sections: {', '.join(f'{s}.KEY' for s in sections)}")


def apply_sets(cfg: Config, items: list[str]) -> Config:
    """Apply `--set` items in order."""
    for item in items:
        cfg = apply_override(cfg, *parse_set(item))
    return cfg


# settings that change how a run executes, not what it learns: left out of run labels
RUNTIME_KEYS = ("train.threads", "train.checkpoint_every", "train.log_every",
                "train.max_env_faults", "train.max_skipped_updates",
                "train.cuda_graph",  # the same updates, replayed: not a method difference
                "train.fused_unroll")  # the same maths in another order (float64-equal)


def label(recipe_name: str, items: list[str]) -> str:
    """Run label: the recipe plus the overrides that change learning, e.g.
    `dreamerv3[rssm=gaussian]` (thread counts, checkpoint and log intervals, CUDA graphs are
    left out)."""
    sets = [f"{k}={v}" for k, v in map(parse_set, items) if k not in RUNTIME_KEYS]
    return f"{recipe_name}[{','.join(sets)}]" if sets else recipe_name


_NOT_SETTINGS = (*RUNTIME_KEYS, "train.steps")  # the budget is its own column

# Keys added after runs began recording config ids, with the value that does what runs made
# before them did: left out of the id at that value, so adding a key does not make every
# earlier run look like one made with other settings.
ADDED_DEFAULTS: dict[str, Any] = {"train.eval_policy": "mode"}


def config_id(config: dict | None) -> str:
    """A short sha256 of a run's resolved config (recipe, preset and overrides; runtime-only
    keys left out), so that runs under one method label made with different settings (a
    preset or a default changed in between) can be told apart. '' for no config."""
    if not config:
        return ""
    cfg = {slot: dict(v) if isinstance(v, dict) else v for slot, v in config.items()}
    for key in _NOT_SETTINGS:
        slot, _, name = key.partition(".")
        if isinstance(cfg.get(slot), dict):
            cfg[slot].pop(name, None)
    for key, value in ADDED_DEFAULTS.items():
        slot, _, name = key.partition(".")
        if isinstance(cfg.get(slot), dict) and cfg[slot].get(name) == value:
            del cfg[slot][name]
    blob = json.dumps(cfg, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def learning_label(run_label: str) -> str:
    """A stored run label without the runtime-only settings (labels written before they were
    left out): `dreamerv3[train.threads=1]` -> `dreamerv3`."""
    name, _, rest = run_label.partition("[")
    if not rest.endswith("]"):
        return run_label
    sets = [s for s in rest[:-1].split(",") if s.partition("=")[0] not in RUNTIME_KEYS]
    return f"{name}[{','.join(sets)}]" if sets else name
