"""The ``Technique`` spec: what one adapter declares about itself, validated once.

A technique is registered with ``effbench.suite.registry.register`` and is data only (frozen), so
the
CLI can list, validate and sweep it without running anything. ``factory(**params)`` builds the
object that satisfies the family's protocol (effbench.kernels_ref.protocols).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from effbench.suite.errors import ConfigError
from effbench.suite.family import get_family

LEVELS = ("kernel", "engine", "serving")
REQUIREMENTS = ("draft-model", "cuda")


class _FromKernel:
    """Marker default: take this parameter's default from the kernel (``from_kernel``)."""

    def __repr__(self) -> str:
        return "<kernel default>"


FROM_KERNEL: Any = _FromKernel()
_TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}


@dataclass(frozen=True)
class Paper:
    title: str
    arxiv: str = ""

    def __str__(self) -> str:
        return f"{self.title} (arXiv:{self.arxiv})" if self.arxiv else self.title


@dataclass(frozen=True)
class Param:
    """One typed parameter with its default, its valid range and its default sweep."""

    name: str
    type: str
    default: Any = FROM_KERNEL
    help: str = ""
    choices: tuple[Any, ...] = ()
    min: float | None = None
    max: float | None = None
    sweep: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if self.type not in _TYPES:
            raise ValueError(f"param {self.name}: type must be one of {sorted(_TYPES)}")
        if self.default is not FROM_KERNEL:
            self.check(self.default, where=f"default of {self.name}")
        for v in self.sweep:
            self.check(v, where=f"sweep of {self.name}")

    def check(self, value: Any, where: str | None = None) -> Any:
        """Return ``value`` coerced to the declared type, or raise ConfigError naming the range."""
        want = _TYPES[self.type]
        ok = isinstance(value, want) and not (want is not bool and isinstance(value, bool))
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise ConfigError(
                f"parameter '{self.name}' must be {self.type}, got {value!r}", where
            )
        if self.choices and value not in self.choices:
            raise ConfigError(
                f"parameter '{self.name}' = {value!r} is not one of {list(self.choices)}", where
            )
        if self.min is not None and value < self.min or self.max is not None and value > self.max:
            raise ConfigError(
                f"parameter '{self.name}' = {value!r} is out of range "
                f"[{self.min if self.min is not None else '-inf'}, "
                f"{self.max if self.max is not None else 'inf'}]",
                where,
            )
        return value

    def describe(self) -> str:
        rng = ""
        if self.choices:
            rng = f" in {list(self.choices)}"
        elif self.min is not None and self.max is not None:
            rng = f" in [{self.min}, {self.max}]"
        elif self.min is not None:
            rng = f" >= {self.min}"
        elif self.max is not None:
            rng = f" <= {self.max}"
        return f"{self.name}: {self.type} = {self.default!r}{rng}"


def from_kernel(target: Callable[..., Any], *params: Param) -> tuple[Param, ...]:
    """``params`` with each default taken from ``target``'s signature (the reference kernel's
    constructor), so a default lives in one place. A param the kernel does not take, one it
    gives no default, or an explicit default that disagrees with the kernel's raises
    ValueError naming both.
    """
    sig = inspect.signature(target)
    out = []
    for p in params:
        arg = sig.parameters.get(p.name)
        if arg is None or arg.default is inspect.Parameter.empty:
            raise ValueError(
                f"param {p.name}: {getattr(target, '__qualname__', target)} takes no "
                f"'{p.name}' with a default"
            )
        if p.default is not FROM_KERNEL and p.default != arg.default:
            raise ValueError(
                f"param {p.name}: default {p.default!r} disagrees with the kernel's "
                f"{arg.default!r} ({getattr(target, '__qualname__', target)})"
            )
        out.append(dataclasses.replace(p, default=arg.default))
    return tuple(out)


@dataclass(frozen=True)
class Technique:
    """One efficiency technique as the suite sees it."""

    name: str
    family: str
    summary: str
    factory: Callable[..., Any]
    paper: Paper | None = None
    lossless: bool = False
    baseline: bool = False
    params: tuple[Param, ...] = ()
    levels: tuple[str, ...] = ("kernel", "engine")
    requires: tuple[str, ...] = ()
    module: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        try:
            fam = get_family(self.family)
        except ConfigError as e:
            raise ValueError(f"technique {self.name}: {e}") from None
        bad = set(self.levels) - set(fam.levels)
        if bad or not self.levels:
            raise ValueError(
                f"technique {self.name}: levels {sorted(bad) or '()'} are not measurable for "
                f"family {self.family}; valid: {list(fam.levels)}"
            )
        undeclared = [p.name for p in self.params if p.default is FROM_KERNEL]
        if undeclared:
            raise ValueError(
                f"technique {self.name}: parameter {undeclared[0]!r} has no default; declare "
                "it with from_kernel(KernelClass, ...) or give one"
            )
        unknown = set(self.requires) - set(REQUIREMENTS)
        if unknown:
            raise ValueError(
                f"technique {self.name}: unknown requirements {sorted(unknown)}; "
                f"valid: {list(REQUIREMENTS)}"
            )

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def resolve(self, given: Mapping[str, Any], where: str | None = None) -> dict[str, Any]:
        """Defaults overlaid with ``given``; unknown names and bad values raise ConfigError."""
        by_name = {p.name: p for p in self.params}
        unknown = set(given) - set(by_name)
        if unknown:
            valid = self.param_names or ["(none)"]
            raise ConfigError(
                f"technique '{self.name}' has no parameter {sorted(unknown)[0]!r}; "
                f"valid parameters: {valid}",
                where,
            )
        out = {p.name: p.default for p in self.params}
        for k, v in given.items():
            out[k] = by_name[k].check(v, where)
        return out

    def build(self, params: Mapping[str, Any] | None = None) -> Any:
        return self.factory(**self.resolve(params or {}))
