"""Store the result of a profiling sweep as a run, so reports, claims and the dashboard read it.

``effbench profile tklqt`` measures the dense engine across batch sizes; each (batch size,
phase) becomes one case whose params carry ``batch_size`` and ``phase``, with the sweep's
figures as ``tklqt.*`` records, and one more case per sweep holds the decode phase's CPU- to
GPU-bound transition batch size (``tklqt.transition_batch``). The step latency
(``tklqt.step_ms``, timed without the profiler) is measured on any device; without CUDA
kernels the TKLQT figures of each case are one skipped record that says why, so an
empty-looking run still explains itself.

A preset's ``[profile.tklqt]`` table (effbench.suite.presets.TklqtSweepSettings) runs the
same sweep inside a normal run, once per compile mode, so a paper claim can read it
(``effbench repro``; the SKIP paper's transition and kernel-fusion claims,
suite/claims/tklqt.toml). Each mode's
records carry the sweep's workload label, ``tklqt-p<prompt>-n<new>`` plus the compile suffix
(effbench.kernels_ref.compiled.compile_label), which a claim's selector names.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from effbench.kernels_ref.compiled import check_mode, compile_label
from effbench.profilers.tklqt import latency_transition
from effbench.suite import metrics
from effbench.suite.presets import TklqtSweepSettings
from effbench.suite.records import Record
from effbench.suite.store import RunStore

_COLUMNS = ("tklqt_us_per_step", "t_lq_median_us", "gpu_idle_fraction", "kernels_per_step")
"""Columns of the sweep table stored as ``tklqt.<column>``, with the unit and direction the
TKLQT profiler declares for them (effbench.profilers.metrics); ``step_ms`` is stored too
(available without CUDA)."""
CASE_PREFIX = "profile:tklqt"


def sweep_workload(prompt_len: int, new_tokens: int, mode: str) -> str:
    """The workload label of a sweep's records (one per compile mode)."""
    return f"tklqt-p{prompt_len}-n{new_tokens}{compile_label(mode)}"


def _transition_case(
    base: dict[str, Any], rows: list[dict[str, Any]], transition: Any, unavailable: str
) -> list[Record]:
    """The sweep's transition batch sizes as one case: by TKLQT (``tklqt.transition_batch``)
    and by step latency (``tklqt.latency_transition_batch``); each skipped, with why, when
    there is none.
    """
    base = {**base, "params": {"phase": "decode"},
            "case_id": f"{CASE_PREFIX}-transition[phase=\"decode\"]@{base['workload']}/"
                       f"{base['device']}"}  # fmt: skip
    decode = pd.DataFrame([r for r in rows if r.get("phase") == "decode"])
    largest = int(decode["batch_size"].max()) if len(decode) else 0

    def record(name: str, value: float | None, why: str, stats: dict) -> Record:
        spec = metrics.get(name)
        common = dict(metric=name, unit=spec.unit, direction=spec.direction, stats=stats)
        if value is None:
            return Record(**base, **common, value=math.nan, status="skipped", error=why)
        return Record(**base, **{**common, "stats": {"n": 1, **stats}}, value=float(value),
                      samples=(float(value),))

    stats: dict[str, Any] = {}
    if unavailable or transition is None:
        why = unavailable or "fewer than two decode batch sizes in the sweep"
    else:
        stats = {"floor_us": transition.floor_us, "knee_batch_size": transition.knee_batch_size}
        why = (f"no transition: decode stays CPU-bound up to batch size {largest} (t_lq never "
               f"leaves twice its {transition.floor_us:.3g} us floor with the GPU idle under "
               "20% of the time)")
    value = None if unavailable or transition is None else transition.batch_size
    by_latency = latency_transition(decode) if len(decode) >= 2 else None
    flat = (f"decode step latency stays within 1.5x of the smallest batch size's up to "
            f"{largest}" if len(decode) >= 2 else "fewer than two decode batch sizes")
    return [record("tklqt.transition_batch", value, why, stats),
            record("tklqt.latency_transition_batch", by_latency, flat, {})]


