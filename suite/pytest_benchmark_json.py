"""Conversion between effbench records and pytest-benchmark's saved-run JSON.

Pure functions: ``to_pytest_benchmark`` writes a run so ``pytest-benchmark compare`` can read
it (one benchmark per case and time metric, raw samples in ``stats.data``, the case's other
metrics in ``extra_info``); ``from_pytest_benchmark`` turns pytest-benchmark JSON back into
records, so a pytest-benchmark run can be gated like any other; ``imported_host`` carries the
machine it describes into the imported run's manifest for the same-machine check.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from effbench.suite import gate as gate_mod
from effbench.suite.errors import StoreError
from effbench.suite.records import SCHEMA_VERSION, Record


def _pb_stats(samples: np.ndarray) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` block for per-call times in seconds."""
    x = np.sort(samples)
    n = x.size
    mean, median = float(x.mean()), float(np.median(x))
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    q1, q3 = (float(v) for v in np.percentile(x, [25, 75]))
    iqr = q3 - q1
    lo, hi = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    inside = x[(x >= lo) & (x <= hi)]
    iqr_out = int(n - inside.size)
    std_out = int(((x < mean - std) | (x > mean + std)).sum())
    return {
        "min": float(x[0]), "max": float(x[-1]), "mean": mean, "stddev": std, "rounds": int(n),
        "median": median, "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_out,
        "stddev_outliers": std_out, "outliers": f"{std_out};{iqr_out}",
        "ld15iqr": float(inside[0]) if inside.size else float(x[0]),
        "hd15iqr": float(inside[-1]) if inside.size else float(x[-1]),
        "ops": 1.0 / mean if mean > 0 else 0.0, "total": float(x.sum()), "iterations": 1,
        "data": [float(v) for v in samples],
    }


def to_pytest_benchmark(df: pd.DataFrame, manifest: dict[str, Any]) -> dict[str, Any]:
    """A run as pytest-benchmark saved-run JSON: one benchmark per (case, time metric in s).

    Only metrics in seconds with samples become benchmarks (pytest-benchmark stats are
    times); every other ok metric of the case goes into ``extra_info["metrics"]``, and
    ``extra_info["effbench"]`` keeps the identity needed to import the file back losslessly.
    """
    ok = df[df["status"] == "ok"]
    benches = []
    for case_id, case in ok.groupby("case_id", sort=True):
        metrics = {r["metric"]: {"value": None if pd.isna(r["value"]) else float(r["value"]),
                                 "unit": r["unit"], "direction": r["direction"]}
                   for r in case.to_dict("records")}
        for r in case.to_dict("records"):
            samples = gate_mod._samples(r["samples"])
            if r["unit"] != "s" or samples.size == 0:
                continue
            ident = {k: r.get(k) for k in ("case_id", "technique", "family", "level",
                                            "workload", "device", "metric")}
            ident["params"] = r.get("params")
            benches.append({
                "group": r["metric"], "name": f"{r['metric']}[{case_id}]",
                "fullname": f"effbench::{case_id}::{r['metric']}",
                "params": None, "param": None,
                "extra_info": {"effbench": ident, "metrics": metrics},
                "options": {"disable_gc": True, "timer": "effbench.timing",
                            "min_rounds": 1, "max_time": 0.0, "min_time": 0.0, "warmup": True},
                "stats": _pb_stats(samples),
            })
    host, git = manifest.get("host") or {}, manifest.get("git") or {}
    python = manifest.get("python") or {}
    return {
        "machine_info": {
            "node": host.get("hostname"), "processor": host.get("cpu_model"),
            "machine": host.get("machine"), "python_compiler": "",
            "python_implementation": python.get("implementation"),
            "python_implementation_version": python.get("version"),
            "python_version": python.get("version"), "python_build": [],
            "release": "", "system": host.get("platform"),
            "cpu": {"brand_raw": host.get("cpu_model"), "count": host.get("cpu_count")},
            "effbench_manifest": {k: manifest.get(k) for k in ("run_id", "device", "cuda")},
        },
        "commit_info": {"id": git.get("sha") or "unversioned", "time": None,
                        "author_time": None, "dirty": bool(git.get("dirty")),
                        "project": "effbench", "branch": git.get("branch") or "(unknown)"},
        "benchmarks": benches,
        "datetime": manifest.get("finished") or manifest.get("started"),
        "version": _pytest_benchmark_version(),
    }


