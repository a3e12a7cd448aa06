"""Profiler names the runner accepts (``--profile energy,host``) -> factories.

A factory takes ``(device, artifacts_dir)`` and returns a profiler; imports are lazy so naming
one profiler never imports another's dependencies. ``tklqt`` lives in a module written
separately; if it cannot be imported, its factory returns a profiler that says why.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from effbench.profilers.base import ProfileResult

Factory = Callable[[str, Path], Any]


class Unavailable:
    """Stands in for a profiler that cannot even be built; ``available()`` gives the reason."""

    def __init__(self, name: str, reason: str) -> None:
        self.name, self.reason = name, reason

    def available(self) -> tuple[bool, str]:
        return False, self.reason

    def start(self) -> None:
        pass

    def stop(self) -> ProfileResult:
        return ProfileResult(self.name, unavailable=self.reason)


def _energy(device: str, artifacts_dir: Path) -> Any:
    from effbench.profilers.energy import EnergyProfiler

    return EnergyProfiler(device, artifacts_dir)


def _bandwidth(device: str, artifacts_dir: Path) -> Any:
    from effbench.profilers.bandwidth import BandwidthProfiler

    return BandwidthProfiler(device, artifacts_dir)


def _host(device: str, artifacts_dir: Path) -> Any:
    from effbench.profilers.host import HostProfiler

    return HostProfiler(device, artifacts_dir)


def _memory(device: str, artifacts_dir: Path) -> Any:
    from effbench.profilers.memory import MemoryProfiler

    return MemoryProfiler(device)


def _tklqt(device: str, artifacts_dir: Path) -> Any:
    try:
        from effbench.profilers.tklqt_profiler import TKLQTProfiler
    except ImportError as e:
        why = f"TKLQT profiler not importable (effbench.profilers.tklqt_profiler): {e}"
        return Unavailable("tklqt", why)
    return TKLQTProfiler(artifacts_dir)  # its trace covers whatever device the work runs on


PROFILERS: dict[str, Factory] = {
    "energy": _energy,
    "bandwidth": _bandwidth,
    "host": _host,
    "memory": _memory,
    "tklqt": _tklqt,
}


def build(names: list[str], device: str, artifacts_dir: Path) -> list[Any]:
    """Profilers for ``names``, in order; an unknown name raises ValueError listing valid ones."""
    bad = [n for n in names if n not in PROFILERS]
    if bad:
        raise ValueError(f"unknown profiler {bad[0]!r}; valid profilers: {sorted(PROFILERS)}")
    return [PROFILERS[n](device, Path(artifacts_dir)) for n in names]
