"""Two-objective Pareto frontier, its step line and its hypervolume (pure numpy/pandas).

Why hand-written rather than ``moocore``/``paretoset``: the dashboard only ever needs two
objectives, where the non-dominated set is a 20-line O(n log n) sweep and the hypervolume a sum
of rectangles. Owning them lets us fix the policies a chart depends on (duplicates of a frontier
point are *all* on the frontier, so no case silently vanishes from the highlighted set; rows with
a missing value are never on it) and keeps a compiled dependency out of the install. The tests
check both functions against brute-force O(n^2) references and known values.

Directions are per metric (``"higher"`` or ``"lower"`` is better, as stored in each record).
Internally every axis is turned into "higher is better" by a sign flip.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

DIRECTIONS = ("higher", "lower")


def _sign(direction: str) -> float:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return 1.0 if direction == "higher" else -1.0


def _front_of(sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Mask of the non-dominated points of finite (sx, sy), both to be maximised.

    Sort by x best first (ties: y best first) and keep each point whose y beats every point
    before it; exact copies of a kept point are kept too.
    """
    n = len(sx)
    if n == 0:
        return np.zeros(0, dtype=bool)
    order = np.lexsort((-sy, -sx))
    x_sorted, y_sorted = sx[order], sy[order]
    best_before = np.concatenate(([-np.inf], np.maximum.accumulate(y_sorted)[:-1]))
    keep = y_sorted > best_before
    new_group = np.ones(n, dtype=bool)
    new_group[1:] = (x_sorted[1:] != x_sorted[:-1]) | (y_sorted[1:] != y_sorted[:-1])
    group = np.cumsum(new_group) - 1
    keep = keep[np.flatnonzero(new_group)][group]  # a copy shares its first copy's verdict
    mask = np.zeros(n, dtype=bool)
    mask[order] = keep
    return mask


def pareto_mask(df: pd.DataFrame, x: str, y: str, x_dir: str, y_dir: str) -> pd.Series:
    """True for the rows of ``df`` that no other row dominates on columns ``x`` and ``y``.

    A row dominates another when it is no worse on both metrics and strictly better on one.
    Rows duplicating a frontier point (same x and y) are all on the frontier. Rows whose x or y
    is NaN or infinite are never on it (and never dominate anything). O(n log n).
    """
    sx = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=float) * _sign(x_dir)
    sy = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=float) * _sign(y_dir)
    finite = np.isfinite(sx) & np.isfinite(sy)
    mask = np.zeros(len(df), dtype=bool)
    mask[finite] = _front_of(sx[finite], sy[finite])
    return pd.Series(mask, index=df.index, name="on_front")


def line_shape(x_dir: str, y_dir: str) -> str:
    """Plotly ``line_shape`` that draws the attainment staircase through x-sorted front points.

    With the front sorted by x ascending, the boundary of the region it dominates leaves each
    point vertically first when higher x is better (``"vh"``) and horizontally first when lower
    x is better (``"hv"``); the y direction only flips whether y rises or falls along the front.
    """
    _sign(y_dir)
    return "vh" if _sign(x_dir) > 0 else "hv"


def frontier_line(
    df: pd.DataFrame, mask: pd.Series, x: str, y: str, x_dir: str, y_dir: str
) -> tuple[pd.DataFrame, str]:
    """The frontier rows sorted for a step line (x ascending, then y), and the line shape."""
    front = df.loc[mask.reindex(df.index, fill_value=False).astype(bool)]
    ascending_y = _sign(x_dir) != _sign(y_dir)  # along the front y rises iff directions differ
    front = front.sort_values([x, y], ascending=[True, ascending_y], kind="mergesort")
    return front, line_shape(x_dir, y_dir)


def hypervolume_2d(
    points: np.ndarray | pd.DataFrame | Sequence[Sequence[float]],
    ref: Sequence[float] | None = None,
    x_dir: str = "lower",
    y_dir: str = "lower",
) -> float:
    """Area dominated by ``points`` (n x 2) and bounded by the reference point ``ref``.

    ``ref`` defaults to the worst value of each axis over all finite points, so a point that is
    worst on either axis adds nothing. Points not strictly better than ``ref`` on both axes add
    nothing; non-finite rows are ignored. The value is in (x unit) * (y unit): compare it only
    between views with the same axes and reference point.
    """
    arr = np.asarray(points, dtype=float).reshape(-1, 2)
    arr = arr[np.isfinite(arr).all(axis=1)]
    if len(arr) == 0:
        return 0.0
    signs = np.array([_sign(x_dir), _sign(y_dir)])
    s = arr * signs
    r = s.min(axis=0) if ref is None else np.asarray(ref, dtype=float) * signs
    s = s[(s[:, 0] > r[0]) & (s[:, 1] > r[1])]
    if len(s) == 0:
        return 0.0
    s = s[_front_of(s[:, 0], s[:, 1])]
    s = np.unique(s, axis=0)  # x ascending; on a front y then descends
    s = s[np.argsort(-s[:, 0], kind="mergesort")]  # x descending, y ascending
    heights = np.diff(np.concatenate(([r[1]], s[:, 1])))
    return float(np.sum((s[:, 0] - r[0]) * heights))


def reference_point(
    df: pd.DataFrame, x: str, y: str, x_dir: str, y_dir: str
) -> tuple[float, float]:
    """Default hypervolume reference: the worst finite value of each axis in ``df``."""
    xs = pd.to_numeric(df[x], errors="coerce").replace([np.inf, -np.inf], np.nan)
    ys = pd.to_numeric(df[y], errors="coerce").replace([np.inf, -np.inf], np.nan)
    worst_x = xs.min() if _sign(x_dir) > 0 else xs.max()
    worst_y = ys.min() if _sign(y_dir) > 0 else ys.max()
    return float(worst_x), float(worst_y)
