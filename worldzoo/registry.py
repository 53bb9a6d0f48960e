"""One registry per slot: a slot names a paper difference, a variant is one choice for it.

A variant is a class (or factory) registered under a slot with `@register(slot, name)`. Its
keyword parameters *with defaults* are its configurable kwargs (what `--set slot.kwarg=` may
set); parameters without defaults are wiring that the assembler passes (sizes, spaces).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

_REGISTRIES: dict[str, dict[str, Callable[..., Any]]] = {}
_SLOT_DOCS: dict[str, str] = {}


class RegistryError(KeyError):
    """Unknown slot or variant, or a name registered twice."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0])


def define_slot(slot: str, doc: str) -> None:
    """Declare a slot (idempotent) with a one-line description for `worldzoo list`."""
    _REGISTRIES.setdefault(slot, {})
    _SLOT_DOCS[slot] = doc


def register(slot: str, name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register `fn` as variant `name` of `slot`. Registering a name twice fails."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        table = _REGISTRIES.setdefault(slot, {})
        if name in table:
            raise RegistryError(f"variant '{name}' is already registered in slot '{slot}'")
        table[name] = fn
        return fn

    return deco


def slots() -> list[str]:
    """All slot names, in definition order."""
    _load_builtin()
    return list(_REGISTRIES)


def slot_doc(slot: str) -> str:
    return _SLOT_DOCS.get(slot, "")


def variants(slot: str) -> list[str]:
    """The variant names of a slot."""
    _load_builtin()
    if slot not in _REGISTRIES:
        raise RegistryError(f"unknown slot '{slot}'; known slots: {', '.join(_REGISTRIES)}")
    return list(_REGISTRIES[slot])


def lookup(slot: str, name: str) -> Callable[..., Any]:
    """The class registered as `name` in `slot`; unknown names fail with the known ones."""
    known = variants(slot)
    if name not in known:
        raise RegistryError(
            f"unknown variant '{name}' for slot '{slot}'; known variants: {', '.join(known)}"
        )
    return _REGISTRIES[slot][name]


def variant_kwargs(slot: str, name: str) -> dict[str, Any]:
    """Configurable kwargs of a variant with their defaults (parameters that have defaults)."""
    fn = lookup(slot, name)
    params = inspect.signature(fn).parameters
    return {
        k: p.default
        for k, p in params.items()
        if p.default is not inspect.Parameter.empty
        and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }


def build(slot: str, name: str, *args: Any, **kwargs: Any) -> Any:
    """Build variant `name` of `slot`; kwargs it does not take fail with the ones it does."""
    fn = lookup(slot, name)
    known = variant_kwargs(slot, name)
    wiring = {
        k for k, p in inspect.signature(fn).parameters.items()
        if p.default is inspect.Parameter.empty
    }
    bad = [k for k in kwargs if k not in known and k not in wiring]
    if bad:
        raise RegistryError(
            f"{slot}={name} takes no kwarg {', '.join(map(repr, bad))}; "
            f"it takes: {', '.join(known) or 'none'}"
        )
    return fn(*args, **kwargs)


def _load_builtin() -> None:
    """Import the modules that register the built-in variants (cheap, idempotent)."""
    import worldzoo.components  # noqa: F401
    import worldzoo.worldmodels  # noqa: F401  (vae, memory, controller slots)
