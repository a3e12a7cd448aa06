"""Runs: every stored run with its manifest, and a comparison of two of them."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboards.analysis import median_ratio
from dashboards.state import page_store

GATE_MISSING = (
    "The regression gate (`suite.gate`) is not installed in this checkout yet: showing a plain "
    "median-ratio comparison instead. Land the gate to get its verdicts here."
)


def _gate_verdicts(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame | None:
    """``suite.gate.compare(a, b)`` as a table, or None when the gate is not there (yet)."""
    try:
        from suite.gate import compare  # noqa: PLC0415 - optional module, imported lazily
    except ImportError:
        return None
    result = compare(a, b)
    if isinstance(result, pd.DataFrame):
        return result
    to_frame = getattr(result, "to_frame", None)
    return to_frame() if callable(to_frame) else pd.DataFrame({"verdict": [str(result)]})


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
    verdicts = _gate_verdicts(rec_a, rec_b)
    if verdicts is not None:
        st.caption("Verdicts from the regression gate (`suite.gate.compare`), A as baseline.")
        if "verdict" in verdicts:
            counts = verdicts["verdict"].value_counts()
            for col, (verdict, n) in zip(st.columns(max(1, len(counts))), counts.items()):
                col.metric(str(verdict), int(n))
        st.dataframe(verdicts, hide_index=True, key="gate_table")
        return
    st.info(GATE_MISSING)
    tol = st.slider("noise band (±)", 0.0, 0.5, 0.05, 0.01, key="tolerance")
    table = median_ratio(rec_a, rec_b, tolerance=tol)
    if table.empty:
        st.info("The two runs share no case: compare runs of the same preset.")
        return
    counts = table["verdict"].value_counts()
    m = st.columns(3)
    for col, verdict in zip(m, ("improved", "unchanged", "regressed")):
        col.metric(verdict, int(counts.get(verdict, 0)))
    st.dataframe(table, hide_index=True, key="ratio_table")


render()
