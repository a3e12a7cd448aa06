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
"""

from __future__ import annotations

import json
import math
import os
import re
import secrets
import tempfile
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from effbench.suite.errors import StoreError
from effbench.suite.manifest import build_manifest, utc_now
from effbench.suite.records import Record

DEFAULT_ROOT = Path("results")
RUNS_DIR = "runs"
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
PARQUET = "records.parquet"
_BATCH, _BATCH_SIZE = "_batch", "_batch_size"
_RUN_ID_TIME = "%Y%m%d-%H%M%S"
_LIST_AVAILABLE = 10

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


class StoreWarning(UserWarning):
    """A stored file is damaged or unreadable; the message names it and what was done instead."""


def _warn(message: str) -> None:
    warnings.warn(message, StoreWarning, stacklevel=3)


# ---------------------------------------------------------------------------------------------
# Records <-> rows


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


# ---------------------------------------------------------------------------------------------
# Files


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so readers see the old or the new file, never half of one."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from e
    _fsync_dir(path.parent)


def _write_json(path: Path, obj: dict[str, Any]) -> None:
    _write_atomic(path, (json.dumps(obj, indent=2, default=str) + "\n").encode())


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """Read a run's manifest; StoreError naming the file when missing or not valid JSON."""
    path = Path(run_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise StoreError(f"{path} is missing: not a run folder, or the run was cut off") from e
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise StoreError(f"{path} is unreadable: {e}") from e
    if not isinstance(manifest, dict):
        raise StoreError(f"{path} is unreadable: expected a JSON object")
    return manifest


def read_journal(path: Path) -> list[Record]:
    """Read the records of the complete cases in a journal, in the order they finished.

    An unterminated last line (a crash mid-write) and the lines of a batch that never got all
    of its lines are dropped silently: they are the case that was running and did not finish.
    A damaged line inside the file is skipped with a StoreWarning naming ``path:line``. When a
    case was appended more than once (re-run on resume), its last complete batch wins.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StoreError(f"cannot read {path}: {e.strerror or e}") from e
    lines = data.split(b"\n")[:-1]  # the piece after the last newline is torn or empty
    batches: dict[str, list[Record]] = {}
    sizes: dict[str, int] = {}
    complete: dict[str, str] = {}  # case_id -> batch id of its latest complete batch
    for lineno, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            d = json.loads(raw)
            record = _record_from_row(d)
            batch, size = str(d.get(_BATCH, f"line-{lineno}")), int(d.get(_BATCH_SIZE, 1))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            _warn(f"{path}:{lineno}: skipped an unreadable line ({type(e).__name__}: {e})")
            continue
        batches.setdefault(batch, []).append(record)
        sizes[batch] = size
        if len(batches[batch]) == size:
            for case_id in {r.case_id for r in batches[batch]}:
                complete.pop(case_id, None)  # re-insert so dict order = order of completion
                complete[case_id] = batch
    kept: list[str] = list(dict.fromkeys(complete.values()))
    return [r for b in kept for r in batches[b] if complete.get(r.case_id) == b]


def _repair_journal(path: Path) -> None:
    """Cut an unterminated last line off the journal so that later appends start on a new line."""
    try:
        with open(path, "r+b") as f:
            data = f.read()
            if not data or data.endswith(b"\n"):
                return
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
    except FileNotFoundError:
        return
    except OSError as e:
        raise StoreError(f"cannot repair {path}: {e.strerror or e}") from e
    _warn(f"{path}: dropped an incomplete last line ({len(data) - keep} bytes) left by a crash")


# ---------------------------------------------------------------------------------------------
# Runs


def new_run_id(name: str, now: datetime | None = None) -> str:
    """Sortable, readable run id: ``<UTC yyyymmdd-hhmmss>-<name slug>-<4 hex>``."""
    now = now or datetime.now(timezone.utc)
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:40].strip("-") or "run"
    return f"{now.strftime(_RUN_ID_TIME)}-{slug}-{secrets.token_hex(2)}"


def check_writable(root: Path) -> Path:
    runs = root / RUNS_DIR
    try:
        runs.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=runs):
            pass
    except OSError as e:
        raise StoreError(f"results folder {root} is not writable: {e.strerror or e}") from e
    return runs


@dataclass(frozen=True)
class RunStore:
    """One run's folder. Holds no open files: every call reads or appends and closes again."""

    root: Path
    run_id: str

    @property
    def run_dir(self) -> Path:
        return Path(self.root) / RUNS_DIR / self.run_id

    @property
    def manifest_path(self) -> Path:
        return self.run_dir / MANIFEST

    @property
    def journal_path(self) -> Path:
        return self.run_dir / JOURNAL

    @property
    def parquet_path(self) -> Path:
        return self.run_dir / PARQUET

    @classmethod
    def create(cls, root: Path | str, name: str, config: dict[str, Any]) -> RunStore:
        """Make a new run folder with its manifest; StoreError first if ``root`` is unwritable."""
        root = Path(root)
        runs = check_writable(root)
        for _ in range(8):
            run_id = new_run_id(name)
            try:
                (runs / run_id).mkdir()
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise StoreError(f"results folder {root} is not writable: {e.strerror}") from e
        else:
            raise StoreError(f"could not make a fresh run folder under {runs}")
        store = cls(root, run_id)
        manifest = build_manifest(config, run_id)
        manifest["name"] = name
        manifest["counts"] = None
        _write_json(store.manifest_path, manifest)
        _write_atomic(store.journal_path, b"")
        return store

    @classmethod
    def open(cls, root: Path | str, run: str) -> RunStore:
        """Reopen a run to resume it (``run``: id, unique prefix or ``latest``).

        A journal line torn by a crash is cut off (with a StoreWarning) so appends stay valid.
        """
        run_dir = resolve_run(root, run)
        read_manifest(run_dir)
        store = cls(run_dir.parent.parent, run_dir.name)
        _repair_journal(store.journal_path)
        return store

    def manifest(self) -> dict[str, Any]:
        return read_manifest(self.run_dir)

    def append(self, records: list[Record]) -> None:
        """Durably append the records of one finished case (one batch) to the journal.

        Returns only after the data is fsync'ed. Appending to a finalised run (resume) deletes
        its now-stale ``records.parquet`` until the next ``finalize``.
        """
        if not records:
            return
        wrong = {r.run_id for r in records} - {self.run_id}
        if wrong:
            raise ValueError(f"records of run {sorted(wrong)} appended to run {self.run_id}")
        batch = secrets.token_hex(8)
        lines = [
            json.dumps(
                {**_record_to_row(r), _BATCH: batch, _BATCH_SIZE: len(records)},
                allow_nan=False,
                default=str,
                separators=(",", ":"),
            )
            for r in records
        ]
        data = ("\n".join(lines) + "\n").encode()
        if self.parquet_path.exists():
            self._unfinalize()
        path = self.journal_path
        try:
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data  # never glue a batch onto a torn line
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            raise StoreError(f"cannot append to {path}: {e.strerror or e}") from e

    def _unfinalize(self) -> None:
        try:
            self.parquet_path.unlink()
        except FileNotFoundError:
            pass
        manifest = self.manifest()
        manifest["finished"], manifest["counts"] = None, None
        _write_json(self.manifest_path, manifest)

    def records(self) -> list[Record]:
        """Return the records of every complete case in the journal."""
        return read_journal(self.journal_path)

    def completed_cases(self) -> set[str]:
        """Ids of the cases whose records are all in the journal (ok, failed or skipped)."""
        return {r.case_id for r in self.records()}

    def finalize(self) -> dict[str, Any]:
        """Write ``records.parquet`` from the journal, stamp and return the manifest."""
        records = self.records()
        sink = pa.BufferOutputStream()
        pq.write_table(records_to_table(records), sink, compression="zstd")
        _write_atomic(self.parquet_path, sink.getvalue().to_pybytes())
        manifest = self.manifest()
        manifest["finished"] = utc_now()
        manifest["counts"] = case_counts(records)
        _write_json(self.manifest_path, manifest)
        return manifest


# ---------------------------------------------------------------------------------------------
# Reading runs


def _runs_dir(root: Path | str) -> Path:
    return Path(root) / RUNS_DIR


def _run_dirs(root: Path | str) -> list[Path]:
    runs = _runs_dir(root)
    try:
        return sorted(p for p in runs.iterdir() if p.is_dir())
    except FileNotFoundError:
        return []
    except OSError as e:
        raise StoreError(f"cannot list {runs}: {e.strerror or e}") from e


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


def _started_from_id(run_id: str) -> pd.Timestamp:
    try:
        return pd.Timestamp(datetime.strptime(run_id[:15], _RUN_ID_TIME), tz="UTC")
    except ValueError:
        return pd.NaT


def _run_row(run_dir: Path) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": run_dir.name,
        "name": None,
        "started": _started_from_id(run_dir.name),
        "finished": pd.NaT,
        "n_cases": None,
        "n_failed": None,
        "git_sha": None,
        "git_dirty": None,
        "device": None,
        "state": "corrupt",
        "path": str(run_dir),
    }
    try:
        manifest = read_manifest(run_dir)
    except StoreError as e:
        _warn(str(e))
        return row
    git = manifest.get("git") or {}
    row.update(
        name=manifest.get("name"),
        started=pd.to_datetime(manifest.get("started"), utc=True, errors="coerce"),
        finished=pd.to_datetime(manifest.get("finished"), utc=True, errors="coerce"),
        git_sha=git.get("sha"),
        git_dirty=git.get("dirty"),
        device=manifest.get("device"),
    )
    counts = manifest.get("counts")
    parquet = run_dir / PARQUET
    if parquet.exists() and isinstance(counts, dict):
        row["state"] = "finished" if _parquet_ok(parquet) else "corrupt"
    else:
        row["state"], row["finished"] = "incomplete", pd.NaT
        counts = case_counts(read_journal(run_dir / JOURNAL))
    row["n_cases"], row["n_failed"] = counts.get("cases"), counts.get("failed")
    return row


