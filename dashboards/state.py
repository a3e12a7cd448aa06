"""What every page needs first: the results root, the loaded store, its warnings, empty hints.

The root comes from ``st.session_state["results_root"]`` (tests set it), else the command line
(``streamlit run dashboards/app.py -- --results DIR``), else ``EFFBENCH_RESULTS``, else
``results``.
"""

from __future__ import annotations

import os
import sys

import streamlit as st

from effbench.dashboards.data import Store, load_store, results_root

RUN_HINT = "effbench run smoke"


def current_root() -> str:
    """The results root this session shows."""
    if "results_root" not in st.session_state:
        st.session_state["results_root"] = results_root(sys.argv[1:], os.environ)
    return str(st.session_state["results_root"])


def page_store() -> Store | None:
    """Load the store, show its warnings; on an empty store show how to fill it, return None."""
    root = current_root()
    store = load_store(root)
    for message in store.warnings:
        st.warning(f"Skipped a damaged file: {message}", icon="⚠️")
    if store.empty:
        st.info(
            f"No results under `{root}` yet. Produce some with `{RUN_HINT}` "
            f"(or `{RUN_HINT} --results {root}`), then reload this page."
        )
        return None
    return store
