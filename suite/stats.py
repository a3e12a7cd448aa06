"""Pure statistics on raw measurement samples.

Every timing and serving metric in effbench keeps its raw samples; this module turns them into
the summary numbers stored in ``Record.stats``. The headline is the *median* because timing
noise is one-sided (interrupts, frequency changes and cache misses only ever add time), and its
uncertainty is reported with a distribution-free confidence interval built from order
statistics, so no normality assumption is made about heavily skewed timing samples.

Conventions shared by all functions here:

* NaN and infinite values are dropped before any statistic is computed and counted in
  ``n_dropped``; a NaN sample means "undefined" (e.g. the TPOT of a one-token request).
* With no usable samples every statistic is NaN and ``n`` is 0, never an exception, so a
  failed or empty case still yields a well-formed stats dict.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

DEFAULT_CONFIDENCE = 0.95

#: Keys of the dict returned by :func:`summarize`, in a stable order.
SUMMARY_KEYS = (
    "n",
    "n_dropped",
    "median",
    "mean",
    "std",
    "min",
    "max",
    "q1",
    "q3",
    "iqr",
    "ci_low",
    "ci_high",
    "rel_ci",
    "confidence",
)


def clean(samples: Iterable[float]) -> tuple[np.ndarray, int]:
    """Return the finite samples as a float64 array and how many non-finite ones were dropped."""
    data = samples if isinstance(samples, np.ndarray) else list(samples)
    arr = np.asarray(data, dtype=float).ravel()
    finite = np.isfinite(arr)
    return arr[finite], int(arr.size - finite.sum())


def median_ci_indices(n: int, confidence: float = DEFAULT_CONFIDENCE) -> tuple[int, int] | None:
    """Return 0-based order-statistic indices ``(lo, hi)`` bracketing the median, or ``None``.

    For sorted samples ``x[0] <= ... <= x[n-1]`` the interval ``[x[r], x[n-1-r]]`` contains the
    population median with probability ``1 - 2 * P(B <= r)`` where ``B ~ Binomial(n, 1/2)``
    (each sample falls below the median with probability 1/2). We pick the largest ``r`` whose
    coverage is still at least ``confidence``. ``None`` means even ``[min, max]`` falls short of
    that coverage (n <= 5 at 95 %), in which case callers fall back to ``[min, max]``.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n <= 0:
        return None
    tail = (1.0 - confidence) / 2.0
    r = int(sps.binom.ppf(tail, n, 0.5))
    # ppf gives the smallest r with cdf(r) >= tail; we need cdf(r) <= tail.
    while r >= 0 and sps.binom.cdf(r, n, 0.5) > tail:
        r -= 1
    if r < 0:
        return None
    return r, n - 1 - r


def median_ci(
    samples: Iterable[float], confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float]:
    """Return a distribution-free ``confidence`` interval of the median of ``samples``.

    Uses :func:`median_ci_indices`; for tiny samples (where no order-statistic pair reaches the
    requested coverage) returns ``(min, max)``. Returns ``(nan, nan)`` when there are no finite
    samples.
    """
    arr, _ = clean(samples)
    if arr.size == 0:
        return math.nan, math.nan
    arr = np.sort(arr)
    idx = median_ci_indices(arr.size, confidence)
    if idx is None:
        return float(arr[0]), float(arr[-1])
    return float(arr[idx[0]]), float(arr[idx[1]])


def relative_half_width(low: float, high: float, center: float) -> float:
    """Return ``(high - low) / 2 / |center|``: the CI half-width as a fraction of the centre.

    0 when the interval has zero width, ``inf`` when the centre is 0 but the width is not, NaN
    when any input is NaN.
    """
    if any(math.isnan(x) for x in (low, high, center)):
        return math.nan
    width = high - low
    if width == 0:
        return 0.0
    if center == 0:
        return math.inf
    return width / 2.0 / abs(center)


