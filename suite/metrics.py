"""What each metric means, declared once by the code that produces it.

A ``MetricSpec`` says a metric's unit, its better direction and its kind; the module that
produces a metric declares it at module top with ``declare`` (the level runners in
effbench.suite.levels, a family module for metrics of its own), and the profilers declare theirs
as plain data in effbench.profilers.metrics (they never import suite), which ``load`` reads in.
The helpers that build a level's metrics (``effbench.suite.levels.from_samples``/``scalar``)
refuse a name that is not declared, or whose unit or direction disagrees, so the code and the
declarations cannot drift apart; the gate (metric classes), the report (column order), the
dashboard (units, directions, which metrics are profiler readings) and docs/METRICS.md's test
all read the declarations.

Kinds are the regression gate's classes (effbench.suite.gate), because what a metric means for a
reader is mostly how much change in it is noise:

- ``timing``: measured, noisy: anything read from a clock or derived from one (latency,
  tokens/s, speedup, serving latencies), and every profiler reading (energy, memory peaks,
  launch counts of one profiled pass);
- ``count``: deterministic and exact (bytes, FLOPs, tokens per step, exact match, acceptance
  rate): any change is real;
- ``numeric``: deterministic floating-point results, the quality metrics above all
  (perplexity, KL, top-1 agreement, kernel errors): the same up to summation order.

``count`` and ``numeric`` are the deterministic kinds (``DETERMINISTIC_KINDS``).

Light on purpose (no torch at import): ``load`` imports the declaring modules only when a
metric is first looked up.
"""

from __future__ import annotations

import importlib
import re
from dataclasses import dataclass, field, replace

KINDS = ("timing", "count", "numeric")
DETERMINISTIC_KINDS = ("count", "numeric")
CATEGORIES = {"timing": "timing", "count": "deterministic", "numeric": "quality"}
"""Each kind's class as the issue tracker and docs/METRICS.md name it."""
DIRECTIONS = ("lower", "higher")
DECLARING_MODULES = (
    "effbench.suite.levels.kernel",
    "effbench.suite.levels.engine",
    "effbench.suite.levels.serving",
    "effbench.suite.levels.piggyback",
)
"""Modules that declare metrics at import (besides the family modules and the profilers)."""
_PLACEHOLDER = re.compile(r"<[^<>]+>")


@dataclass(frozen=True)
class MetricSpec:
    """One metric: ``name`` as stored, ``unit``, better ``direction``, ``kind`` (see KINDS).

    ``name`` may hold placeholders such as ``<path>`` for a part chosen at run time (an
    energy window, a roofline point, a CPU zone); each stands for any non-empty text. ``source``
    is who declared it: a level (``kernel``, ``engine``, ``serving``), ``profiler`` or
    ``runner``; ``help`` is a one-line definition (docs/METRICS.md has the full one).
    """

    name: str
    unit: str
    direction: str
    kind: str
    help: str = ""
    source: str = ""
    _pattern: re.Pattern[str] | None = field(default=None, init=False, repr=False,
                                             compare=False)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name}: direction must be one of {DIRECTIONS}, got "
                             f"{self.direction!r}")
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name}: kind must be one of {KINDS}, got "
                             f"{self.kind!r}")
        if _PLACEHOLDER.search(self.name):
            parts = _PLACEHOLDER.split(self.name)
            regex = ".+".join(re.escape(p) for p in parts)
            object.__setattr__(self, "_pattern", re.compile(rf"\A{regex}\Z"))

    @property
    def deterministic(self) -> bool:
        """True for ``count`` and ``numeric`` metrics (gated by tolerance, not by a test)."""
        return self.kind in DETERMINISTIC_KINDS

    @property
    def category(self) -> str:
        """The reader's class: ``timing`` (measured, noisy), ``deterministic`` (exact counts:
        bytes, FLOPs, tokens per step, exact match) or ``quality`` (deterministic
        floating-point results: perplexity, agreement, errors).
        """
        return CATEGORIES[self.kind]

    @property
    def is_pattern(self) -> bool:
        return self._pattern is not None

    @property
    def literal_chars(self) -> int:
        """Characters of the name outside placeholders (how specific a pattern is)."""
        return len(_PLACEHOLDER.sub("", self.name))

    def matches(self, name: str) -> bool:
        """Whether a stored metric ``name`` is this metric (placeholders filled in)."""
        return name == self.name if self._pattern is None else bool(self._pattern.match(name))


