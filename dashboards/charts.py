"""Plotly figure builders for the dashboard: a DataFrame in, a figure out, nothing else.

Every builder is pure (no Streamlit, no I/O) so the pages, the HTML download and the tests all
get the same figure. Frontier points carry ``meta={"role": "frontier"}`` and every point's
``customdata`` starts with its ``run_id/case_id``, so tests and the browser check can read
exactly which cases a chart shows on the frontier.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from effbench.dashboards.pareto import frontier_line

HOVER_KEYS = ("label", "workload", "level", "run_id")
NOISY_SYMBOL = "diamond"
"""Marker of a case measured under interference (the ``noisy`` column); others are circles."""
_DIM = 0.4
_TEMPLATE = "plotly_white"


def axis_title(metric: str, unit: str = "", direction: str = "") -> str:
    """``latency (s) · lower is better``: a metric with its unit and which way is better."""
    unit_txt = f" ({unit})" if unit else ""
    better = {"lower": " · lower is better ↓", "higher": " · higher is better ↑"}.get(direction, "")
    return f"{metric}{unit_txt}{better}"


def better_corner(x_dir: str, y_dir: str) -> str:
    """Where the best cases sit on the chart, e.g. ``better: lower-right ↘``."""
    horizontal = "right" if x_dir == "higher" else "left"
    vertical = "upper" if y_dir == "higher" else "lower"
    arrow = {("upper", "right"): "↗", ("upper", "left"): "↖", ("lower", "right"): "↘",
             ("lower", "left"): "↙"}[(vertical, horizontal)]
    return f"better: {vertical}-{horizontal} {arrow}"


def _point_key(df: pd.DataFrame) -> pd.Series:
    return df["run_id"].astype(str) + "/" + df["case_id"].astype(str)


def _customdata(df: pd.DataFrame, extra: Sequence[str]) -> np.ndarray:
    cols = [_point_key(df)] + [df[k].astype(str) for k in HOVER_KEYS if k in df]
    cols += [df[c] for c in extra]
    return np.column_stack(cols) if len(df) else np.empty((0, len(cols)))


def _hovertemplate(x: str, y: str, extra: Sequence[str]) -> str:
    lines = ["<b>%{customdata[1]}</b>", "workload %{customdata[2]} · %{customdata[3]}"]
    lines += [f"{x} = %{{x:.4g}}", f"{y} = %{{y:.4g}}"]
    lines += [f"{c} = %{{customdata[{5 + i}]:.4g}}" for i, c in enumerate(extra)]
    lines.append("run %{customdata[4]}")
    return "<br>".join(lines) + "<extra></extra>"


def _symbols(df: pd.DataFrame) -> str | list[str]:
    """``NOISY_SYMBOL`` for the points of noisy cases, circles for the rest."""
    if "noisy" not in df or not df["noisy"].fillna(False).astype(bool).any():
        return "circle"
    return [NOISY_SYMBOL if n else "circle" for n in df["noisy"].fillna(False).astype(bool)]


def _sizes(values: pd.Series, lo: float = 8.0, hi: float = 26.0) -> np.ndarray:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    finite = np.isfinite(v)
    if not finite.any() or np.nanmax(v) == np.nanmin(v):
        return np.full(len(v), (lo + hi) / 2)
    scaled = (v - np.nanmin(v)) / (np.nanmax(v) - np.nanmin(v))
    return np.where(finite, lo + scaled * (hi - lo), lo)


def frontier_figure(
    cases: pd.DataFrame,
    mask: pd.Series,
    x: str,
    y: str,
    x_dir: str,
    y_dir: str,
    *,
    units: dict[str, str] | None = None,
    color: str | None = None,
    size: str | None = None,
    log_x: bool = False,
    log_y: bool = False,
    title: str = "",
) -> go.Figure:
    """Scatter of every case on (x, y): frontier points bold, dominated ones dimmed.

    Colour is the technique unless ``color`` names a metric (then a shared colour scale);
    ``size`` scales markers by another metric. A case measured under interference (a true
    ``noisy`` column, from ``case_metrics``) is drawn as a ``NOISY_SYMBOL``. The frontier is
    joined by the attainment staircase (``frontier_line``), and a corner arrow shows where
    "better" is.
    """
    units = units or {}
    extra = [c for c in dict.fromkeys([color, size]) if c]
    on = mask.reindex(cases.index, fill_value=False).astype(bool)
    fig = go.Figure()
    hover = _hovertemplate(x, y, extra)
    palette = qualitative.Plotly + qualitative.D3
    groups = [(t, cases[cases["technique"] == t]) for t in sorted(cases["technique"].unique())]
    if color:
        groups = [("all cases", cases)]
    for i, (name, part) in enumerate(groups):
        for role in ("dominated", "frontier"):
            pts = part[on.loc[part.index] == (role == "frontier")]
            if pts.empty:
                continue
            marker: dict = {
                "size": _sizes(pts[size]) if size else (12 if role == "frontier" else 9),
                "opacity": 1.0 if role == "frontier" else _DIM,
                "line": {"width": 1.5 if role == "frontier" else 0, "color": "#222"},
                "symbol": _symbols(pts),
            }
            if color:
                marker.update(color=pts[color], coloraxis="coloraxis")
            else:
                marker["color"] = palette[i % len(palette)]
            label = name if not color else ("on the frontier" if role == "frontier"
                                            else "dominated")
            fig.add_trace(go.Scatter(
                x=pts[x], y=pts[y], mode="markers", name=label,
                legendgroup=str(name), showlegend=role == "frontier" or bool(color)
                or not on.loc[part.index].any(),
                marker=marker, customdata=_customdata(pts, extra), hovertemplate=hover,
                meta={"role": role},
            ))
    front, shape = frontier_line(cases, on, x, y, x_dir, y_dir)
    if len(front) > 1:
        fig.add_trace(go.Scatter(
            x=front[x], y=front[y], mode="lines", name="Pareto frontier", line_shape=shape,
            line={"color": "#222", "width": 1.5, "dash": "dot"}, hoverinfo="skip",
            meta={"role": "frontier-line"},
        ))
    heading = " · ".join(t for t in (title, better_corner(x_dir, y_dir)) if t)
    fig.update_layout(
        template=_TEMPLATE, title=heading, legend_title_text="" if color else "technique",
        hoverlabel={"align": "left"}, margin={"l": 60, "r": 20, "t": 50, "b": 50}, height=520,
    )
    if color:
        fig.update_layout(coloraxis={"colorscale": "Viridis",
                                     "colorbar": {"title": {"text": color}}})
    fig.update_xaxes(title=axis_title(x, units.get(x, ""), x_dir), type="log" if log_x else None)
    fig.update_yaxes(title=axis_title(y, units.get(y, ""), y_dir), type="log" if log_y else None)
    return fig


def frontier_keys(fig: go.Figure) -> set[str]:
    """``run_id/case_id`` of the points a frontier figure draws as on the frontier."""
    keys: set[str] = set()
    for trace in fig.data:
        if (trace.meta or {}).get("role") == "frontier" and trace.customdata is not None:
            keys.update(str(row[0]) for row in trace.customdata)
    return keys


def comparison_bar(
    df: pd.DataFrame, category: str, value: str, *, color: str | None = None,
    title: str = "", value_title: str = "", reference: float | None = None,
) -> go.Figure:
    """Grouped horizontal bars of ``value`` per ``category`` (one group per ``color``)."""
    fig = go.Figure()
    groups = [(None, df)] if not color else list(df.groupby(color, sort=True))
    for name, part in groups:
        fig.add_trace(go.Bar(
            y=part[category].astype(str), x=part[value], orientation="h",
            name=str(name) if name is not None else value,
            hovertemplate="%{y}: %{x:.4g}<extra>" + (str(name) if name else "") + "</extra>",
        ))
    if reference is not None:
        fig.add_vline(x=reference, line_dash="dash", line_color="#666")
    fig.update_layout(template=_TEMPLATE, barmode="group", title=title or None,
                      height=max(260, 28 * df[category].nunique() * max(1, len(groups)) + 120),
                      margin={"l": 20, "r": 20, "t": 50, "b": 40}, showlegend=bool(color))
    fig.update_xaxes(title=value_title or value)
    return fig


def tklqt_figure(
    df: pd.DataFrame, batch: str = "batch_size", value: str = "tklqt",
    group: str = "technique", unit: str = "s", marks: dict[str, float] | None = None,
) -> go.Figure:
    """TKLQT against batch size, one line per ``group``, each transition marked by a dashed line.

    ``marks`` gives the transition per group, found by
    ``effbench.profilers.tklqt.detect_transition``
    (the one documented method); a group without a mark never left the CPU-bound regime.
    """
    fig = go.Figure()
    for name, part in df.sort_values(batch).groupby(group, sort=True):
        fig.add_trace(go.Scatter(x=part[batch], y=part[value], mode="lines+markers",
                                 name=str(name)))
        at = (marks or {}).get(str(name))
        if at is not None:
            fig.add_vline(x=at, line_dash="dash", line_color="#888",
                          annotation_text=f"{name}: CPU→GPU bound at {at:g}")
    fig.update_layout(template=_TEMPLATE, title="TKLQT vs batch size", height=420)
    fig.update_xaxes(title=batch, type="log")
    fig.update_yaxes(title=f"{value} ({unit})", type="log")
    return fig


def roofline_figure(
    df: pd.DataFrame, intensity: str, performance: str, *, peak_flops: float,
    peak_bandwidth: float, label: str = "label",
) -> go.Figure:
    """Roofline: measured points (FLOP/byte, FLOP/s) under min(peak, bandwidth * intensity)."""
    ai = pd.to_numeric(df[intensity], errors="coerce")
    lo = max(1e-3, float(ai[ai > 0].min()) / 4) if (ai > 0).any() else 1e-2
    hi = max(float(ai.max()) * 4 if ai.notna().any() else 1e3, 10 * peak_flops / peak_bandwidth)
    grid = np.geomspace(lo, hi, 200)
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=grid, y=np.minimum(peak_flops, peak_bandwidth * grid),
                             mode="lines", name="roof", line={"color": "#222"},
                             hoverinfo="skip"))
    fig.add_trace(go.Scatter(x=ai, y=df[performance], mode="markers", name="measured",
                             text=df[label] if label in df else None,
                             hovertemplate="%{text}<br>%{x:.3g} FLOP/B, %{y:.3g} FLOP/s"
                             "<extra></extra>", marker={"size": 10}))
    fig.add_vline(x=peak_flops / peak_bandwidth, line_dash="dot", line_color="#888",
                  annotation_text="ridge point")
    fig.update_layout(template=_TEMPLATE, title="Roofline", height=440)
    fig.update_xaxes(title="arithmetic intensity (FLOP/byte)", type="log")
    fig.update_yaxes(title="performance (FLOP/s)", type="log")
    return fig
