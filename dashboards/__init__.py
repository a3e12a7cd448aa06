"""The Streamlit dashboard over the results store (pages + pure data/chart functions)."""