def summarize(samples: Iterable[float], confidence: float = DEFAULT_CONFIDENCE) -> dict[str, float]:
    """Summarise raw samples into the stats dict stored alongside every record.

    Keys (see :data:`SUMMARY_KEYS`): ``n`` (finite samples used), ``n_dropped`` (NaN/inf
    removed), ``median``, ``mean``, ``std`` (sample std, ddof=1; 0 for n=1), ``min``, ``max``,
    ``q1``/``q3`` (25th/75th percentiles, linear interpolation), ``iqr`` (q3 - q1),
    ``ci_low``/``ci_high`` (order-statistic CI of the median, see :func:`median_ci`),
    ``rel_ci`` (``(ci_high - ci_low) / 2 / median``) and ``confidence``.
    All values are floats (counts too, so the dict serialises uniformly); with no finite
    samples every statistic is NaN.
    """
    arr, dropped = clean(samples)
    n = int(arr.size)
    out: dict[str, float] = dict.fromkeys(SUMMARY_KEYS, math.nan)
    out.update(n=float(n), n_dropped=float(dropped), confidence=float(confidence))
    if n == 0:
        return out
    q1, median, q3 = np.percentile(arr, [25.0, 50.0, 75.0])
    ci_low, ci_high = median_ci(arr, confidence)
    out.update(
        median=float(median),
        mean=float(np.mean(arr)),
        std=float(np.std(arr, ddof=1)) if n > 1 else 0.0,
        min=float(np.min(arr)),
        max=float(np.max(arr)),
        q1=float(q1),
        q3=float(q3),
        iqr=float(q3 - q1),
        ci_low=ci_low,
        ci_high=ci_high,
        rel_ci=relative_half_width(ci_low, ci_high, float(median)),
    )
    return out


@dataclass(frozen=True)
class RatioCI:
    """Bootstrap estimate of ``stat(a) / stat(b)`` with a percentile confidence interval.

    ``ratio`` is the point estimate on the full samples; ``low``/``high`` bound it at
    ``confidence``. All three are NaN when either sample has no finite values.
    """

    ratio: float
    low: float
    high: float
    confidence: float
    n_boot: int
    n_a: int
    n_b: int


# scipy >= 1.15 takes ``rng``; older versions only ``random_state``.
_BOOTSTRAP_SEED_ARG = (
    "rng" if "rng" in inspect.signature(sps.bootstrap).parameters else "random_state"
)


def bootstrap_ratio_ci(
    a: Iterable[float],
    b: Iterable[float],
    stat: Callable[..., np.ndarray] = np.median,
    n_boot: int = 2000,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> RatioCI:
    """Return a bootstrap confidence interval for ``stat(a) / stat(b)``.

    Used by the regression gate to ask "is candidate ``a`` slower than baseline ``b``?" without
    assuming a distribution. ``a`` and ``b`` are resampled independently (they are separate
    runs, not paired), ``n_boot`` times, and the percentile interval of the resampled ratios is
    returned (percentile rather than BCa because BCa is unstable for medians of samples with
    many ties, which quantised timers produce). ``stat`` must accept an ``axis`` keyword like
    the numpy reductions do. ``seed`` makes the interval reproducible.
    """
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    xa, _ = clean(a)
    xb, _ = clean(b)
    if xa.size == 0 or xb.size == 0:
        return RatioCI(math.nan, math.nan, math.nan, confidence, n_boot, xa.size, xb.size)

    def ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.asarray(stat(x, axis=axis)) / np.asarray(stat(y, axis=axis))

    point = float(ratio(xa, xb))
    if xa.size == 1 and xb.size == 1:
        return RatioCI(point, point, point, confidence, n_boot, 1, 1)
    # Bound memory: each batch materialises batch * len(sample) floats per sample.
    batch = max(1, min(n_boot, 2_000_000 // max(xa.size, xb.size)))
    # A zero denominator in some resamples yields inf ratios; let them flow into the
    # percentiles (they widen the interval honestly) instead of warning.
    with np.errstate(divide="ignore", invalid="ignore"):
        res = sps.bootstrap(
            (xa, xb),
            ratio,
            n_resamples=n_boot,
            batch=batch,
            vectorized=True,
            paired=False,
            confidence_level=confidence,
            method="percentile",
            **{_BOOTSTRAP_SEED_ARG: np.random.default_rng(seed)},
        )
    ci = res.confidence_interval
    return RatioCI(
        point, float(ci.low), float(ci.high), confidence, n_boot, int(xa.size), int(xb.size)
    )


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n`` (95% at the default ``z``); NaNs for
    ``n == 0``. Used by the benchmarks that count gate verdicts (false alarms, detections).
    """
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
