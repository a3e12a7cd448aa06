"""Figures for paper claims: a claim table and one run's records in, a Plotly figure out.

Pure functions (no Streamlit, no I/O), like dashboards.charts. ``claim_figure`` draws what a
claim's ``chart`` table in its TOML asks for:
- ``{ kind = "by_param", technique, param, metric, theory = "speculative" }``: the metric
  against a parameter, with the paper's theoretical curve where one is named (speculative:
  (1 - a^(k+1)) / (1 - a) at each case's measured acceptance);
- anything else (or no chart): one bar per case of the claim's techniques for each metric the
  claim reads, with the CI of the median as error bars.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go

from effbench.suite.rules import expected_tokens_per_step

VERDICT_COLORS = {"holds": "#2e7d32", "does not hold": "#c62828", "not measurable": "#757575"}
_TEMPLATE = "plotly_white"


def _params(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return json.loads(value) if value else {}
    return dict(value or {})


def _stats(value: Any) -> dict[str, Any]:
    return _params(value)


def _label(row: Mapping[str, Any]) -> str:
    p = _params(row["params"])
    inner = ",".join(f"{k}={v}" for k, v in sorted(p.items()))
    return f"{row['technique']}[{inner}]" if inner else str(row["technique"])


def bars(records: pd.DataFrame, techniques: Sequence[str], metrics: Sequence[str]) -> go.Figure:
    """One bar per case of ``techniques`` for each of ``metrics``, CI as error bars."""
    fig = go.Figure()
    ok = records[(records["status"] == "ok") & records["technique"].isin(list(techniques))]
    for metric in metrics:
        rows = ok[ok["metric"] == metric]
        if rows.empty:
            continue
        labels = [_label(r) for r in rows.to_dict("records")]
        stats = [_stats(s) for s in rows["stats"]]
        hi = [s.get("ci_high", v) - v for s, v in zip(stats, rows["value"])]
        lo = [v - s.get("ci_low", v) for s, v in zip(stats, rows["value"])]
        fig.add_bar(x=labels, y=rows["value"], name=metric,
                    error_y={"type": "data", "array": hi, "arrayminus": lo})
    fig.update_layout(template=_TEMPLATE, barmode="group", yaxis_title="value",
                      legend_title="metric")
    return fig


def by_param(records: pd.DataFrame, technique: str, param: str, metric: str,
             theory: str = "") -> go.Figure:
    """``metric`` of ``technique`` against its parameter ``param``, with a theoretical curve."""
    ok = records[(records["status"] == "ok") & (records["technique"] == technique)]
    rows = []
    for r in ok.to_dict("records"):
        p = _params(r["params"])
        if param in p:
            rows.append({"x": p[param], "metric": r["metric"], "value": r["value"]})
    df = pd.DataFrame(rows, columns=["x", "metric", "value"])
    fig = go.Figure()
    measured = df[df["metric"] == metric].sort_values("x")
    fig.add_scatter(x=measured["x"], y=measured["value"], mode="markers+lines",
                    name=f"measured {metric}")
    if theory == "speculative":
        alpha = df[df["metric"] == "acceptance_alpha"].set_index("x")["value"]
        xs = [x for x in measured["x"] if x in alpha.index]
        fig.add_scatter(x=xs, y=[expected_tokens_per_step(alpha[x], int(x)) for x in xs],
                        mode="markers+lines", line={"dash": "dash"},
                        name="(1 - a^(k+1)) / (1 - a)")
    fig.update_layout(template=_TEMPLATE, xaxis_title=param, yaxis_title=metric)
    return fig


def claim_figure(chart: Mapping[str, Any], records: pd.DataFrame, techniques: Sequence[str],
                 metrics: Sequence[str]) -> go.Figure:
    """The figure a claim's ``chart`` spec asks for (default: bars of its metrics)."""
    if chart.get("kind") == "by_param":
        return by_param(records, chart["technique"], chart["param"], chart["metric"],
                        chart.get("theory", ""))
    return bars(records, techniques, metrics)
