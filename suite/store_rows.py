"""Records <-> rows of the results store: the table schema, Arrow tables, pandas frames.

One job: the shape records take on disk and in memory. ``SCHEMA`` is the column set of
``records.parquet`` and of every frame the store returns (nested fields as JSON text, plus flat
copies of the median and its confidence interval for SQL); the journal holds the same rows as
JSON lines. ``case_counts`` summarises a run's records by case status for its manifest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import fields
from typing import Any

import pandas as pd
import pyarrow as pa

from effbench.suite.records import Record

_RECORD_TYPES: dict[str, pa.DataType] = {
    "run_id": pa.string(),
    "case_id": pa.string(),
    "technique": pa.string(),
    "family": pa.string(),
    "level": pa.string(),
    "params": pa.string(),
    "workload": pa.string(),
    "device": pa.string(),
    "metric": pa.string(),
    "value": pa.float64(),
    "unit": pa.string(),
    "direction": pa.string(),
    "samples": pa.string(),
    "stats": pa.string(),
    "status": pa.string(),
    "error": pa.string(),
    "created_ns": pa.int64(),
    "schema_version": pa.int64(),
}
_FLAT_STATS: dict[str, pa.DataType] = {
    "median": pa.float64(),
    "ci_low": pa.float64(),
    "ci_high": pa.float64(),
    "n": pa.int64(),
    "rel_ci": pa.float64(),
}
_RECORD_FIELDS = tuple(f.name for f in fields(Record))
if set(_RECORD_FIELDS) != set(_RECORD_TYPES):  # a Record change must update the table schema
    raise ImportError(f"store schema is out of date with Record fields {_RECORD_FIELDS}")
SCHEMA = pa.schema(
    [(name, _RECORD_TYPES[name]) for name in _RECORD_FIELDS] + list(_FLAT_STATS.items())
)
"""Columns of ``records.parquet`` and of every frame the store returns; JSON text for nesting."""


def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: store them as null (read back as NaN)."""
    return None if isinstance(x, float) and not math.isfinite(x) else x


def _record_to_row(record: Record) -> dict[str, Any]:
    """Plain-JSON dict of a record: nesting kept as Python objects, non-finite floats as None."""
    d = record.to_json()
    d["samples"] = [_finite(x) for x in record.samples]
    d["stats"] = {k: _finite(v) for k, v in record.stats.items()}
    return d


def _record_from_row(d: dict[str, Any]) -> Record:
    """Inverse of ``_record_to_row`` (also accepts the JSON-text columns of the table)."""
    d = {k: d[k] for k in _RECORD_FIELDS if k in d}
    for key in ("params", "stats", "samples"):
        if isinstance(d.get(key), str):
            d[key] = json.loads(d[key])
    d["samples"] = tuple(math.nan if x is None else x for x in d.get("samples") or ())
    d["stats"] = {k: math.nan if v is None else v for k, v in (d.get("stats") or {}).items()}
    for key in ("created_ns", "schema_version"):
        if key in d:
            d[key] = int(d[key])
    value = d.get("value")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        d["value"] = None
    return Record.from_json(d)


def _json_text(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, allow_nan=False, default=str)


def _stat(stats: dict[str, Any], key: str) -> Any:
    v = stats.get(key)
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return None
    return int(v) if key == "n" else float(v)


def records_to_table(records: Iterable[Record]) -> pa.Table:
    """Arrow table of ``records`` in ``SCHEMA``: params/samples/stats as JSON text, stats flat."""
    rows = []
    for record in records:
        d = _record_to_row(record)
        for key in ("params", "samples", "stats"):
            d[key] = _json_text(d[key])
        for key in _FLAT_STATS:
            d[key] = _stat(record.stats, key)
        rows.append(d)
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def _table_to_frame(table: pa.Table) -> pd.DataFrame:
    return table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)


def records_to_frame(records: Iterable[Record]) -> pd.DataFrame:
    """DataFrame of ``records`` with the columns of ``SCHEMA`` (what ``load_records`` returns)."""
    return _table_to_frame(records_to_table(records))


def frame_to_records(df: pd.DataFrame) -> list[Record]:
    """Rebuild Records from a frame with the ``SCHEMA`` columns (e.g. from ``load_records``)."""
    out = []
    for row in df.to_dict("records"):
        out.append(_record_from_row({k: (None if _is_na(v) else v) for k, v in row.items()}))
    return out


def _is_na(v: Any) -> bool:
    return v is pd.NA or v is None or (isinstance(v, float) and math.isnan(v))


def case_counts(records: Iterable[Record]) -> dict[str, int]:
    """Cases by status: a case failed if any of its records failed, skipped if all were skipped."""
    by_case: dict[str, set[str]] = {}
    n_records = 0
    for record in records:
        by_case.setdefault(record.case_id, set()).add(record.status)
        n_records += 1
    counts = {"cases": len(by_case), "ok": 0, "failed": 0, "skipped": 0, "records": n_records}
    for statuses in by_case.values():
        if "failed" in statuses:
            counts["failed"] += 1
        elif statuses == {"skipped"}:
            counts["skipped"] += 1
        else:
            counts["ok"] += 1
    return counts
