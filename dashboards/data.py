"""Loading the results store for the dashboard, and the pure reshaping/filtering it needs.

``read_store`` reads every run under a results root into one long records frame and turns the
store's ``StoreWarning``s (damaged files) into a list of messages, so one bad file is shown on
the page instead of crashing it. ``load_store`` is the cached entry point: its cache key holds the
root *and* a fingerprint of the run folders' files (names, sizes, mtimes), so a new or resumed
run invalidates it without a manual refresh. Everything after loading is pure: DataFrames in,
DataFrames out.
"""

from __future__ import annotations

import argparse
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import streamlit as st

from effbench.suite import metrics
from effbench.suite.errors import StoreError
from effbench.suite.report import is_noisy, params_label
from effbench.suite.store import RUNS_DIR, SCHEMA, StoreWarning, list_runs, load_records

ENV_VAR = "EFFBENCH_RESULTS"
DEFAULT_ROOT = "results"
CASE_KEYS = ["run_id", "case_id", "family", "technique", "level", "workload", "device", "params"]
"""Columns that identify a case in the wide table (everything else there is a metric)."""
LABEL_COLUMNS = ["params_label", "label"]
MARK_COLUMNS = ["noisy"]
"""Per-case marks in the wide table: ``noisy``, measured under interference (stats ``noisy``)."""
FILTER_COLUMNS = ("family", "technique", "level", "device", "workload", "run_id")


@dataclass
class Store:
    """What the dashboard knows about one results root."""

    root: str
    runs: pd.DataFrame
    records: pd.DataFrame
    warnings: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.records.empty


