"""Linked levels: one technique followed from kernel to engine to serving."""

from __future__ import annotations

import streamlit as st

from effbench.dashboards.analysis import UNPAIRED_SPEEDUP, linked_levels
from effbench.dashboards.charts import comparison_bar
from effbench.dashboards.data import case_metrics
from effbench.dashboards.state import page_store

LEVEL_METRICS = {
    "engine": ["decode_tokens_per_s", "speedup", "perplexity", "kl_vs_baseline",
               "top1_agreement", "acceptance_rate"],
    "serving": ["output_throughput", "ttft", "tpot", "goodput", "slo_attainment"],
}


def _baseline(family: str) -> str:
    """The family's registered baseline; empty for a family no longer declared or without one
    (a stored run may name either).
    """
    from effbench.suite.errors import ConfigError
    from effbench.suite.registry import baseline_of  # imports every adapter: only when shown

    try:
        return baseline_of(family).name
    except (ConfigError, LookupError):
        return ""


def render() -> None:
    st.title("Linked levels")
    st.caption("One technique from its kernel speedup over the family baseline, to engine "
               "throughput and quality, to serving metrics. The kernel speedup is unpaired (the "
               "baseline's kernel case, measured separately); the engine speedup is paired "
               "(technique and baseline run side by side, one ratio per round).")
    store = page_store()
    if store is None:
        return
    wide = case_metrics(store.records)
    run = st.selectbox("run", store.runs["run_id"].tolist(), key="run")
    wide = wide[wide["run_id"] == run]
    if wide.empty:
        st.info(f"Run {run} has no successful case.")
        return
    baselines = {f: _baseline(f) for f in wide["family"].unique()}
    levels = wide.groupby("technique")["level"].nunique()
    is_base = set(baselines.values())
    names = sorted(levels.index, key=lambda t: (t in is_base, -levels[t], t))
    name = st.selectbox("technique", names, key="technique")
    family = wide.loc[wide["technique"] == name, "family"].iloc[0]
    baseline = baselines[family]
    table = linked_levels(wide, name, baseline, LEVEL_METRICS)
    if table.empty:
        st.info(f"No kernel/engine/serving results for {name}.")
        return
    st.markdown(f"Family **{family}**, baseline **{baseline}**.")
    cols = st.columns(max(1, table["level"].nunique()))
    for col, (level, part) in zip(cols, table.groupby("level", sort=False)):
        with col:
            st.subheader(level)
            for metric, rows in part.groupby("metric", sort=False):
                rows = rows.assign(case=rows["workload"] + " · " + rows["params"])
                ref = 1.0 if metric in ("speedup", UNPAIRED_SPEEDUP) else None
                st.plotly_chart(comparison_bar(rows, "case", "value", title=metric,
                                               value_title=metric, reference=ref),
                                key=f"bar_{level}_{metric}")
    st.dataframe(table, hide_index=True, key="linked_table")


render()
