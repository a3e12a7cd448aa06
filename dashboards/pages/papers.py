"""Papers: which paper claims hold here (the tables `effbench repro` saved), one chart each."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from effbench.dashboards.claim_charts import VERDICT_COLORS, claim_figure
from effbench.dashboards.state import current_root


def _color(verdict: str) -> str:
    return f"color: {VERDICT_COLORS.get(verdict, 'inherit')}"


def render() -> None:
    from effbench.suite import claim, repro  # noqa: PLC0415 - registry import only on this page

    st.title("Papers")
    root = current_root()
    tables = repro.saved_tables(root)
    if not tables:
        st.info(f"No claim tables under `{root}/repro` yet: run `effbench repro --all "
                f"--results {root}`, then reload this page.")
        return
    path = st.selectbox("claim table", tables, format_func=lambda p: p.stem, key="table")
    df = repro.load_saved(path)
    shown = df[["claim", "paper", "figure", "measured", "ci", "verdict", "scale"]]
    st.dataframe(shown.style.map(_color, subset=["verdict"]), hide_index=True,
                 key="claims_table")
    counts = df["verdict"].value_counts()
    st.caption(" · ".join(f"{v}: {n}" for v, n in counts.items()))
    cid = st.selectbox("claim", list(df["claim"]), key="claim")
    row = df[df["claim"] == cid].iloc[0]
    try:
        spec = claim.get_claim(cid)
    except Exception:  # noqa: BLE001 - a saved table may name a claim no longer registered
        st.warning(f"claim {cid} is not registered any more; showing its saved row only")
        st.json(row.to_dict())
        return
    st.markdown(f"**{spec.paper}**  \n> {spec.claim}  \n\nFigure: {spec.figure}  \n"
                f"Verdict: **{row['verdict']}**: {row['detail']}  \nScale: {spec.scale}")
    if not row.get("run_id"):
        return
    from effbench.suite.store import load_records, resolve_run  # noqa: PLC0415

    try:
        records = load_records(resolve_run(root, str(row["run_id"])))
    except Exception as e:  # noqa: BLE001 - the run may have been deleted since
        st.warning(f"run {row['run_id']} is not in this store: {e}")
        return
    fig = claim_figure(spec.chart, pd.DataFrame(records), spec.techniques, spec.metrics)
    st.plotly_chart(fig, key="claim_chart")


render()
