"""``RunStore``: one run's folder, written case by case and finalised to Parquet.

One job: the write side of a single run. ``create`` makes the folder with its manifest and an
empty journal; ``open`` reopens it for resume (repairing a torn journal line); ``append``
journals one finished case as one batch and fsyncs before returning, so a killed run loses at
most the case it was in; ``finalize`` writes ``records.parquet`` from the journal and stamps the
manifest with the finish time and case counts.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from effbench.suite.errors import StoreError
from effbench.suite.manifest import build_manifest, utc_now
from effbench.suite.records import Record
from effbench.suite.store_catalog import resolve_run
from effbench.suite.store_files import (
    _BATCH,
    _BATCH_SIZE,
    _RUN_ID_TIME,
    JOURNAL,
    MANIFEST,
    PARQUET,
    RUNS_DIR,
    _repair_journal,
    _write_atomic,
    _write_json,
    read_journal,
    read_manifest,
)
from effbench.suite.store_rows import _record_to_row, case_counts, records_to_table


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
