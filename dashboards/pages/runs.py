"""Runs: every stored run with its manifest, and a comparison of two of them."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from effbench.dashboards.charts import comparison_bar
from effbench.dashboards.state import page_store
from effbench.suite.errors import EffbenchError
from effbench.suite.gate import compare


def render() -> None:
    st.title("Runs")
    store = page_store()
    if store is None:
        return
    runs = store.runs
    st.dataframe(runs.drop(columns=["path"]), hide_index=True, key="runs_table")
    ids = runs["run_id"].tolist()
    with st.expander("Manifest"):
        shown = st.selectbox("run", ids, key="manifest_run")
        path = Path(runs.loc[runs["run_id"] == shown, "path"].iloc[0]) / "manifest.json"
        try:
            st.json(json.loads(path.read_text()), expanded=1)
        except (OSError, ValueError) as e:
            st.warning(f"{path} is unreadable: {e}")
    st.subheader("Compare two runs")
    if len(ids) < 2:
        st.info("Only one run is stored: run the same preset again to compare two runs.")
        return
    c1, c2 = st.columns(2)
    a = c1.selectbox("baseline run (A)", ids, index=1, key="run_a")
    b = c2.selectbox("candidate run (B)", ids, index=0, key="run_b")
    rec_a = store.records[store.records["run_id"] == a]
    rec_b = store.records[store.records["run_id"] == b]
    try:
        verdicts = compare(rec_a, rec_b)
    except EffbenchError as e:  # e.g. no case in common
        st.info(f"These two runs cannot be compared: {e}")
        return
    st.caption("Verdicts of `effbench compare` (effbench.suite.gate.compare), A as baseline.")
    counts = verdicts["verdict"].value_counts()
    for col, (verdict, n) in zip(st.columns(max(1, len(counts))), counts.items()):
        col.metric(str(verdict), int(n))
    ratios = verdicts.dropna(subset=["ratio"]).assign(
        item=lambda d: d["case_id"] + " · " + d["metric"])
    if not ratios.empty:
        st.plotly_chart(comparison_bar(ratios, "item", "ratio", color="verdict",
                                       title="candidate / baseline median", reference=1.0),
                        key="gate_chart")
    st.dataframe(verdicts, hide_index=True, key="gate_table")

render()
