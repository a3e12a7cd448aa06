"""Pure analyses behind the Runs, Techniques and Linked-levels pages (DataFrames in and out)."""

from __future__ import annotations

import json

import pandas as pd

KERNEL_LATENCIES = ("latency", "read_latency", "append_latency_per_token")


def best_cases(wide: pd.DataFrame, info: pd.DataFrame, technique: str) -> pd.DataFrame:
    """For one technique, its best case per (level, metric), direction-aware, with its params."""
    part = wide[wide["technique"] == technique]
    rows = []
    for metric in info.index:
        if metric not in part or part[metric].isna().all():
            continue
        higher = info.at[metric, "direction"] == "higher"
        for level, lv in part.dropna(subset=[metric]).groupby("level"):
            best = lv.loc[lv[metric].idxmax() if higher else lv[metric].idxmin()]
            rows.append({"level": level, "metric": metric, "best": best[metric],
                         "unit": info.at[metric, "unit"], "direction": info.at[metric, "direction"],
                         "params": best["params_label"], "workload": best["workload"],
                         "run_id": best["run_id"]})
    return pd.DataFrame(rows, columns=["level", "metric", "best", "unit", "direction", "params",
                                       "workload", "run_id"])


UNPAIRED_SPEEDUP = "speedup (unpaired)"
"""How the linked-levels table labels a kernel speedup: a ratio of two separately measured cases,
never to be read as the engine level's paired ``speedup``."""


def kernel_speedup(wide: pd.DataFrame, baseline: str, latency: str = "latency") -> pd.DataFrame:
    """Kernel-level speedup of every case vs ``baseline`` on the same run and workload.

    speedup = baseline latency / case latency (median of the baseline's cases when several).
    **Unpaired**: the two latencies come from different cases, measured one after the other,
    so machine drift between them lands in the ratio and there is no CI of the ratio itself;
    only the engine level's ``speedup`` comes from rounds measured side by side. Callers show
    it as :data:`UNPAIRED_SPEEDUP`.
    """
    k = wide[(wide["level"] == "kernel")]
    if latency not in k or k.empty:
        return pd.DataFrame(columns=["run_id", "workload", "technique", "params_label",
                                     "speedup"])
    base = (k[k["technique"] == baseline].groupby(["run_id", "workload"])[latency].median()
            .rename("baseline_latency"))
    out = k.join(base, on=["run_id", "workload"])
    out["speedup"] = out["baseline_latency"] / out[latency]
    return out.dropna(subset=["speedup"])[["run_id", "workload", "technique", "params_label",
                                           "speedup"]]


def linked_levels(
    wide: pd.DataFrame, technique: str, baseline: str, metrics: dict[str, list[str]]
) -> pd.DataFrame:
    """One technique across levels: long table (level, workload, params, metric, value).

    Kernel rows get ``kernel_speedup`` vs ``baseline`` on the first of ``KERNEL_LATENCIES`` the
    technique has, labelled :data:`UNPAIRED_SPEEDUP` with ``paired`` False (the baseline
    kernel case lends its latency: not a side-by-side measurement); other levels report the
    listed ``metrics[level]`` as measured (engine records carry their own ``speedup``, paired
    per round: ``paired`` True).
    """
    rows = []
    mine = wide[(wide["technique"] == technique) & (wide["level"] == "kernel")]
    latency = next((m for m in KERNEL_LATENCIES if m in mine and mine[m].notna().any()), "latency")
    ks = kernel_speedup(wide, baseline, latency)
    for _, r in ks[ks["technique"] == technique].iterrows():
        rows.append({"level": "kernel", "workload": r["workload"], "params": r["params_label"],
                     "metric": UNPAIRED_SPEEDUP, "value": r["speedup"], "run_id": r["run_id"],
                     "paired": False})
    part = wide[(wide["technique"] == technique) & (wide["level"] != "kernel")]
    for _, r in part.iterrows():
        for metric in metrics.get(r["level"], []):
            if metric in r and pd.notna(r[metric]):
                rows.append({"level": r["level"], "workload": r["workload"],
                             "params": r["params_label"], "metric": metric,
                             "value": r[metric], "run_id": r["run_id"],
                             "paired": metric == "speedup"})
    return pd.DataFrame(rows, columns=["level", "workload", "params", "metric", "value",
                                       "run_id", "paired"])


def profile_metrics(names: list[str]) -> list[str]:
    """The metric names that come from profilers (TKLQT, energy, bandwidth, host, memory...).

    A profiler metric is one the profilers declare (effbench.profilers.metrics, read through
    effbench.suite.metrics), or an undeclared ``<profiler>.<name>`` of a registered profiler.
    The ``interference.*`` readings are left out: every case has them (the runner observes
    every timed pass), so they say nothing about whether a run was profiled.
    """
    from effbench.profilers.registry import PROFILERS
    from effbench.suite import metrics

    def from_profiler(name: str) -> bool:
        spec = metrics.spec(name)
        if spec is not None:
            return spec.source == "profiler"
        return name.split(".", 1)[0] in PROFILERS and "." in name

    return [m for m in names if from_profiler(m) and not m.startswith("interference.")]


def tklqt_sweep(wide: pd.DataFrame) -> pd.DataFrame:
    """Rows of a ``profile tklqt`` run: ``batch_size`` and ``phase`` lifted from the params;
    ``series`` is the phase, with the sweep's workload when several sweeps (compile modes)
    are shown together.
    """
    col = "tklqt.tklqt_us_per_step"
    if col not in wide:
        return pd.DataFrame()
    rows = wide.dropna(subset=[col]).copy()
    params = rows["params"].map(lambda p: json.loads(p) if isinstance(p, str) else dict(p))
    rows["batch_size"] = params.map(lambda p: p.get("batch_size"))
    rows["phase"] = params.map(lambda p: p.get("phase", "all"))
    rows = rows.dropna(subset=["batch_size"])
    several = rows["workload"].nunique() > 1
    rows["series"] = (rows["phase"] + " (" + rows["workload"] + ")") if several else rows["phase"]
    return rows


def transitions(sweep: pd.DataFrame) -> dict[str, float]:
    """Per series (phase, and sweep when several), the CPU->GPU-bound batch size by the
    documented method (docs/METRICS.md).
    """
    from effbench.profilers.tklqt import detect_transition

    need = {"tklqt.t_lq_median_us", "tklqt.gpu_idle_fraction"}
    if not need <= set(sweep.columns):
        return {}
    out = {}
    for phase, part in sweep.groupby("series" if "series" in sweep else "phase"):
        table = part.rename(columns={"tklqt.t_lq_median_us": "t_lq_median_us",
                                     "tklqt.gpu_idle_fraction": "gpu_idle_fraction"})
        table = table.sort_values("batch_size")
        if len(table) >= 2:
            t = detect_transition(table[["batch_size", "t_lq_median_us", "gpu_idle_fraction"]])
            if t.batch_size is not None:
                out[str(phase)] = float(t.batch_size)
    return out