_EXACT: dict[str, MetricSpec] = {}
_PATTERNS: list[MetricSpec] = []
_ORDER: dict[str, int] = {}
_LOADED = False


def declare(source: str, *specs: MetricSpec) -> tuple[MetricSpec, ...]:
    """Declare ``specs`` as produced by ``source``; returns them (with ``source`` set).

    Declaring the same spec again is a no-op (a module imported twice); a different spec
    under a name already declared raises ValueError naming both sources.
    """
    out = []
    for s in specs:
        s = replace(s, source=source)
        old = _EXACT.get(s.name) or next((p for p in _PATTERNS if p.name == s.name), None)
        if old is not None and old != s:
            raise ValueError(f"metric {s.name!r} is declared twice, differently "
                             f"({old.source}: {old.unit}, {old.direction}, {old.kind}; "
                             f"{source}: {s.unit}, {s.direction}, {s.kind})")
        if old is None:
            _ORDER[s.name] = len(_ORDER)
            if s.is_pattern:
                _PATTERNS.append(s)
            else:
                _EXACT[s.name] = s
        out.append(s)
    return tuple(out)


def load() -> None:
    """Import every module that declares metrics, once: the level runners, the family modules
    and the profilers' table (effbench.profilers.metrics, declared here as ``profiler``).
    """
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from effbench.profilers.metrics import PROFILER_METRICS
    from effbench.suite.family import load_families

    declare("profiler", *(MetricSpec(m.name, m.unit, m.direction, "timing", m.help)
                          for m in PROFILER_METRICS))
    load_families()
    for module in DECLARING_MODULES:
        importlib.import_module(module)


def spec(name: str) -> MetricSpec | None:
    """The declaration of a stored metric name: the exact name, else the most specific
    pattern that matches (most characters outside placeholders; the first declared on a tie);
    None when nothing declares it (a record from another tool or an older effbench).
    """
    load()
    found = _EXACT.get(name)
    if found is not None:
        return found
    matching = [p for p in _PATTERNS if p.matches(name)]
    return max(matching, key=lambda p: p.literal_chars, default=None)  # the most specific


def get(name: str) -> MetricSpec:
    """The declaration of ``name``; ValueError naming the fix when there is none."""
    s = spec(name)
    if s is None:
        raise ValueError(f"metric {name!r} is not declared: declare it with "
                         "effbench.suite.metrics.declare(...) at the top of the module that "
                         "produces it")
    return s


def check(name: str, unit: str, direction: str) -> MetricSpec:
    """The declaration of ``name``; ValueError when there is none or it disagrees."""
    s = get(name)
    if (s.unit, s.direction) != (unit, direction):
        raise ValueError(f"metric {name!r} is declared ({s.source}) with unit {s.unit!r} and "
                         f"direction {s.direction!r}, but produced with unit {unit!r} and "
                         f"direction {direction!r}")
    return s


def declared(source: str | None = None) -> list[MetricSpec]:
    """Every declaration (of ``source`` only, when given), in declaration order."""
    load()
    every = sorted([*_EXACT.values(), *_PATTERNS], key=lambda s: _ORDER[s.name])
    return [s for s in every if source in (None, s.source)]


def kind_of(name: str) -> str:
    """The declared kind of a stored metric; ``timing`` (noisy) for an undeclared one, the
    kind that can never make the gate raise a false alarm on noise.
    """
    s = spec(name)
    return s.kind if s is not None else "timing"


def position(name: str) -> int | None:
    """Where a metric's declaration comes in declaration order; None when undeclared."""
    s = spec(name)
    return None if s is None else _ORDER[s.name]


def profiler_direction(name: str, unit: str) -> str:
    """Better direction of a profiler reading ``<profiler>.<metric>``: the declared one; for a
    metric no profiler declared (a third-party or test profiler), rates (``.../s``) higher and
    everything else lower.
    """
    s = spec(name)
    if s is not None:
        return s.direction
    return "higher" if unit.endswith("/s") else "lower"


declare(
    "runner",
    MetricSpec("error", "", "lower", "count",
               "NaN; marks a failed case, the error text in the record's error field"),
)
