"""The profiler protocol: ``available()``, ``start()``, ``stop()``; composable with ``collect``.

A profiler that cannot run on this machine says why through ``available()`` and is skipped by
``collect``, which still reports that reason, so nothing else breaks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ProfileResult:
    """What one profiler saw: scalar metrics ``name -> (value, unit)``, artifact paths, notes."""

    profiler: str
    metrics: dict[str, tuple[float, str]] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()
    unavailable: str = ""


@runtime_checkable
class Profiler(Protocol):
    name: str

    def available(self) -> tuple[bool, str]: ...

    def start(self) -> None: ...

    def stop(self) -> ProfileResult: ...


class NullProfiler:
    """Does nothing; stands in where a real profiler is unavailable."""

    name = "null"

    def __init__(self, reason: str = "") -> None:
        self.reason = reason

    def available(self) -> tuple[bool, str]:
        return True, ""

    def start(self) -> None:
        pass

    def stop(self) -> ProfileResult:
        return ProfileResult(self.name, unavailable=self.reason)


@dataclass
class Collected:
    """Results of every profiler of a ``collect`` block, filled when the block exits."""

    results: list[ProfileResult] = field(default_factory=list)

    def metrics(self) -> dict[str, tuple[float, str]]:
        out: dict[str, tuple[float, str]] = {}
        for r in self.results:
            out.update({f"{r.profiler}.{k}": v for k, v in r.metrics.items()})
        return out


@contextmanager
def collect(profilers: Sequence[Any]) -> Iterator[Collected]:
    """Run the available profilers around the block; unavailable ones report their reason."""
    out = Collected()
    active = []
    for p in profilers:
        ok, reason = p.available()
        if ok:
            active.append(p)
        else:
            out.results.append(ProfileResult(p.name, unavailable=reason))
    for p in active:
        p.start()
    try:
        yield out
    finally:
        for p in reversed(active):
            out.results.append(p.stop())
