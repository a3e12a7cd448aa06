"""Store the result of a profiling sweep as a run, so reports and the dashboard can read it.

``effbench profile tklqt`` measures the dense engine across batch sizes; each (batch size,
phase) becomes one case whose params carry ``batch_size`` and ``phase``, with the sweep's
figures as ``tklqt.*`` records. Without CUDA kernels each batch size gets one skipped record
that says why, so an empty-looking run still explains itself.
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

from effbench.suite import metrics
from effbench.suite.records import Record
from effbench.suite.store import RunStore

_COLUMNS = ("tklqt_us_per_step", "t_lq_median_us", "gpu_idle_fraction", "kernels_per_step")
"""Columns of the sweep table stored as ``tklqt.<column>``, with the unit and direction the
TKLQT profiler declares for them (effbench.profilers.metrics)."""


def sweep_records(
    run_id: str, rows: list[dict[str, Any]], unavailable: str, workload: str, device: str
) -> list[list[Record]]:
    """One list of records per (batch size, phase) case of a TKLQT sweep table."""
    now = time.time_ns()
    cases = []
    for row in rows:
        params = {"batch_size": int(row["batch_size"]), "phase": str(row.get("phase", "all"))}
        case_id = f"profile:tklqt[{json.dumps(params, sort_keys=True)}]@{workload}/{device}"
        base = dict(run_id=run_id, case_id=case_id, technique="dense", family="attention",
                    level="engine", params=params, workload=workload, device=device,
                    created_ns=now)
        if unavailable:
            cases.append([Record(**base, metric="tklqt.unavailable", value=math.nan, unit="",
                                 direction="lower", status="skipped", error=unavailable)])
            continue
        recs = []
        for col in (c for c in _COLUMNS if c in row):
            spec, value = metrics.get(f"tklqt.{col}"), float(row[col])
            recs.append(Record(**base, metric=spec.name, value=value, unit=spec.unit,
                               direction=spec.direction, samples=(value,), stats={"n": 1}))
        cases.append(recs)
    return cases


def store_sweep(
    results: str, rows: list[dict[str, Any]], unavailable: str, workload: str, device: str,
    config: dict[str, Any],
) -> RunStore:
    store = RunStore.create(results, "profile-tklqt", config)
    for recs in sweep_records(store.run_id, rows, unavailable, workload, device):
        store.append(recs)
    store.finalize()
    return store
