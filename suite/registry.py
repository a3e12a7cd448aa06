"""The technique registry: a decorator for adapters, lookup with helpful errors, plugins.

Built-in adapters live in the ``adapters`` package and register on import; third-party
packages declare modules under the entry-point group ``effbench.techniques`` and are imported
the same way. Configs only *name* registered techniques: nothing is imported from a config.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from importlib.metadata import entry_points
from typing import Any

from effbench.suite.errors import unknown_name
from effbench.suite.family import family_index, get_family, implementation_of
from effbench.suite.technique import Paper, Param, Technique

ENTRY_POINT_GROUP = "effbench.techniques"
_REGISTRY: dict[str, Technique] = {}
_LOADED = False


def register(
    *,
    name: str,
    family: str,
    summary: str,
    paper: Paper | None = None,
    lossless: bool = False,
    baseline: bool = False,
    params: Iterable[Param] = (),
    levels: Iterable[str] = ("kernel", "engine"),
    requires: Iterable[str] = (),
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated factory as technique ``name``; returns the factory unchanged."""

    def deco(factory: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY and _REGISTRY[name].module != factory.__module__:
            raise ValueError(
                f"technique '{name}' is registered twice "
                f"({_REGISTRY[name].module} and {factory.__module__})"
            )
        tech = Technique(
            name=name,
            family=family,
            summary=summary,
            factory=factory,
            paper=paper,
            lossless=lossless,
            baseline=baseline,
            params=tuple(params),
            levels=tuple(levels),
            requires=tuple(requires),
            module=factory.__module__,
        )
        impl = implementation_of(factory)
        if impl is None:
            raise ValueError(
                f"technique '{name}': the factory {factory.__qualname__} must be a class or "
                "declare the class it returns (-> Class), so its protocol can be checked"
            )
        get_family(family).check_implementation(impl, name)
        _REGISTRY[name] = tech
        return factory

    return deco


def load_all() -> None:
    """Import every built-in adapter module and every plugin module (once)."""
    global _LOADED
    if _LOADED:
        return
    from effbench import adapters

    for mod in pkgutil.walk_packages(adapters.__path__, prefix="effbench.adapters."):
        importlib.import_module(mod.name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(ep.value.split(":")[0])
    _LOADED = True


def get(name: str, where: str | None = None) -> Technique:
    """The technique called ``name``; a ConfigError lists the valid names (closest first)."""
    load_all()
    if name in _REGISTRY:
        return _REGISTRY[name]
    raise unknown_name("technique", name, sorted(_REGISTRY), where)


def techniques(family: str | None = None) -> list[Technique]:
    """Registered techniques, baselines first within each family."""
    load_all()
    if family is not None:
        get_family(family)
    found = [t for t in _REGISTRY.values() if family in (None, t.family)]
    return sorted(found, key=lambda t: (family_index(t.family), not t.baseline, t.name))


def baseline_of(family: str) -> Technique:
    """The family's baseline technique (what speedups and quality deltas are relative to)."""
    for t in techniques(family):
        if t.baseline:
            return t
    raise LookupError(f"family {family} has no registered baseline")
