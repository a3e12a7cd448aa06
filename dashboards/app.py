"""effbench dashboard, first page: stored runs and any two metrics of one family and level.

Run with ``streamlit run dashboards/app.py -- --results results`` (the dashboard work adds
``effbench dash`` and the frontier pages). Listens where Streamlit is told; the CLI will bind
127.0.0.1 by default.
"""

from __future__ import annotations

import argparse
import sys

import plotly.express as px
import streamlit as st

from dashboards.data import case_metrics
from suite.store import list_runs, load_records


def _results_root() -> str:
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", default="results")
    return ap.parse_known_args(sys.argv[1:])[0].results


def main() -> None:
    st.set_page_config(page_title="effbench", layout="wide")
    st.title("effbench")
    root = _results_root()
    runs = list_runs(root)
    if runs.empty:
        st.info(f"No runs under `{root}`. Produce some with `effbench run smoke`.")
        return
    st.subheader("Runs")
    st.dataframe(runs, hide_index=True)
    run_id = st.selectbox("Run", runs["run_id"].tolist())
    wide = case_metrics(load_records(runs.loc[runs["run_id"] == run_id, "path"].iloc[0]))
    if wide.empty:
        st.warning("This run has no successful case.")
        return
    family = st.selectbox("Family", sorted(wide["family"].unique()))
    level = st.selectbox("Level", sorted(wide[wide["family"] == family]["level"].unique()))
    view = wide[(wide["family"] == family) & (wide["level"] == level)].dropna(axis=1, how="all")
    metrics = [c for c in view.columns if c not in
               ("run_id", "case_id", "family", "technique", "level", "workload", "params")]
    if len(metrics) < 2:
        st.dataframe(view, hide_index=True)
        return
    x = st.selectbox("x", metrics, index=0)
    y = st.selectbox("y", metrics, index=1)
    fig = px.scatter(view, x=x, y=y, color="technique", hover_data=["params", "workload"])
    st.plotly_chart(fig)
    st.dataframe(view, hide_index=True)


main()
