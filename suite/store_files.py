"""The files of a run folder: their names, atomic writes, the manifest and the journal.

One job: putting bytes on disk so that a crash never leaves a half-written file behind, and
reading them back. The manifest is replaced atomically (write, fsync, rename, fsync the
folder). The journal is the source of truth while a run is going: one JSON line per record,
each carrying the id and size of its append batch (one case), so a case cut short mid-write is
recognised on reading and dropped; ``_repair_journal`` cuts a torn last line off before a
resumed run appends again. A damaged file is reported by path as a ``StoreWarning``.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from effbench.suite.errors import StoreError
from effbench.suite.records import Record
from effbench.suite.store_rows import _record_from_row

DEFAULT_ROOT = Path("results")
RUNS_DIR = "runs"
MANIFEST = "manifest.json"
JOURNAL = "journal.jsonl"
PARQUET = "records.parquet"
_BATCH, _BATCH_SIZE = "_batch", "_batch_size"
_RUN_ID_TIME = "%Y%m%d-%H%M%S"


class StoreWarning(UserWarning):
    """A stored file is damaged or unreadable; the message names it and what was done instead."""


def _warn(message: str) -> None:
    warnings.warn(message, StoreWarning, stacklevel=3)


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
