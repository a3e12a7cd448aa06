"""Reading records back: one run as a frame (``load_records``), every run through SQL (``query``).

One job: turning stored runs into records. A finalised run is read from its Parquet file, an
unfinished one (or one whose Parquet is damaged, with a ``StoreWarning``) from its journal, so
what a reader sees never depends on whether a run finished.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from effbench.suite.errors import StoreError
from effbench.suite.store_files import JOURNAL, PARQUET, _run_dirs, _warn, read_journal
from effbench.suite.store_rows import _table_to_frame, records_to_frame, records_to_table


def _parquet_table(path: Path) -> pa.Table | None:
    """Read a run's Parquet table; None (and a StoreWarning naming it) when it is damaged."""
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        _warn(f"{path} is unreadable, using the run's journal instead ({e})")
        return None


def _parquet_ok(path: Path) -> bool:
    try:
        pq.read_metadata(path)
        return True
    except (OSError, pa.ArrowException) as e:
        _warn(f"{path} is unreadable, using the run's journal instead ({e})")
        return False


def load_records(run_dir: Path | str) -> pd.DataFrame:
    """All records of a run as a ``SCHEMA`` frame: its Parquet if finalised, else its journal."""
    run_dir = Path(run_dir)
    parquet, journal = run_dir / PARQUET, run_dir / JOURNAL
    if parquet.exists():
        table = _parquet_table(parquet)
        if table is not None:
            return _table_to_frame(table)
    elif not journal.exists():
        raise StoreError(f"{run_dir} holds no {PARQUET} or {JOURNAL}: is it a run folder?")
    return records_to_frame(read_journal(journal))


def _sql_path(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def query(root: Path | str, sql: str) -> pd.DataFrame:
    """Run DuckDB ``sql`` over a view ``records`` holding every run's records (``SCHEMA`` columns).

    Finalised runs are read straight from their Parquet files; unfinished runs, and runs whose
    Parquet is damaged (StoreWarning), from their journals. Example::

        query("results", "SELECT technique, median(value) FROM records GROUP BY 1")
    """
    parquets: list[Path] = []
    journals: list[pa.Table] = []
    for run_dir in _run_dirs(root):
        parquet = run_dir / PARQUET
        if parquet.exists() and _parquet_ok(parquet):
            parquets.append(parquet)
        elif (run_dir / JOURNAL).exists():
            journals.append(records_to_table(read_journal(run_dir / JOURNAL)))
    con = duckdb.connect()
    try:
        con.register("_journal_records", pa.concat_tables([records_to_table([]), *journals]))
        source = "SELECT * FROM _journal_records"
        if parquets:
            files = ", ".join(_sql_path(p) for p in parquets)
            source = (
                f"SELECT * FROM read_parquet([{files}], union_by_name = true) "
                f"UNION ALL BY NAME {source}"
            )
        con.execute(f"CREATE VIEW records AS {source}")
        return con.execute(sql).df()
    except duckdb.Error as e:
        raise StoreError(f"query failed: {e}") from e
    finally:
        con.close()
