"""Profiles: TKLQT, energy and other profiler metrics when a run recorded them."""

from __future__ import annotations

import streamlit as st

from effbench.dashboards.analysis import profile_metrics, tklqt_sweep, transitions
from effbench.dashboards.charts import comparison_bar, tklqt_figure
from effbench.dashboards.data import case_metrics, metric_columns
from effbench.dashboards.state import page_store

PROFILE_HINT = "effbench run smoke --profile tklqt,energy"


def render() -> None:
    st.title("Profiles")
    store = page_store()
    if store is None:
        return
    wide = case_metrics(store.records)
    found = profile_metrics(metric_columns(wide))
    if not found:
        st.info(f"No profiler metrics (TKLQT, energy, power, memory) in this store yet. "
                f"Produce them with `{PROFILE_HINT}`.")
        return
    sweep = tklqt_sweep(wide)
    if not sweep.empty:
        st.subheader("TKLQT vs batch size (`effbench profile tklqt`)")
        st.plotly_chart(
            tklqt_figure(sweep, "batch_size", "tklqt.tklqt_us_per_step", group="series",
                         unit="us", marks=transitions(sweep)),
            key="tklqt_chart",
        )
    metric = st.selectbox("profiler metric", found, key="profile_metric")
    rows = wide.dropna(subset=[metric])
    st.plotly_chart(comparison_bar(rows, "label", metric, color="workload", title=metric),
                    key="profile_chart")
    st.dataframe(rows[["label", "workload", "level", "run_id", metric]], hide_index=True)


render()
