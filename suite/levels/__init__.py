"""Level runners: each turns one case into a list of measured metrics.

``run_level(case, ctx)`` dispatches on the case's level; every runner returns ``Metric``s,
which the runner wraps into Records with the case's identity. ``from_samples`` and ``scalar``
build them and refuse a metric that its producing module did not declare
(effbench.suite.metrics), or one produced with another unit or direction than declared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from effbench.suite import metrics
from effbench.suite.stats import summarize


@dataclass(frozen=True)
class Metric:
    metric: str
    value: float
    unit: str
    direction: str
    samples: tuple[float, ...] = ()
    stats: dict[str, float] = field(default_factory=dict)


def from_samples(
    metric: str,
    samples: Sequence[float],
    unit: str,
    direction: str,
    extra: dict[str, float] | None = None,
) -> Metric:
    """A metric whose value is the median of its raw samples (kept with their statistics).

    ``extra`` adds how the samples were taken (inner iterations, convergence) to the stats.
    ValueError when ``metric`` is undeclared or its unit/direction disagree with the
    declaration.
    """
    metrics.check(metric, unit, direction)
    st = {**summarize(list(samples)), **(extra or {})}
    return Metric(metric, st["median"], unit, direction, tuple(float(s) for s in samples), st)


def scalar(
    metric: str, value: float, unit: str, direction: str, extra: dict[str, float] | None = None
) -> Metric:
    """A deterministic metric (bytes, FLOPs, exact match...): one value, no spread.

    ``extra`` adds context to the stats (e.g. the peak a percentage was taken against).
    ValueError when ``metric`` is undeclared or its unit/direction disagree with the
    declaration.
    """
    metrics.check(metric, unit, direction)
    return Metric(metric, float(value), unit, direction, (float(value),),
                  {"n": 1, **(extra or {})})


def profiler_reading(metric: str, value: float, unit: str) -> Metric:
    """A profiler's reading ``<profiler>.<name>`` as a scalar metric, with its declared
    direction (effbench.profilers.metrics). Not refused when undeclared: profilers are
    pluggable, so a reading no profiler declared is kept, better lower unless its unit is a
    rate (``metrics.profiler_direction``).
    """
    direction = metrics.profiler_direction(metric, unit)
    return Metric(metric, float(value), unit, direction, (float(value),), {"n": 1})


def timing_extra(m: object) -> dict[str, float]:
    """What a ``effbench.suite.timing.Measurement`` says about its own quality, as stats fields."""
    return {
        "inner_iters": float(m.inner_iters),
        "converged": float(m.converged),
        "cold_cache": float(m.cold_cache),
        "elapsed_s": float(m.elapsed_s),
    }
