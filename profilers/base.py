"""The profiler protocol: ``available()``, ``start()``, ``stop()``; composable with ``collect``.

A profiler that cannot run on this machine says why through ``available()`` and is skipped by
``collect``, which still reports that reason, so nothing else breaks. A profiler whose
``start()`` or ``stop()`` raises is reported the same way (its ``error``), never propagated: a
broken observer must not take the observed work, or the other observers, down with it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class ProfileResult:
    """What one profiler saw: scalar metrics ``name -> (value, unit)``, artifact paths, notes.

    ``unavailable`` says why the profiler could not run here (``available()`` said no);
    ``error`` says why it broke while running (its ``start()`` or ``stop()`` raised), as
    ``"start() raised Type: message"``. Either way it has no metrics.
    """

    profiler: str
    metrics: dict[str, tuple[float, str]] = field(default_factory=dict)
    artifacts: tuple[str, ...] = ()
    unavailable: str = ""
    error: str = ""


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
    """Results of every profiler of a ``collect`` block, filled when the block exits.

    ``started`` holds the profilers whose ``start()`` succeeded, available inside the block,
    so a caller can hand a running profiler to the observed work (the energy profiler's
    windows) only when it really runs.
    """

    results: list[ProfileResult] = field(default_factory=list)
    started: list[Any] = field(default_factory=list)

    def metrics(self) -> dict[str, tuple[float, str]]:
        out: dict[str, tuple[float, str]] = {}
        for r in self.results:
            out.update({f"{r.profiler}.{k}": v for k, v in r.metrics.items()})
        return out


def _raised(call: str, e: BaseException) -> str:
    """One line naming the call that raised and the error, e.g. ``stop() raised OSError: x``."""
    return f"{call} raised {type(e).__name__}: {e}"


@contextmanager
def collect(profilers: Sequence[Any]) -> Iterator[Collected]:
    """Run the available profilers around the block; unavailable ones report their reason.

    Profilers start in order and stop in reverse order. One whose ``available()``,
    ``start()`` or ``stop()`` raises an ``Exception`` gets a result with that ``error`` (and
    is not stopped if it never started); the others still start and stop, and the block
    still runs. An exception raised by the block itself propagates after every started
    profiler was stopped (their results are then in the ``Collected`` object as usual).
    """
    out = Collected()
    active = []
    for p in profilers:
        try:
            ok, reason = p.available()
        except Exception as e:  # noqa: BLE001 - a broken profiler is reported, not raised
            out.results.append(ProfileResult(p.name, error=_raised("available()", e)))
            continue
        if ok:
            active.append(p)
        else:
            out.results.append(ProfileResult(p.name, unavailable=reason))
    for p in active:
        try:
            p.start()
        except Exception as e:  # noqa: BLE001
            out.results.append(ProfileResult(p.name, error=_raised("start()", e)))
            continue
        out.started.append(p)
    try:
        yield out
    finally:
        for p in reversed(out.started):
            try:
                out.results.append(p.stop())
            except Exception as e:  # noqa: BLE001
                out.results.append(ProfileResult(p.name, error=_raised("stop()", e)))