def sweep_records(
    run_id: str, rows: list[dict[str, Any]], unavailable: str, workload: str, device: str,
    transition: Any = None,
) -> list[list[Record]]:  # fmt: skip
    """One list of records per (batch size, phase) case of a TKLQT sweep table, then the
    transition case (``transition``: effbench.profilers.tklqt.Transition or None).
    """
    now = time.time_ns()
    cases = []
    for row in rows:
        params = {"batch_size": int(row["batch_size"]), "phase": str(row.get("phase", "all"))}
        case_id = f"{CASE_PREFIX}[{json.dumps(params, sort_keys=True)}]@{workload}/{device}"
        base = dict(run_id=run_id, case_id=case_id, technique="dense", family="attention",
                    level="engine", params=params, workload=workload, device=device,
                    created_ns=now)
        recs = []
        columns = ("step_ms",) if unavailable else ("step_ms", *_COLUMNS)
        for col in (c for c in columns if c in row and not _missing(row[c])):
            spec, value = metrics.get(f"tklqt.{col}"), float(row[col])
            recs.append(Record(**base, metric=spec.name, value=value, unit=spec.unit,
                               direction=spec.direction, samples=(value,), stats={"n": 1}))
        if unavailable:
            recs.append(Record(**base, metric="tklqt.unavailable", value=math.nan, unit="",
                               direction="lower", status="skipped", error=unavailable))
        cases.append(recs)
    if rows:
        base = dict(run_id=run_id, technique="dense", family="attention", level="engine",
                    workload=workload, device=device, created_ns=now)
        cases.append(_transition_case(base, rows, transition, unavailable))
    return cases


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def store_sweep(
    results: str, rows: list[dict[str, Any]], unavailable: str, workload: str, device: str,
    config: dict[str, Any], transition: Any = None,
) -> RunStore:
    store = RunStore.create(results, "profile-tklqt", config)
    for recs in sweep_records(store.run_id, rows, unavailable, workload, device, transition):
        store.append(recs)
    store.finalize()
    return store


def preset_sweep_cases(
    settings: TklqtSweepSettings, model: Any, device: Any, run_id: str, device_label: str,
    artifact_dir: Path, log: Callable[[str], None] = print, skip: set[str] | None = None,
) -> list[list[Record]]:  # fmt: skip
    """Run a preset's ``[profile.tklqt]`` sweeps (one per compile mode) and return their cases.

    A mode the device cannot run (``reduce-overhead`` without CUDA) or a sweep that fails is
    recorded, per batch size, as a skipped or failed case with the reason; the other modes
    still run. Modes whose workload is in ``skip`` (already in a resumed run) are not rerun.
    """
    from effbench.profilers.tklqt_sweep import sweep

    out: list[list[Record]] = []
    for mode in settings.compile:
        workload = sweep_workload(settings.prompt_len, settings.new_tokens, mode)
        if workload in (skip or set()):
            continue
        stub = [{"batch_size": b, "phase": "decode"} for b in settings.batch_sizes]
        try:
            check_mode(mode, device)
        except ValueError as e:
            out += sweep_records(run_id, stub, str(e), workload, device_label)
            continue
        log(f"profile tklqt: batch sizes {list(settings.batch_sizes)}, compile {mode}")
        try:
            res = sweep(model, sorted(set(settings.batch_sizes)), artifact_dir / mode,
                        settings.prompt_len, settings.new_tokens, compile=mode)
        except Exception as e:  # a failed mode is recorded; the other modes still run
            why = f"{type(e).__name__}: {e}"
            out += [[_failed(r, why) for r in case]
                    for case in sweep_records(run_id, stub, why, workload, device_label)]
            continue
        out += sweep_records(run_id, res.table.to_dict("records"), res.unavailable, workload,
                             device_label, res.transition)
    return out


def _failed(rec: Record, why: str) -> Record:
    return replace(rec, status="error", error=why)
