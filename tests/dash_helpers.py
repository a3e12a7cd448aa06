"""Stores for the dashboard tests: one real mini run per session, plus a derived second run.

The real run takes ~15 s, so it is made once per test session and copied where a test needs to
change it. The second run is the first one's records with every latency-like metric 1.5x worse,
written through ``effbench.suite.store.RunStore`` so it is a genuine run folder.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from effbench.suite.store import RunStore, frame_to_records, list_runs, load_records

MINI = Path(__file__).parent / "data" / "mini.toml"
SLOWER = ("latency", "read_latency", "batch_latency", "ttft", "tpot", "e2e")
_MADE: dict[str, Path] = {}


def mini_store(base: Path) -> Path:
    """A results root with the mini preset's run and a 1.5x-slower copy (made once)."""
    if "mini" in _MADE:
        return _MADE["mini"]
    root = base / "mini_store"
    subprocess.run(
        [sys.executable, "-m", "effbench.suite.cli", "run", str(MINI), "--results", str(root),
         "--no-progress"],
        check=True, capture_output=True, timeout=300,
    )
    add_slower_run(root)
    _MADE["mini"] = root
    return root


def add_slower_run(root: Path, factor: float = 1.5) -> str:
    """Copy the newest run's records as a new run with the ``SLOWER`` metrics times ``factor``."""
    first = load_records(list_runs(root)["path"].iloc[0])
    store = RunStore.create(root, "mini-slower", {"run": {"name": "mini-slower"}})
    df = first.copy()
    df["run_id"] = store.run_id
    slow = df["metric"].isin(SLOWER)
    df.loc[slow, "value"] = df.loc[slow, "value"] * factor
    store.append(frame_to_records(df))
    store.finalize()
    return store.run_id


def copy_store(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def empty_store(base: Path) -> Path:
    root = base / "empty_store"
    root.mkdir(exist_ok=True)
    return root


def profile_store(base: Path) -> Path:
    """A one-run store whose cases carry profiler metrics (``<profiler>.<name>``)."""
    from effbench.suite.records import Record

    root = base / "profile_store"
    store = RunStore.create(root, "profiled", {"run": {"name": "profiled"}})
    recs = [
        Record(run_id=store.run_id, case_id=f"kernel:{t}@w/cpu", technique=t, family="attention",
               level="kernel", params={}, workload="w", device="cpu", metric=m, value=v,
               unit=u, direction="lower")
        for t, scale in (("dense", 1.0), ("streaming-llm", 0.5))
        for m, v, u in (("latency", 1e-3 * scale, "s"), ("tklqt.tklqt_us", 40.0 * scale, "us"),
                        ("energy.joules", 2.0 * scale, "J"))
    ]
    store.append(recs)
    store.finalize()
    return root
