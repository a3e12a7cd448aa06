"""Families, declared once: one ``Family`` object per module in ``effbench.suite.families``.

A family owns what used to be spread over the runner: the protocol its techniques satisfy,
the levels it is measured at, the engine slot it plugs into, the kernel-level workloads and
runner, and its order in reports. Adding a family (the diffusion-LLM family, a "system" family
for disaggregation) is one new module that calls ``register_family``; third-party packages can
add one through the entry-point group ``effbench.families``. Baselines are not declared here:
they are the family's registered technique with ``baseline=True`` (``registry.baseline_of``).

This is part of the spec layer (adapters may import it): nothing heavy is imported at module
load, and the family modules import their level code lazily, inside the runner callables.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from effbench.suite.errors import unknown_name

if TYPE_CHECKING:  # pragma: no cover
    from effbench.suite.preset_checks import Section

ENTRY_POINT_GROUP = "effbench.families"
ENGINE_SLOTS = ("attention", "cache", "decoder", "scheduler")


@dataclass(frozen=True)
class Family:
    """One family of techniques and how the runner measures it.

    - ``protocol``: the typing.Protocol a technique's factory must return an implementation of
      (checked at registration, the missing method named);
    - ``levels``: the levels its techniques can be measured at;
    - ``engine_slot``: where the engine plugs a technique of this family in (None: not an
      engine component);
    - ``kernel_workloads(preset) -> [name]`` and ``kernel_run(case, ctx) -> [Metric]``: the
      kernel level (both None when the family has none); ``kernel_timed(case, ctx, impl)``
      returns the zero-argument timed work (the pytest-benchmark plugin times it);
    - ``kernel_needs_model``: whether kernel cases read the model's shape (head counts);
    - ``kernel_section(table, section) -> settings``: parses and validates the preset's
      ``[kernel.<name>]`` table (``table`` is ``{}`` when the preset has none, so it returns
      the defaults); ``section`` (effbench.suite.preset_checks.Section) locates keys as
      ``file:line`` and raises the preset's ConfigErrors. The result is
      ``preset.kernel[<name>]``. None: the family takes no kernel settings (and a preset
      naming ``[kernel.<name>]`` is refused);
    - ``order``: position in reports and listings.
    """

    name: str
    summary: str
    protocol: type
    levels: tuple[str, ...]
    engine_slot: str | None = None
    kernel_workloads: Callable[[Any], list[str]] | None = None
    kernel_run: Callable[[Any, Any], list[Any]] | None = None
    kernel_timed: Callable[[Any, Any, Any], Callable[[], Any]] | None = None
    kernel_needs_model: bool = False
    kernel_section: Callable[[Mapping[str, Any], Section], Any] | None = None
    order: int = 100

    def __post_init__(self) -> None:
        if self.engine_slot is not None and self.engine_slot not in ENGINE_SLOTS:
            raise ValueError(
                f"family {self.name}: engine_slot must be one of {list(ENGINE_SLOTS)} or None"
            )
        if "kernel" in self.levels and (self.kernel_run is None or self.kernel_workloads is None):
            raise ValueError(f"family {self.name}: the kernel level needs kernel_run and "
                             "kernel_workloads")

    def required_methods(self) -> list[str]:
        """The protocol's members an implementation must have (methods and attributes)."""
        names = getattr(self.protocol, "__protocol_attrs__", None)
        if names is None:  # Python < 3.12
            names = typing._get_protocol_attrs(self.protocol)  # type: ignore[attr-defined]
        return sorted(n for n in names if not n.startswith("_"))

    def check_implementation(self, cls: type, technique: str) -> None:
        """Raise ValueError naming the first protocol member ``cls`` lacks."""
        missing = [n for n in self.required_methods() if not hasattr(cls, n)]
        if missing:
            raise ValueError(
                f"technique '{technique}': {cls.__name__} does not satisfy the {self.name} "
                f"protocol ({self.protocol.__name__}): missing {', '.join(missing)}"
            )


_FAMILIES: dict[str, Family] = {}
_LOADED = False


def register_family(family: Family) -> Family:
    """Declare a family (called by each module of ``effbench.suite.families``)."""
    old = _FAMILIES.get(family.name)
    if old is not None and old.protocol is not family.protocol:
        raise ValueError(f"family '{family.name}' is declared twice")
    _FAMILIES[family.name] = family
    return family


def load_families() -> None:
    """Import every built-in family module and every plugin family module (once)."""
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from effbench.suite import families

    for mod in pkgutil.iter_modules(families.__path__, prefix="effbench.suite.families."):
        importlib.import_module(mod.name)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        importlib.import_module(ep.value.split(":")[0])


def families() -> list[Family]:
    """Every declared family, in report order."""
    load_families()
    return sorted(_FAMILIES.values(), key=lambda f: (f.order, f.name))


def family_names() -> list[str]:
    return [f.name for f in families()]


def get_family(name: str, where: str | None = None) -> Family:
    """The family called ``name``; a ConfigError lists the valid names (closest first)."""
    load_families()
    if name in _FAMILIES:
        return _FAMILIES[name]
    raise unknown_name("family", name, family_names(), where, "families")


def family_index(name: str) -> int:
    """Position of a family in report order (unknown names last)."""
    names = family_names()
    return names.index(name) if name in names else len(names)


def implementation_of(factory: Callable[..., Any]) -> type | None:
    """The class a technique factory builds: the factory itself if it is a class, else its
    return annotation (resolved in the factory's module); None when it declares none.
    """
    if inspect.isclass(factory):
        return factory
    try:
        hint = typing.get_type_hints(factory).get("return")
    except Exception:  # noqa: BLE001 - an unresolvable annotation counts as none
        return None
    return hint if inspect.isclass(hint) else None
