"""Finding runs: list every run folder with its state, pick the latest, resolve a reference.

One job: naming runs. ``list_runs`` summarises each folder from its manifest (``finished``,
``incomplete`` or ``corrupt``, with a ``StoreWarning`` naming a damaged file, never hiding the
other runs); ``resolve_run`` turns ``latest``, a run id, a unique id prefix or a path into a
run folder, and otherwise fails naming the newest runs available.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from effbench.suite.errors import StoreError
from effbench.suite.store_files import (
    _RUN_ID_TIME,
    DEFAULT_ROOT,
    JOURNAL,
    MANIFEST,
    PARQUET,
    _run_dirs,
    _runs_dir,
    _warn,
    read_journal,
    read_manifest,
)
from effbench.suite.store_query import _parquet_ok
from effbench.suite.store_rows import case_counts

_LIST_AVAILABLE = 10


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
