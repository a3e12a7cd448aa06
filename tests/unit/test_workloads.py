import math

import numpy as np
import pytest

from effbench.suite.workloads import (
    ARRIVAL_KINDS,
    ArrivalSpec,
    LengthSpec,
    constant_arrivals,
    fixed_lengths,
    gamma_arrivals,
    lognormal_lengths,
    poisson_arrivals,
    uniform_lengths,
)


def _gap_cv(arrivals: np.ndarray) -> float:
    gaps = np.diff(arrivals)
    return float(np.std(gaps) / np.mean(gaps))


def test_poisson_mean_rate_close_to_target():
    t = poisson_arrivals(50.0, 20_000, seed=0)
    assert t.shape == (20_000,) and t[0] == 0.0
    assert np.all(np.diff(t) >= 0)
    assert (len(t) - 1) / t[-1] == pytest.approx(50.0, rel=0.03)
    assert _gap_cv(t) == pytest.approx(1.0, rel=0.05)


def test_seed_makes_arrivals_reproducible():
    assert np.array_equal(poisson_arrivals(5.0, 100, seed=3), poisson_arrivals(5.0, 100, seed=3))
    assert not np.array_equal(poisson_arrivals(5.0, 100, 3), poisson_arrivals(5.0, 100, 4))


@pytest.mark.parametrize("cv", [0.25, 1.0, 3.0])
def test_gamma_cv_sets_dispersion_and_keeps_rate(cv):
    t = gamma_arrivals(20.0, cv, 20_000, seed=1)
    assert (len(t) - 1) / t[-1] == pytest.approx(20.0, rel=0.05)
    assert _gap_cv(t) == pytest.approx(cv, rel=0.1)


def test_burstier_gamma_is_more_dispersed_than_poisson():
    poisson = _gap_cv(poisson_arrivals(10.0, 5000, seed=2))
    bursty = _gap_cv(gamma_arrivals(10.0, 4.0, 5000, seed=2))
    smooth = _gap_cv(gamma_arrivals(10.0, 0.5, 5000, seed=2))
    assert smooth < poisson < bursty


def test_constant_and_infinite_rate():
    assert np.allclose(constant_arrivals(4.0, 5), [0.0, 0.25, 0.5, 0.75, 1.0])
    assert np.array_equal(poisson_arrivals(math.inf, 3), np.zeros(3))
    assert poisson_arrivals(1.0, 0).shape == (0,)
    assert poisson_arrivals(1.0, 1).tolist() == [0.0]


def test_arrival_spec_dispatches_and_validates():
    spec = ArrivalSpec("gamma", rate=8.0, n=50, cv=2.0, seed=9)
    assert np.array_equal(spec.arrivals(), gamma_arrivals(8.0, 2.0, 50, seed=9))
    assert np.array_equal(
        ArrivalSpec("poisson", 8.0, 50, seed=9).arrivals(), poisson_arrivals(8.0, 50, 9)
    )
    assert np.array_equal(ArrivalSpec("constant", 2.0, 3).arrivals(), [0.0, 0.5, 1.0])
    with pytest.raises(ValueError, match="valid kinds: " + ", ".join(ARRIVAL_KINDS)):
        ArrivalSpec("bursty", 1.0, 10)
    with pytest.raises(ValueError, match="cv only applies"):
        ArrivalSpec("poisson", 1.0, 10, cv=2.0)
    with pytest.raises(ValueError, match="rate"):
        ArrivalSpec("poisson", 0.0, 10)
    with pytest.raises(ValueError, match="rate"):
        ArrivalSpec("poisson", math.nan, 10)
    with pytest.raises(ValueError, match="n must"):
        ArrivalSpec("poisson", 1.0, -1)
    with pytest.raises(ValueError, match="cv"):
        ArrivalSpec("gamma", 1.0, 10, cv=0.0)


def test_length_samplers():
    assert fixed_lengths(128, 3).tolist() == [128, 128, 128]
    u = uniform_lengths(10, 12, 2000, seed=0)
    assert set(u.tolist()) == {10, 11, 12}  # inclusive range
    ln = lognormal_lengths(200, 0.8, 20_000, seed=0, low=16, high=1000)
    assert ln.dtype == np.int64 and ln.min() >= 16 and ln.max() <= 1000
    assert np.median(ln) == pytest.approx(200, rel=0.05)
    assert (ln == 1000).any()  # the long tail is clipped, not dropped
    with pytest.raises(ValueError):
        uniform_lengths(5, 4, 10)
    with pytest.raises(ValueError):
        fixed_lengths(0, 3)


def test_length_spec_validates_eagerly():
    assert LengthSpec("uniform", low=3, high=5).sample(100, seed=1).max() <= 5
    assert LengthSpec("fixed", value=7).sample(2).tolist() == [7, 7]
    with pytest.raises(ValueError, match="valid kinds"):
        LengthSpec("pareto")
    with pytest.raises(ValueError, match="exponent"):
        LengthSpec("zipf")  # a kind now (tests/unit/test_length_distributions.py), needs a > 0
    with pytest.raises(ValueError, match="median"):
        LengthSpec("lognormal", median=0.0, sigma=1.0)
