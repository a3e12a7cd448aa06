"""Frontier explorer: any two metrics, direction-aware Pareto frontier, hypervolume, downloads."""

from __future__ import annotations

import streamlit as st

from effbench.dashboards.charts import frontier_figure
from effbench.dashboards.data import (
    FILTER_COLUMNS,
    case_metrics,
    decades,
    filter_cases,
    metric_columns,
    metric_info,
    options,
)
from effbench.dashboards.pareto import hypervolume_2d, pareto_mask, reference_point
from effbench.dashboards.state import page_store

PREFERRED_PAIRS = (
    ("decode_tokens_per_s", "perplexity"),
    ("latency", "max_abs_error"),
    ("read_latency", "bytes_per_token"),
    ("output_throughput", "ttft"),
)
FILTER_LABELS = {"run_id": "run"}


def _default_pair(metrics: list[str]) -> tuple[str, str]:
    for x, y in PREFERRED_PAIRS:
        if x in metrics and y in metrics:
            return x, y
    return metrics[0], metrics[1]


def _direction(axis: str, metric: str, recorded: str) -> str:
    choices = [f"from records: {recorded}", "lower", "higher"]
    picked = st.selectbox(f"{axis} better when", choices, key=f"dir_{axis}_{metric}")
    return recorded if picked.startswith("from records") else picked


def render() -> None:
    st.title("Frontier explorer")
    store = page_store()
    if store is None:
        return
    wide = case_metrics(store.records)
    info = metric_info(store.records)
    with st.sidebar:
        st.header("Filters")
        selected = {
            col: st.multiselect(FILTER_LABELS.get(col, col), options(wide, col), key=f"f_{col}")
            for col in FILTER_COLUMNS
        }
    cases = filter_cases(wide, selected)
    metrics = metric_columns(cases)
    if len(metrics) < 2:
        st.info("The filtered cases have fewer than two metrics: widen the filters.")
        return
    dx, dy = _default_pair(metrics)
    c1, c2, c3 = st.columns(3)
    with c1:
        x = st.selectbox("x metric", metrics, index=metrics.index(dx), key="x")
        x_dir = _direction("x", x, info.at[x, "direction"])
    with c2:
        y = st.selectbox("y metric", metrics, index=metrics.index(dy), key="y")
        y_dir = _direction("y", y, info.at[y, "direction"])
    with c3:
        third = st.selectbox("third metric", ["(none)"] + metrics, key="third")
        encode = st.radio("show it as", ["colour", "size"], horizontal=True, key="encode")
    third = None if third == "(none)" else third
    view = cases.dropna(subset=[x, y])
    if view.empty:
        st.info(f"No case measured both `{x}` and `{y}`: pick metrics of the same level.")
        return
    log_x = log_y = False
    span_x, span_y = decades(view[x]), decades(view[y])
    if span_x > 2 or span_y > 2:
        lc1, lc2 = st.columns(2)
        if span_x > 2:
            log_x = lc1.toggle(f"log x ({span_x:.1f} decades)", value=True, key="log_x")
        if span_y > 2:
            log_y = lc2.toggle(f"log y ({span_y:.1f} decades)", value=True, key="log_y")
    mask = pareto_mask(view, x, y, x_dir, y_dir)
    units = info["unit"].to_dict()
    fig = frontier_figure(
        view, mask, x, y, x_dir, y_dir, units=units,
        color=third if encode == "colour" else None, size=third if encode == "size" else None,
        log_x=log_x, log_y=log_y,
        title=f"{int(mask.sum())} of {len(view)} cases on the Pareto frontier",
    )
    st.plotly_chart(fig, key="frontier_chart")
    st.caption(
        "Outlined points are on the frontier: no other case is at least as good on both axes "
        "and better on one. Faded points are dominated. The dotted staircase bounds the region "
        "the frontier dominates. Hover a point for its technique, parameters and run; copies "
        "of a case from several runs overlap. Diamonds are cases measured under interference "
        "(other processes busy on the machine while they were timed: `noisy` in the tables)."
    )

    rx, ry = reference_point(view, x, y, x_dir, y_dir)
    with st.expander("Hypervolume reference point (default: worst value on each axis)"):
        r1, r2 = st.columns(2)
        rx = r1.number_input(f"reference {x}", value=rx, format="%.6g", key=f"ref_x_{x}")
        ry = r2.number_input(f"reference {y}", value=ry, format="%.6g", key=f"ref_y_{y}")
    hv = hypervolume_2d(view[[x, y]].to_numpy(), (rx, ry), x_dir, y_dir)
    unit_x, unit_y = units.get(x, ""), units.get(y, "")
    m1, m2, m3 = st.columns(3)
    m1.metric("cases on the frontier", f"{int(mask.sum())} / {len(view)}")
    m2.metric("hypervolume", f"{hv:.4g}", help=f"area in {unit_x} x {unit_y} dominated by the "
              f"frontier, bounded by the reference point ({rx:.4g}, {ry:.4g})")
    m3.metric("techniques on the frontier", view.loc[mask, "technique"].nunique())

    front = view.loc[mask].sort_values(x)
    shown = ["technique", "params_label", "workload", "level", "device", "run_id", "noisy", x, y]
    shown += [third] if third and third not in (x, y) else []
    st.subheader("Frontier cases")
    st.dataframe(front[shown], hide_index=True, key="frontier_table")
    d1, d2 = st.columns(2)
    d1.download_button("Download frontier (CSV)", front[shown + ["case_id"]].to_csv(index=False),
                       file_name=f"frontier_{x}_vs_{y}.csv", mime="text/csv", key="dl_csv")
    d2.download_button("Download chart (standalone HTML)",
                       fig.to_html(include_plotlyjs=True, full_html=True),
                       file_name=f"frontier_{x}_vs_{y}.html", mime="text/html", key="dl_html")


render()
