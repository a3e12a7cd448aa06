import itertools

import numpy as np
import pandas as pd
import pytest

from effbench.dashboards.pareto import (
    frontier_line,
    hypervolume_2d,
    line_shape,
    pareto_mask,
    reference_point,
)

DIRS = list(itertools.product(("lower", "higher"), repeat=2))


def brute_mask(df: pd.DataFrame, x: str, y: str, x_dir: str, y_dir: str) -> list[bool]:
    sx = 1 if x_dir == "higher" else -1
    sy = 1 if y_dir == "higher" else -1
    pts = [(sx * a, sy * b) for a, b in zip(df[x], df[y])]
    out = []
    for i, (a, b) in enumerate(pts):
        if not (np.isfinite(a) and np.isfinite(b)):
            out.append(False)
            continue
        dominated = any(
            np.isfinite(c) and np.isfinite(d) and c >= a and d >= b and (c > a or d > b)
            for j, (c, d) in enumerate(pts)
            if j != i
        )
        out.append(not dominated)
    return out


def brute_hv(points: np.ndarray, ref: tuple[float, float], x_dir: str, y_dir: str) -> float:
    """Area by summing a fine grid of cells dominated by some point (integer coordinates)."""
    sx = 1 if x_dir == "higher" else -1
    sy = 1 if y_dir == "higher" else -1
    s = points * [sx, sy]
    r = np.array(ref) * [sx, sy]
    lo_x, hi_x = int(r[0]), int(s[:, 0].max())
    lo_y, hi_y = int(r[1]), int(s[:, 1].max())
    area = 0
    for cx in range(lo_x, hi_x):
        for cy in range(lo_y, hi_y):
            if any(px >= cx + 1 and py >= cy + 1 for px, py in s):
                area += 1
    return float(area)


def test_min_min_known_front():
    df = pd.DataFrame({"lat": [1, 2, 3, 2, 4], "mem": [3, 2, 1, 3, 4]})
    assert pareto_mask(df, "lat", "mem", "lower", "lower").tolist() == [
        True, True, True, False, False
    ]


def test_mixed_directions():
    # lower latency, higher accuracy
    df = pd.DataFrame({"lat": [1.0, 2.0, 3.0, 2.5], "acc": [0.5, 0.7, 0.9, 0.6]})
    assert pareto_mask(df, "lat", "acc", "lower", "higher").tolist() == [True, True, True, False]
    # reverse both directions: (2, .7) is now dominated by (2.5, .6)
    assert pareto_mask(df, "lat", "acc", "higher", "lower").tolist() == [True, False, True, True]


def test_exact_duplicates_of_frontier_point_all_on_front():
    df = pd.DataFrame({"x": [1, 1, 2, 2], "y": [1, 1, 2, 2]}, index=[10, 11, 12, 13])
    m = pareto_mask(df, "x", "y", "lower", "lower")
    assert m.to_dict() == {10: True, 11: True, 12: False, 13: False}


def test_equal_x_or_equal_y_is_dominated():
    df = pd.DataFrame({"x": [1, 1, 2], "y": [1, 2, 1]})
    assert pareto_mask(df, "x", "y", "lower", "lower").tolist() == [True, False, False]


def test_nan_and_inf_never_on_front_and_dominate_nothing():
    df = pd.DataFrame({"x": [np.nan, 1.0, 2.0, -np.inf], "y": [0.0, np.nan, 1.0, 0.0]})
    assert pareto_mask(df, "x", "y", "lower", "lower").tolist() == [False, False, True, False]


def test_single_point_and_empty():
    assert pareto_mask(pd.DataFrame({"x": [3.0], "y": [4.0]}), "x", "y", "higher", "lower").all()
    empty = pareto_mask(pd.DataFrame({"x": [], "y": []}), "x", "y", "higher", "lower")
    assert empty.empty and empty.dtype == bool


def test_bad_direction_rejected():
    with pytest.raises(ValueError, match="direction"):
        pareto_mask(pd.DataFrame({"x": [1], "y": [1]}), "x", "y", "up", "lower")


@pytest.mark.parametrize("x_dir,y_dir", DIRS)
def test_random_points_match_brute_force(x_dir, y_dir):
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(1, 60))
        # small integer grid: many ties and duplicates
        df = pd.DataFrame({"x": rng.integers(0, 8, n).astype(float),
                           "y": rng.integers(0, 8, n).astype(float)})
        if trial % 3 == 0:
            df.loc[rng.random(n) < 0.1, "x"] = np.nan
        got = pareto_mask(df, "x", "y", x_dir, y_dir).tolist()
        assert got == brute_mask(df, "x", "y", x_dir, y_dir), (trial, df)


@pytest.mark.parametrize("x_dir,y_dir", DIRS)
def test_frontier_line_is_monotone_and_shape_follows_x(x_dir, y_dir):
    rng = np.random.default_rng(1)
    df = pd.DataFrame({"x": rng.random(200), "y": rng.random(200)})
    mask = pareto_mask(df, "x", "y", x_dir, y_dir)
    front, shape = frontier_line(df, mask, "x", "y", x_dir, y_dir)
    assert len(front) == mask.sum() and front["x"].is_monotonic_increasing
    y_rises = (x_dir == "lower") == (y_dir == "higher")
    assert front["y"].is_monotonic_increasing if y_rises else front["y"].is_monotonic_decreasing
    assert shape == line_shape(x_dir, y_dir) == ("vh" if x_dir == "higher" else "hv")


def test_hypervolume_known_values():
    pts = [[1, 3], [2, 2], [3, 1]]
    assert hypervolume_2d(pts, ref=(4, 4), x_dir="lower", y_dir="lower") == 6.0
    neg = [[-1, -3], [-2, -2], [-3, -1]]
    assert hypervolume_2d(neg, ref=(-4, -4), x_dir="higher", y_dir="higher") == 6.0
    # dominated points and points beyond the reference add nothing
    assert hypervolume_2d(pts + [[3, 3], [5, 0]], ref=(4, 4)) == 6.0
    # default reference = worst value per axis (4, 3): only (2, 2) and (3, 1) are inside,
    # covering [2,4]x[2,3] and [3,4]x[1,3]: 2 + 2 - 1 overlap
    assert hypervolume_2d([[1, 3], [2, 2], [3, 1], [4, 0]]) == 3.0
    assert hypervolume_2d([[1.0, 1.0]]) == 0.0
    assert hypervolume_2d([], ref=(1, 1)) == 0.0
    assert hypervolume_2d([[np.nan, 1.0], [1.0, 1.0]], ref=(2, 2)) == 1.0


@pytest.mark.parametrize("x_dir,y_dir", DIRS)
def test_hypervolume_matches_grid_count(x_dir, y_dir):
    rng = np.random.default_rng(2)
    for _ in range(10):
        pts = rng.integers(0, 10, (12, 2)).astype(float)
        ref = reference_point(pd.DataFrame(pts, columns=["x", "y"]), "x", "y", x_dir, y_dir)
        got = hypervolume_2d(pts, ref, x_dir, y_dir)
        assert got == brute_hv(pts, ref, x_dir, y_dir)
        assert got == hypervolume_2d(pts, None, x_dir, y_dir)


def test_large_input_is_fast():
    import time

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"x": rng.random(200_000), "y": rng.random(200_000)})
    t = time.perf_counter()
    mask = pareto_mask(df, "x", "y", "higher", "higher")
    assert time.perf_counter() - t < 1.0
    assert 1 <= mask.sum() < 100
