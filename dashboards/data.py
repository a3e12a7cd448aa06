"""Pure functions that shape stored records for the dashboard (DataFrames in, DataFrames out)."""

from __future__ import annotations

import json

import pandas as pd


def case_metrics(records: pd.DataFrame) -> pd.DataFrame:
    """One row per case, one column per metric (the record's value), ok cases only."""
    ok = records[records["status"] == "ok"].copy()
    if ok.empty:
        return pd.DataFrame()
    ok["params"] = ok["params"].map(
        lambda p: p if isinstance(p, str) else json.dumps(p, sort_keys=True)
    )
    keys = ["run_id", "case_id", "family", "technique", "level", "workload", "params"]
    wide = ok.pivot_table(index=keys, columns="metric", values="value", aggfunc="first")
    return wide.reset_index()