_RUN_COLUMNS = (
    "run_id name started finished n_cases n_failed git_sha git_dirty device state path".split()
)


def list_runs(root: Path | str = DEFAULT_ROOT) -> pd.DataFrame:
    """One row per run folder, newest first.

    Columns: run_id, name, started, finished (NaT unless finalised), n_cases, n_failed, git_sha,
    git_dirty, device, state (``finished``, ``incomplete`` or ``corrupt``) and path. A run with a
    damaged manifest or Parquet file is listed as ``corrupt`` with a StoreWarning naming the file.
    """
    rows = [_run_row(d) for d in _run_dirs(root)]
    df = pd.DataFrame(rows, columns=list(_RUN_COLUMNS))
    for col in ("started", "finished"):
        df[col] = pd.to_datetime(df[col], utc=True)
    for col in ("n_cases", "n_failed"):
        df[col] = df[col].astype("Int64")
    df = df.sort_values(["started", "run_id"], ascending=False, na_position="last")
    return df.reset_index(drop=True)


def _started_quietly(run_dir: Path) -> pd.Timestamp:
    try:
        started = read_manifest(run_dir).get("started")
        ts = pd.to_datetime(started, utc=True, errors="coerce")
    except StoreError:
        ts = pd.NaT
    return _started_from_id(run_dir.name) if pd.isna(ts) else ts