def _pytest_benchmark_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pytest-benchmark")
    except metadata.PackageNotFoundError:
        return "5.2.3"


def imported_host(manifest: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with the host (and CUDA devices) of the machine that ran the benchmarks,
    as far as pytest-benchmark's ``machine_info`` tells, so the same-machine check holds.
    """
    info = data.get("machine_info") if isinstance(data.get("machine_info"), dict) else {}
    cpu = info.get("cpu") if isinstance(info.get("cpu"), dict) else {}
    out = {**manifest, "host": dict(manifest.get("host") or {})}
    if cpu.get("brand_raw"):
        out["host"].update(cpu_model=cpu["brand_raw"], cpu_count=cpu.get("count"),
                           hostname=info.get("node"))
    ours = info.get("effbench_manifest") if isinstance(info.get("effbench_manifest"), dict) else {}
    if isinstance(ours.get("cuda"), dict):
        out["cuda"] = ours["cuda"]
    return out


def from_pytest_benchmark(data: Any, run_id: str, source: str) -> list[Record]:
    """Records from pytest-benchmark JSON: one ``latency`` per benchmark (+ effbench metrics).

    Samples are ``stats.data`` when the file has them (``--benchmark-save-data`` or
    ``--benchmark-json``), else empty with the summary in ``stats``. StoreError when the file
    is not pytest-benchmark JSON.
    """
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise StoreError(f"{source} is not pytest-benchmark JSON (no 'benchmarks' list)")
    records: list[Record] = []
    seen_extra: set[tuple[str, str]] = set()
    for i, b in enumerate(data["benchmarks"]):
        if not isinstance(b, dict) or not isinstance(b.get("stats"), dict) or "name" not in b:
            raise StoreError(f"{source}: benchmarks[{i}] has no name or stats")
        st, extra = b["stats"], b.get("extra_info") or {}
        ident = extra.get("effbench") if isinstance(extra.get("effbench"), dict) else {}
        case_id = ident.get("case_id") or f"pytest:{b.get('fullname') or b['name']}"
        base = {
            "run_id": run_id, "case_id": case_id,
            "technique": ident.get("technique") or str(b["name"]).split("[")[0],
            "family": ident.get("family") or "pytest-benchmark",
            "level": ident.get("level") or "kernel",
            "params": _params(ident.get("params"), b.get("params")),
            "workload": ident.get("workload") or str(b.get("group") or ""),
            "device": ident.get("device") or "cpu", "created_ns": 0,
            "schema_version": SCHEMA_VERSION,
        }
        data_ = [float(x) for x in st.get("data") or []]
        summary = {"median": st.get("median"), "mean": st.get("mean"), "min": st.get("min"),
                   "max": st.get("max"), "std": st.get("stddev"), "q1": st.get("q1"),
                   "q3": st.get("q3"), "iqr": st.get("iqr"), "n": st.get("rounds")}
        try:
            value = float(st["median"])
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(f"{source}: benchmarks[{i}] stats have no numeric median") from e
        stats = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float))}
        records.append(Record(**base, metric=ident.get("metric") or "latency", value=value,
                              unit="s", direction="lower", samples=tuple(data_), stats=stats))
        for name, m in (extra.get("metrics") or {}).items():
            if (case_id, name) in seen_extra or not isinstance(m, dict) or m.get("unit") == "s":
                continue
            if name == ident.get("metric") or m.get("value") is None:
                continue
            seen_extra.add((case_id, name))
            v = float(m["value"])
            records.append(Record(**base, metric=name, value=v, unit=str(m.get("unit", "")),
                                  direction=str(m.get("direction", "lower")), samples=(v,),
                                  stats={"n": 1.0}))
    if not records:
        raise StoreError(f"{source} holds no benchmarks")
    return records


def _params(effbench_params: Any, pytest_params: Any) -> dict[str, Any]:
    if isinstance(effbench_params, str):
        try:
            return json.loads(effbench_params)
        except ValueError:
            return {}
    if isinstance(effbench_params, dict):
        return effbench_params
    return pytest_params if isinstance(pytest_params, dict) else {}
