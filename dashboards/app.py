"""effbench dashboard entry point: a multipage Streamlit app over a results store.

Run with ``effbench dash --results DIR`` or ``streamlit run dashboards/app.py -- --results DIR``
(or set ``EFFBENCH_RESULTS``). ``effbench dash`` listens on 127.0.0.1 unless told otherwise.
Pages live in ``dashboards/pages/``; this file only wires the navigation.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

PAGES = Path(__file__).parent / "pages"


def main() -> None:
    st.set_page_config(page_title="effbench", layout="wide")
    nav = st.navigation([
        st.Page(PAGES / "frontier.py", title="Frontier explorer", default=True),
        st.Page(PAGES / "runs.py", title="Runs"),
        st.Page(PAGES / "techniques.py", title="Techniques"),
        st.Page(PAGES / "linked.py", title="Linked levels"),
        st.Page(PAGES / "profiles.py", title="Profiles"),
        st.Page(PAGES / "papers.py", title="Papers"),
    ])
    nav.run()


main()
