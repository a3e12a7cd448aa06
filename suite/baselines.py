"""Named baselines: frozen copies of a run that gates compare against.

A baseline is a folder ``<root>/baselines/<name>/`` holding the run's ``records.parquet`` and
``manifest.json`` (so it reads like a run folder) plus ``baseline.json``: where it came from,
when, and a history of notes, one per deliberate update. Baselines are small and meant to be
committed; run folders are not.

Timings only mean something on the machine that took them, so ``same_machine`` compares the
host fingerprint of two manifests (CPU model, core count, GPU names); the gate refuses timing
verdicts across machines unless forced, while deterministic metrics gate anywhere.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from effbench.suite.errors import ConfigError, StoreError
from effbench.suite.manifest import utc_now
from effbench.suite.store import (
    MANIFEST,
    PARQUET,
    frame_to_records,
    load_records,
    read_manifest,
    records_to_table,
)

BASELINES_DIR = "baselines"
META = "baseline.json"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Baseline:
    """A loaded baseline: its records (``load_records`` shape), manifest and metadata."""

    name: str
    path: Path
    records: pd.DataFrame
    manifest: dict[str, Any]
    meta: dict[str, Any]


def baseline_dir(name: str, root: Path | str = "results") -> Path:
    """Folder of baseline ``name``; ConfigError for a name that is not a safe folder name."""
    if not _NAME.match(name or ""):
        raise ConfigError(
            f"invalid baseline name {name!r}: use letters, digits, '.', '_' or '-'", "NAME"
        )
    return Path(root) / BASELINES_DIR / name


def exists(name: str, root: Path | str = "results") -> bool:
    return (baseline_dir(name, root) / META).is_file()


def _write(name: str, run_dir: Path, root: Path | str, note: str, history: list) -> Path:
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    df = load_records(run_dir)
    if df.empty:
        raise StoreError(f"run {run_dir.name} has no records to save as a baseline")
    dest = baseline_dir(name, root)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        src = run_dir / PARQUET
        if src.exists():
            shutil.copyfile(src, tmp / PARQUET)
        else:  # an unfinished run: write its journal's complete cases as Parquet
            pq.write_table(records_to_table(frame_to_records(df)), tmp / PARQUET,
                           compression="zstd")
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        entry = {"saved": utc_now(), "run_id": run_dir.name, "note": note,
                 "git_sha": (manifest.get("git") or {}).get("sha")}
        meta = {"name": name, "run_id": run_dir.name, "saved": entry["saved"],
                "cases": int(df["case_id"].nunique()), "history": [*history, entry]}
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    except OSError as e:
        raise StoreError(f"cannot write baseline {dest}: {e.strerror or e}") from e
    return dest


def save(name: str, run_dir: Path | str, root: Path | str = "results", note: str = "") -> Path:
    """Copy a run's records and manifest into ``<root>/baselines/<name>/``; return the folder.

    Refuses (StoreError) to replace an existing baseline: that is ``update``, on purpose.
    """
    if exists(name, root):
        raise StoreError(
            f"baseline {name!r} already exists; replace it on purpose with "
            f"'effbench baseline update {name} RUN --note WHY'"
        )
    return _write(name, Path(run_dir), root, note or "created", [])


def update(name: str, run_dir: Path | str, root: Path | str = "results", note: str = "") -> Path:
    """Replace baseline ``name`` with a run, appending ``note`` (why) to its history."""
    history: list = []
    if exists(name, root):
        history = list(_read_meta(baseline_dir(name, root)).get("history", []))
    return _write(name, Path(run_dir), root, note or "updated", history)


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise StoreError(f"{path / META} is missing: not a baseline folder") from e
    except (OSError, ValueError) as e:
        raise StoreError(f"{path / META} is unreadable: {e}") from e
    if not isinstance(meta, dict):
        raise StoreError(f"{path / META} is unreadable: expected a JSON object")
    return meta


def load(name: str, root: Path | str = "results") -> Baseline:
    """Read baseline ``name``; StoreError (one line, naming the file) when absent or damaged."""
    path = baseline_dir(name, root)
    if not path.is_dir():
        have = ", ".join(list_baselines(root)["name"]) or "none yet"
        raise StoreError(f"no baseline {name!r} under {path.parent} (available: {have})")
    meta = _read_meta(path)
    manifest = read_manifest(path)
    try:
        table = pq.read_table(path / PARQUET)
    except (OSError, pa.ArrowException) as e:
        raise StoreError(f"{path / PARQUET} is unreadable: {e}") from e
    records = table.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
    return Baseline(name, path, records, manifest, meta)


def list_baselines(root: Path | str = "results") -> pd.DataFrame:
    """One row per baseline: name, run_id, saved, cases, device, notes (latest note)."""
    folder = Path(root) / BASELINES_DIR
    rows = []
    for d in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not (d / META).is_file():
            continue
        try:
            meta = _read_meta(d)
            device = read_manifest(d).get("device")
        except StoreError as e:
            rows.append({"name": d.name, "run_id": None, "saved": None, "cases": None,
                         "device": None, "note": f"unreadable: {e}"})
            continue
        history = meta.get("history") or [{}]
        rows.append({"name": d.name, "run_id": meta.get("run_id"), "saved": meta.get("saved"),
                     "cases": meta.get("cases"), "device": device,
                     "note": history[-1].get("note", "")})
    return pd.DataFrame(rows, columns=["name", "run_id", "saved", "cases", "device", "note"])


def fingerprint(manifest: dict[str, Any]) -> dict[str, Any]:
    """What identifies the hardware a run's timings came from."""
    host = manifest.get("host") or {}
    cuda = manifest.get("cuda") or {}
    return {
        "cpu model": host.get("cpu_model"),
        "cpu cores": host.get("cpu_count"),
        "GPUs": sorted(cuda.get("devices") or []),
    }


def same_machine(manifest_a: dict[str, Any], manifest_b: dict[str, Any]) -> tuple[bool, str]:
    """Whether two runs' timings are comparable: (True, "") or (False, what differs)."""
    a, b = fingerprint(manifest_a), fingerprint(manifest_b)
    for key in a:
        if a[key] != b[key]:
            return False, f"{key} differs: {a[key]!r} vs {b[key]!r}"
    return True, ""