def latest_run(root: Path | str = DEFAULT_ROOT) -> Path | None:
    """Folder of the most recently started run (finished or not), or None when there are none."""
    dirs = [d for d in _run_dirs(root) if (d / MANIFEST).exists()]
    if not dirs:
        return None
    epoch = pd.Timestamp(0, tz="UTC")
    return max(dirs, key=lambda d: (_fill(_started_quietly(d), epoch), d.name))


def _fill(ts: pd.Timestamp, default: pd.Timestamp) -> pd.Timestamp:
    return default if pd.isna(ts) else ts


def resolve_run(root: Path | str, ref: str) -> Path:
    """Folder of the run named by ``ref``: ``latest``, a run id, a unique id prefix or a run path.

    Raises StoreError naming the newest available runs when nothing (or more than one) matches.
    """
    runs = _runs_dir(root)
    if ref == "latest":
        found = latest_run(root)
        if found is None:
            raise StoreError(f"no runs in {runs} yet")
        return found
    dirs = _run_dirs(root)
    names = [d.name for d in dirs]
    if ref in names:
        return runs / ref
    matches = [d for d in dirs if ref and d.name.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        listed = ", ".join(d.name for d in matches[:_LIST_AVAILABLE])
        raise StoreError(f"run '{ref}' is ambiguous in {runs}: matches {listed}")
    as_path = Path(ref)
    if (as_path / MANIFEST).is_file():
        return as_path
    newest = sorted(names, reverse=True)
    if not newest:
        raise StoreError(f"no run '{ref}': there are no runs in {runs} yet")
    listed = ", ".join(newest[:_LIST_AVAILABLE])
    more = f" (and {len(newest) - _LIST_AVAILABLE} older)" if len(newest) > _LIST_AVAILABLE else ""
    raise StoreError(f"no run '{ref}' in {runs}; available, newest first: {listed}{more}")


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
