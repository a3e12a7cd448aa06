"""Techniques: every registered technique, what it is, and its best measured case per metric."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from effbench.dashboards.analysis import best_cases
from effbench.dashboards.data import case_metrics, metric_info
from effbench.dashboards.state import current_root, load_store


@st.cache_data(show_spinner=False)
def _catalog() -> pd.DataFrame:
    """Registered techniques as a table (imports the adapters once, hence the cache)."""
    from effbench.suite.registry import techniques  # noqa: PLC0415 - slow import, only on this page

    return pd.DataFrame([{
        "technique": t.name, "family": t.family, "baseline": t.baseline,
        "lossless": t.lossless, "paper": str(t.paper) if t.paper else "",
        "params": ", ".join(p.describe() for p in t.params), "levels": ", ".join(t.levels),
        "summary": t.summary,
    } for t in techniques()])


def render() -> None:
    st.title("Techniques")
    catalog = _catalog()
    store = load_store(current_root())
    wide = case_metrics(store.records)
    measured = wide.groupby("technique")["level"].agg(lambda s: ", ".join(sorted(set(s))))
    catalog["levels with results"] = catalog["technique"].map(
        lambda t: measured.get(t, "")
    )
    st.dataframe(catalog, hide_index=True, key="catalog")
    if store.empty:
        st.info("No results yet: produce some with `effbench run smoke`.")
        return
    names = [t for t in catalog["technique"] if t in measured.index]
    if not names:
        st.info("No registered technique has results in this store.")
        return
    name = st.selectbox("technique", names, key="technique")
    row = catalog[catalog["technique"] == name].iloc[0]
    st.markdown(f"**{name}** ({row['family']}): {row['summary']}  \n"
                f"{'Lossless. ' if row['lossless'] else ''}{row['paper']}")
    st.subheader("Best case per metric")
    st.dataframe(best_cases(wide, metric_info(store.records), name), hide_index=True,
                 key="best_table")


render()
