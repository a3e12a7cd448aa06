"""The results store: one folder per run, a crash-safe journal, Parquet when finished, SQL on top.

Layout under the results root (default ``results/``)::

    runs/<run_id>/manifest.json     where/when/what code (effbench.suite.manifest), counts once
    finished
    runs/<run_id>/journal.jsonl     one JSON line per Record, appended and fsync'ed per case
    runs/<run_id>/records.parquet   written by ``finalize()``: one row per Record

The journal is the source of truth while a run is going: each ``append`` call (one case) is
written and fsync'ed before it returns, so a killed run loses at most the case it was in. Every
line carries the id and size of its append batch, so a case cut short mid-write is recognised as
incomplete on reading and is run again on resume. Parquet is the finished, columnar copy that
pandas and DuckDB read fast; ``query`` puts every run, finished or not, behind one SQL view.

A damaged file in one run is reported by path (a ``StoreWarning``) and never hides the other runs.

The code is split by job; this module re-exports the public names so ``from
effbench.suite.store import ...`` keeps working:

- ``store_rows``: records <-> rows, Arrow tables and frames (``SCHEMA``, ``case_counts``);
- ``store_files``: the run folder's file names, atomic writes, manifest and journal reading;
- ``store_run``: ``RunStore``, one run written case by case and finalised to Parquet;
- ``store_query``: ``load_records`` (one run) and ``query`` (DuckDB over every run);
- ``store_catalog``: ``list_runs``, ``latest_run``, ``resolve_run``.
"""

from effbench.suite.store_catalog import latest_run, list_runs, resolve_run
from effbench.suite.store_files import (
    DEFAULT_ROOT,
    JOURNAL,
    MANIFEST,
    PARQUET,
    RUNS_DIR,
    StoreWarning,
    read_journal,
    read_manifest,
)
from effbench.suite.store_query import load_records, query
from effbench.suite.store_rows import (
    SCHEMA,
    case_counts,
    frame_to_records,
    records_to_frame,
    records_to_table,
)
from effbench.suite.store_run import RunStore, check_writable, new_run_id

__all__ = [
    "DEFAULT_ROOT",
    "JOURNAL",
    "MANIFEST",
    "PARQUET",
    "RUNS_DIR",
    "SCHEMA",
    "RunStore",
    "StoreWarning",
    "case_counts",
    "check_writable",
    "frame_to_records",
    "latest_run",
    "list_runs",
    "load_records",
    "new_run_id",
    "query",
    "read_journal",
    "read_manifest",
    "records_to_frame",
    "records_to_table",
    "resolve_run",
]
