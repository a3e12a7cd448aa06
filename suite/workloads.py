"""Synthetic serving workloads: request arrival times and prompt/output lengths.

Arrival processes (all return sorted float64 arrays of ``n`` arrival times in seconds):

* ``poisson`` - exponential inter-arrival gaps with mean ``1 / rate`` (memoryless traffic).
* ``gamma`` - gamma-distributed gaps with mean ``1 / rate`` and coefficient of variation
  ``cv``: ``cv > 1`` is burstier than Poisson, ``cv < 1`` smoother, ``cv == 1`` is Poisson.
* ``constant`` - evenly spaced, one request every ``1 / rate`` seconds.

Convention: the first request arrives at ``t = 0`` and the ``n - 1`` gaps follow, so a run's
duration starts with its first request (matching ``serving_metrics.duration``) and the
empirical rate is ``(n - 1) / arrivals[-1]``. ``rate = inf`` sends every request at ``t = 0``
(a closed burst). Everything is reproducible from ``seed`` via ``numpy.random.default_rng``.

Length samplers return int64 arrays of token counts: fixed, uniform over an inclusive range,
or lognormal (given its median and log-space sigma) clipped to a range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ARRIVAL_KINDS = ("poisson", "gamma", "constant")
LENGTH_KINDS = ("fixed", "uniform", "lognormal")


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")


def _check_rate_n(rate: float, n: int) -> None:
    if not float(rate) > 0:  # also rejects NaN
        raise ValueError(f"rate must be > 0 (inf allowed for a burst), got {rate!r}")
    _check_n(n)


def _from_gaps(gaps: np.ndarray) -> np.ndarray:
    """Turn ``n - 1`` gaps into ``n`` arrival times starting at 0."""
    return np.concatenate(([0.0], np.cumsum(gaps)))


def poisson_arrivals(rate_per_s: float, n: int, seed: int = 0) -> np.ndarray:
    """Return ``n`` Poisson-process arrival times: first at 0, then exponential gaps."""
    _check_rate_n(rate_per_s, n)
    if n == 0:
        return np.empty(0)
    if math.isinf(rate_per_s):
        return np.zeros(n)
    rng = np.random.default_rng(seed)
    return _from_gaps(rng.exponential(1.0 / rate_per_s, size=n - 1))


def gamma_arrivals(rate: float, cv: float, n: int, seed: int = 0) -> np.ndarray:
    """Return ``n`` arrival times with gamma gaps: mean ``1/rate``, coefficient of variation ``cv``.

    Shape ``k = 1 / cv**2`` and scale ``cv**2 / rate`` give mean ``1/rate`` and std
    ``cv / rate``; ``cv = 1`` is the exponential distribution, i.e. a Poisson process.
    """
    _check_rate_n(rate, n)
    if not (cv > 0 and math.isfinite(cv)):
        raise ValueError(f"cv must be a finite number > 0, got {cv!r}")
    if n == 0:
        return np.empty(0)
    if math.isinf(rate):
        return np.zeros(n)
    rng = np.random.default_rng(seed)
    shape = 1.0 / cv**2
    return _from_gaps(rng.gamma(shape, 1.0 / (shape * rate), size=n - 1))


def constant_arrivals(rate: float, n: int) -> np.ndarray:
    """Return ``n`` evenly spaced arrival times ``0, 1/rate, 2/rate, ...``."""
    _check_rate_n(rate, n)
    if math.isinf(rate):
        return np.zeros(n)
    return np.arange(n, dtype=float) / rate


@dataclass(frozen=True)
class ArrivalSpec:
    """Declarative arrival process, validated on construction; ``arrivals()`` samples it.

    ``cv`` only applies to ``kind="gamma"``; the other kinds require the default ``1.0`` so a
    burstiness setting is never silently ignored. ``seed`` is unused by ``constant``.
    """

    kind: str
    rate: float
    n: int
    cv: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ARRIVAL_KINDS:
            raise ValueError(
                f"unknown arrival kind {self.kind!r}; valid kinds: {', '.join(ARRIVAL_KINDS)}"
            )
        _check_rate_n(self.rate, self.n)
        if not (self.cv > 0 and math.isfinite(self.cv)):
            raise ValueError(f"cv must be a finite number > 0, got {self.cv!r}")
        if self.kind != "gamma" and self.cv != 1.0:
            raise ValueError(f"cv only applies to kind 'gamma', got cv={self.cv} for {self.kind!r}")

    def arrivals(self) -> np.ndarray:
        """Sample the arrival times this spec describes."""
        if self.kind == "poisson":
            return poisson_arrivals(self.rate, self.n, self.seed)
        if self.kind == "gamma":
            return gamma_arrivals(self.rate, self.cv, self.n, self.seed)
        return constant_arrivals(self.rate, self.n)


def _check_range(low: int, high: int) -> None:
    if low < 1 or high < low:
        raise ValueError(f"need 1 <= low <= high for token lengths, got low={low}, high={high}")


def fixed_lengths(value: int, n: int) -> np.ndarray:
    """Return ``n`` copies of ``value`` tokens."""
    _check_n(n)
    if value < 1:
        raise ValueError(f"length must be >= 1 token, got {value}")
    return np.full(n, int(value), dtype=np.int64)


def uniform_lengths(low: int, high: int, n: int, seed: int = 0) -> np.ndarray:
    """Return ``n`` lengths drawn uniformly from the inclusive range ``[low, high]``."""
    _check_n(n)
    _check_range(low, high)
    return np.random.default_rng(seed).integers(low, high, size=n, endpoint=True, dtype=np.int64)


def lognormal_lengths(
    median: float, sigma: float, n: int, seed: int = 0, low: int = 1, high: int = 1 << 20
) -> np.ndarray:
    """Return ``n`` lognormal lengths, rounded and clipped to ``[low, high]``.

    ``median`` is the distribution's median (``exp(mu)``) and ``sigma`` the std of the log;
    real prompt/output lengths are right-skewed like this. Clipping keeps them within the
    model's context and above zero; it moves mass to the bounds rather than re-drawing.
    """
    _check_n(n)
    _check_range(low, high)
    if not (median > 0 and sigma >= 0):
        raise ValueError(f"need median > 0 and sigma >= 0, got median={median}, sigma={sigma}")
    draws = np.random.default_rng(seed).lognormal(math.log(median), sigma, size=n)
    return np.clip(np.rint(draws), low, high).astype(np.int64)


@dataclass(frozen=True)
class LengthSpec:
    """Declarative token-length distribution, validated on construction; ``sample(n, seed)``.

    ``fixed`` uses ``value``; ``uniform`` uses ``low``/``high`` (inclusive); ``lognormal`` uses
    ``median``/``sigma`` and clips to ``low``/``high``.
    """

    kind: str
    value: int = 0
    low: int = 1
    high: int = 1 << 20
    median: float = 0.0
    sigma: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in LENGTH_KINDS:
            raise ValueError(
                f"unknown length kind {self.kind!r}; valid kinds: {', '.join(LENGTH_KINDS)}"
            )
        self.sample(0)  # run the sampler's own argument checks now, not at first use

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """Draw ``n`` lengths."""
        if self.kind == "fixed":
            return fixed_lengths(self.value, n)
        if self.kind == "uniform":
            return uniform_lengths(self.low, self.high, n, seed)
        return lognormal_lengths(self.median, self.sigma, n, seed, self.low, self.high)