def results_root(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """The results root: ``--results DIR`` after ``--`` on the command line, else the env var."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--results", default=None)
    given = ap.parse_known_args(list(argv))[0].results
    return given or env.get(ENV_VAR) or DEFAULT_ROOT


def store_fingerprint(root: str | Path) -> tuple[tuple[str, int, int], ...]:
    """(relative path, size, mtime_ns) of every file in every run folder: changes on any write."""
    runs = Path(root) / RUNS_DIR
    out: list[tuple[str, int, int]] = []
    try:
        run_dirs = sorted(p for p in runs.iterdir() if p.is_dir())
    except OSError:
        return ()
    for run_dir in run_dirs:
        try:
            for f in sorted(run_dir.iterdir()):
                s = f.stat()
                out.append((f"{run_dir.name}/{f.name}", s.st_size, s.st_mtime_ns))
        except OSError:
            out.append((run_dir.name, -1, -1))
    return tuple(out)


def _empty_records() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=object) for name in SCHEMA.names})


def read_store(root: str | Path) -> Store:
    """Read all runs under ``root``; damaged files become warning messages, never exceptions."""
    caught: list[str] = []
    frames: list[pd.DataFrame] = []
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", StoreWarning)
        try:
            runs = list_runs(root)
        except StoreError as e:
            return Store(str(root), list_runs(Path("/nonexistent")), _empty_records(), [str(e)])
        for path in runs["path"]:
            try:
                frames.append(load_records(path))
            except (StoreError, OSError, ValueError) as e:
                caught.append(f"{path}: {e}")
    caught = [str(w.message) for w in seen if issubclass(w.category, StoreWarning)] + caught
    frames = [f for f in frames if not f.empty]
    records = pd.concat(frames, ignore_index=True) if frames else _empty_records()
    return Store(str(root), runs, records, list(dict.fromkeys(caught)))


@st.cache_data(show_spinner="Reading the results store...", max_entries=8)
def _load_cached(root: str, fingerprint: tuple[tuple[str, int, int], ...]) -> Store:
    del fingerprint  # part of the cache key only
    return read_store(root)


def load_store(root: str) -> Store:
    """``read_store`` cached on (root, fingerprint of its run folders)."""
    return _load_cached(root, store_fingerprint(root))


# ---------------------------------------------------------------------------------------------
# Pure reshaping


def metric_info(records: pd.DataFrame) -> pd.DataFrame:
    """One row per metric: its unit and its better direction.

    The direction is the one the metric's producer declared (effbench.suite.metrics); the
    unit is the one the records carry, since their values are in it. For a metric nothing
    declares (another tool's records, an older effbench), both are the most common in the
    records.
    """
    if records.empty:
        return pd.DataFrame(columns=["unit", "direction"], index=pd.Index([], name="metric"))
    ok = records[records["status"] == "ok"]
    info = ok.groupby("metric")[["unit", "direction"]].agg(
        lambda s: s.mode().iat[0] if not s.mode().empty else ""
    )
    declared = {m: metrics.spec(str(m)) for m in info.index}
    info["direction"] = [d.direction if d is not None else recorded
                         for d, recorded in zip(declared.values(), info["direction"])]
    return info


def case_metrics(records: pd.DataFrame) -> pd.DataFrame:
    """One row per case (ok records only), one column per metric; params as hover text.

    Key columns are ``CASE_KEYS`` plus ``params_label`` (``window=64, sinks=4``) and ``label``
    (``technique (params)``), and ``noisy`` (bool): the case was measured under interference
    (its records' stats say ``noisy``; False for runs from before the mark existed). A metric
    measured twice in a case keeps its first value.
    """
    ok = records[records["status"] == "ok"]
    if ok.empty:
        return pd.DataFrame(columns=CASE_KEYS + LABEL_COLUMNS + MARK_COLUMNS)
    ok = ok.drop_duplicates(["run_id", "case_id", "metric"])
    values = ok.pivot(index=["run_id", "case_id"], columns="metric", values="value")
    values.columns.name = None
    cases = ok.drop_duplicates(["run_id", "case_id"]).set_index(["run_id", "case_id"])
    noisy = (cases["stats"].map(is_noisy_stats).astype(bool) if "stats" in cases
             else pd.Series(False, index=cases.index))
    cases = cases[[c for c in CASE_KEYS if c not in ("run_id", "case_id")]].assign(noisy=noisy)
    wide = cases.join(values).reset_index()
    labels = {p: params_label(p) for p in wide["params"].unique()}
    wide["params_label"] = wide["params"].map(labels)
    wide["label"] = wide["technique"] + wide["params_label"].map(
        lambda p: "" if p == "-" else f" ({p})"
    )
    return wide


def is_noisy_stats(stats: object) -> bool:
    """Whether a record's ``stats`` (a dict or its JSON text) mark its case ``noisy``."""
    return is_noisy({"stats": stats})


def metric_columns(wide: pd.DataFrame) -> list[str]:
    """The metric columns of a ``case_metrics`` frame that hold at least one value."""
    keys = set(CASE_KEYS + LABEL_COLUMNS + MARK_COLUMNS)
    return [c for c in wide.columns if c not in keys and wide[c].notna().any()]


def options(wide: pd.DataFrame, column: str) -> list[str]:
    """Sorted distinct non-null values of ``column`` (for a filter widget)."""
    if column not in wide:
        return []
    return sorted(str(v) for v in wide[column].dropna().unique())


def filter_cases(wide: pd.DataFrame, selected: Mapping[str, Iterable[str] | None]) -> pd.DataFrame:
    """Rows whose value in each column is among the selected ones; None or empty = no filter."""
    keep = pd.Series(True, index=wide.index)
    for column, values in selected.items():
        values = list(values or [])
        if values and column in wide:
            keep &= wide[column].astype(str).isin(values)
    return wide[keep]


def decades(values: pd.Series) -> float:
    """How many powers of ten the positive finite values span (0 when fewer than two)."""
    v = pd.to_numeric(values, errors="coerce")
    v = v[(v > 0) & (v < float("inf"))]
    if len(v) < 2:
        return 0.0
    return math.log10(v.max() / v.min())
