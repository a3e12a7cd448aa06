import math

import numpy as np
import pytest
from scipy import stats as sps

from effbench.suite.stats import (
    SUMMARY_KEYS,
    bootstrap_ratio_ci,
    median_ci,
    median_ci_indices,
    relative_half_width,
    summarize,
)


def test_summarize_matches_numpy_on_known_data():
    data = [float(x) for x in range(1, 21)]
    s = summarize(data)
    assert set(s) == set(SUMMARY_KEYS)
    assert s["n"] == 20 and s["n_dropped"] == 0
    assert s["median"] == 10.5
    assert s["mean"] == 10.5
    assert s["std"] == pytest.approx(np.std(data, ddof=1))
    assert (s["min"], s["max"]) == (1.0, 20.0)
    assert s["q1"] == pytest.approx(np.percentile(data, 25))
    assert s["q3"] == pytest.approx(np.percentile(data, 75))
    assert s["iqr"] == pytest.approx(s["q3"] - s["q1"])
    # n=20 at 95 %: r=5 -> interval [x(6), x(15)] in 1-based order statistics.
    assert (s["ci_low"], s["ci_high"]) == (6.0, 15.0)
    assert s["rel_ci"] == pytest.approx((15.0 - 6.0) / 2 / 10.5)


@pytest.mark.parametrize("n", [6, 7, 10, 20, 31, 100, 1000])
def test_median_ci_indices_are_the_tightest_with_enough_coverage(n):
    lo, hi = median_ci_indices(n)
    assert hi == n - 1 - lo
    # Coverage of [x[r], x[n-1-r]] (0-based) is 1 - 2 P(B <= r), B ~ Binomial(n, 1/2).
    assert 1 - 2 * sps.binom.cdf(lo, n, 0.5) >= 0.95
    # One step narrower must fall short of 95 %.
    assert 1 - 2 * sps.binom.cdf(lo + 1, n, 0.5) < 0.95


def test_tiny_samples_fall_back_to_min_max():
    assert median_ci_indices(5) is None
    assert median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)
    s = summarize([4.0])
    assert (s["ci_low"], s["ci_high"], s["rel_ci"], s["std"]) == (4.0, 4.0, 0.0, 0.0)


def test_median_ci_covers_true_median_about_95_percent():
    rng = np.random.default_rng(0)
    trials = 2000
    hits = 0
    for _ in range(trials):
        x = rng.lognormal(0.0, 1.0, size=25)  # skewed; true median is exactly 1
        lo, hi = median_ci(x)
        hits += lo <= 1.0 <= hi
    assert 0.93 <= hits / trials <= 0.995


def test_nan_dropped_and_empty_is_all_nan():
    s = summarize([1.0, math.nan, 3.0, math.inf])
    assert s["n"] == 2 and s["n_dropped"] == 2 and s["median"] == 2.0
    e = summarize([])
    assert e["n"] == 0
    assert all(math.isnan(e[k]) for k in SUMMARY_KEYS if k not in ("n", "n_dropped", "confidence"))
    assert math.isnan(summarize([math.nan])["median"])
    assert all(math.isnan(v) for v in median_ci([]))


def test_relative_half_width_edge_cases():
    assert relative_half_width(9.0, 11.0, 10.0) == pytest.approx(0.1)
    assert relative_half_width(1.0, 1.0, 0.0) == 0.0
    assert relative_half_width(-1.0, 1.0, 0.0) == math.inf
    assert math.isnan(relative_half_width(math.nan, 1.0, 1.0))


def test_bad_confidence_raises():
    with pytest.raises(ValueError, match="confidence"):
        summarize([1.0, 2.0], confidence=1.5)


def test_bootstrap_ratio_ci_brackets_true_ratio_and_is_reproducible():
    rng = np.random.default_rng(1)
    a = rng.normal(12.0, 1.0, 400)
    b = rng.normal(10.0, 1.0, 400)
    r1 = bootstrap_ratio_ci(a, b, n_boot=1000, seed=7)
    r2 = bootstrap_ratio_ci(a, b, n_boot=1000, seed=7)
    assert r1 == r2
    assert r1.low < r1.ratio < r1.high
    assert r1.low < 1.2 < r1.high
    assert r1.low > 1.0  # clearly slower: the gate would flag it
    assert r1.ratio == pytest.approx(np.median(a) / np.median(b))
    assert (r1.n_a, r1.n_b, r1.n_boot) == (400, 400, 1000)


def test_bootstrap_ratio_ci_other_stat_and_degenerate_inputs():
    r = bootstrap_ratio_ci([2.0, 2.0, 2.0], [1.0, 1.0, 1.0], stat=np.mean, n_boot=200)
    assert (r.ratio, r.low, r.high) == (2.0, 2.0, 2.0)
    empty = bootstrap_ratio_ci([], [1.0, 2.0])
    assert math.isnan(empty.ratio) and math.isnan(empty.low) and empty.n_a == 0
    nan_only = bootstrap_ratio_ci([math.nan], [1.0])
    assert math.isnan(nan_only.high)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ratio_ci([1.0], [1.0], n_boot=0)
