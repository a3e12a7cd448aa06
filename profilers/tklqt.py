"""TKLQT analysis: per-kernel launch/queue table, aggregates, CPU->GPU-bound transition.

Pure functions over the tables of ``effbench.profilers.kineto``. Definitions (per GPU activity
linked to
its CPU launch call by correlation id):

- ``t_lq`` = kernel start - launch call start (SKIP's t_l; TKLQT = sum of t_lq);
- ``launch_delay`` = kernel start - launch call end (HTA's, here *not* clipped at 0: a negative
  value means the kernel started before its launch call returned; HTA clips to 0).

Kernels run from a CUDA graph (graph launch, one correlation for many kernels, or a
``graph id``) share one launch call, so their t_lq is not a launch cost: they are flagged
``in_graph`` and summed apart, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from effbench.profilers.kineto import GRAPH_LAUNCH_NAME, KinetoTrace

KIND = {"kernel": "kernel", "gpu_memcpy": "memcpy", "gpu_memset": "memset"}
TABLE_COLUMNS = (
    "correlation", "name", "kind", "device", "stream", "launch_name",
    "launch_start_ns", "launch_end_ns", "kernel_start_ns", "kernel_end_ns",
    "kernel_dur_us", "launch_dur_us", "t_lq_us", "launch_delay_us", "step", "in_graph",
)


def kernel_table(trace: KinetoTrace) -> pd.DataFrame:
    """One row per GPU activity linked to a launch call (columns: ``TABLE_COLUMNS``).

    Absolute times stay int64 ns; durations and delays are float64 µs computed from ns
    differences (exact). ``step`` is the ``ProfilerStep#N`` whose CPU interval contains the
    launch call's start, -1 outside every step. GPU activities with no launch call in the trace
    are left out (count them with ``unlinked_gpu_ops``).
    """
    launches = trace.launches.drop_duplicates("correlation", keep="first")
    gpu = trace.gpu
    m = gpu.merge(
        launches[["correlation", "name", "ts_ns", "dur_ns"]],
        on="correlation", how="inner", suffixes=("", "_launch"),
    )
    per_corr = gpu["correlation"].value_counts()
    k_start = m["ts_ns"].to_numpy(np.int64)
    k_end = k_start + m["dur_ns"].to_numpy(np.int64)
    l_start = m["ts_ns_launch"].to_numpy(np.int64)
    l_end = l_start + m["dur_ns_launch"].to_numpy(np.int64)
    in_graph = (
        m["name_launch"].str.match(GRAPH_LAUNCH_NAME).to_numpy(bool)
        | (m["graph_id"].to_numpy() >= 0)
        | (m["correlation"].map(per_corr).to_numpy() > 1)
    )
    out = pd.DataFrame({
        "correlation": m["correlation"].to_numpy(np.int64),
        "name": m["name"],
        "kind": m["cat"].map(KIND),
        "device": m["device"].to_numpy(np.int64),
        "stream": m["stream"].to_numpy(np.int64),
        "launch_name": m["name_launch"],
        "launch_start_ns": l_start,
        "launch_end_ns": l_end,
        "kernel_start_ns": k_start,
        "kernel_end_ns": k_end,
        "kernel_dur_us": (k_end - k_start) / 1e3,
        "launch_dur_us": (l_end - l_start) / 1e3,
        "t_lq_us": (k_start - l_start) / 1e3,
        "launch_delay_us": (k_start - l_end) / 1e3,
        "step": assign_steps(l_start, trace.steps),
        "in_graph": in_graph,
    })
    return out.sort_values("kernel_start_ns", kind="stable").reset_index(drop=True)


def unlinked_gpu_ops(trace: KinetoTrace) -> int:
    """GPU activities whose correlation id has no launch call in the trace."""
    return int((~trace.gpu["correlation"].isin(trace.launches["correlation"])).sum())


def assign_steps(ts_ns: np.ndarray, steps: pd.DataFrame) -> np.ndarray:
    """Step number of the ``[ts, end)`` step interval containing each time, else -1."""
    out = np.full(len(ts_ns), -1, dtype=np.int64)
    if steps.empty or len(ts_ns) == 0:
        return out
    starts = steps["ts_ns"].to_numpy(np.int64)
    ends = steps["end_ns"].to_numpy(np.int64)
    idx = np.searchsorted(starts, ts_ns, side="right") - 1
    valid = idx >= 0
    inside = valid & (ts_ns < ends[np.clip(idx, 0, None)])
    out[inside] = steps["step"].to_numpy(np.int64)[idx[inside]]
    return out


def busy_and_span_ns(table: pd.DataFrame) -> tuple[int, int]:
    """(union of GPU activity intervals, first start to last end), each summed over devices.

    Overlapping kernels (several streams) count once in busy time; idle = span - busy.
    """
    if table.empty:
        return 0, 0
    df = table[["device", "kernel_start_ns", "kernel_end_ns"]].sort_values(
        ["device", "kernel_start_ns"], kind="stable"
    )
    reach = df.groupby("device")["kernel_end_ns"].cummax()
    prev_reach = reach.groupby(df["device"]).shift(1)
    new_seg = prev_reach.isna() | (df["kernel_start_ns"] > prev_reach)
    seg = new_seg.cumsum()
    seg_start = df["kernel_start_ns"].groupby(seg).min()
    seg_end = reach.groupby(seg).max()
    busy = int((seg_end - seg_start).sum())
    span = df.groupby("device").agg(s=("kernel_start_ns", "min"), e=("kernel_end_ns", "max"))
    return busy, int((span["e"] - span["s"]).sum())


def _stats(table: pd.DataFrame) -> dict[str, float]:
    direct = table[~table["in_graph"]]
    graph = table[table["in_graph"]]
    busy_ns, span_ns = busy_and_span_ns(table)
    t_lq = direct["t_lq_us"]
    return {
        "n_kernels": float(len(direct)),
        "tklqt_us": float(t_lq.sum()),
        "t_lq_median_us": float(t_lq.median()) if len(t_lq) else float("nan"),
        "t_lq_p90_us": float(t_lq.quantile(0.9)) if len(t_lq) else float("nan"),
        "launch_delay_sum_us": float(direct["launch_delay_us"].sum()),
        "launch_delay_median_us": (
            float(direct["launch_delay_us"].median()) if len(direct) else float("nan")
        ),
        "launch_call_sum_us": float(direct["launch_dur_us"].sum()),
        "n_short_kernels": float((direct["kernel_dur_us"] < direct["launch_dur_us"]).sum()),
        "kernel_time_us": float(table["kernel_dur_us"].sum()),
        "gpu_busy_us": busy_ns / 1e3,
        "gpu_span_us": span_ns / 1e3,
        "gpu_idle_us": (span_ns - busy_ns) / 1e3,
        "gpu_idle_fraction": (span_ns - busy_ns) / span_ns if span_ns else float("nan"),
        "n_graph_launches": float(graph["correlation"].nunique()),
        "n_graph_kernels": float(len(graph)),
        "graph_kernel_time_us": float(graph["kernel_dur_us"].sum()),
        "graph_t_lq_sum_us": float(graph["t_lq_us"].sum()),
    }


def summarize(table: pd.DataFrame, include_memory: bool = False) -> pd.DataFrame:
    """Aggregates overall (``scope`` "all", ``step`` -1) and per profiler step.

    TKLQT, t_lq median/p90, launch-delay and launch-call sums, short kernels (GPU duration <
    launch call duration) count direct launches only; graph kernels get their own columns.
    Kernel time and GPU busy/idle cover every kernel; the span is first start to last end of
    the scope's kernels per device. Memcpy/memset rows are left out unless ``include_memory``.
    """
    t = table if include_memory else table[table["kind"] == "kernel"]
    rows = [{"scope": "all", "step": -1, **_stats(t)}]
    for step, part in t[t["step"] >= 0].groupby("step", sort=True):
        rows.append({"scope": f"step {step}", "step": int(step), **_stats(part)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------
# CPU-bound -> GPU-bound transition


@dataclass(frozen=True)
class Transition:
    """Where launch queuing says the workload turns GPU-bound.

    ``batch_size``: first batch size classified GPU-bound by the threshold rule (None if none);
    ``floor_us``: t_lq at the smallest batch; ``knee_batch_size``: breakpoint of the hinge fit
    of log t_lq vs log batch (None with fewer than 4 batch sizes).
    """

    batch_size: float | None
    floor_us: float
    knee_batch_size: float | None


def classify_regimes(
    sweep: pd.DataFrame,
    k: float = 2.0,
    idle_threshold: float = 0.2,
    t_lq_col: str = "t_lq_median_us",
) -> pd.DataFrame:
    """Add ``ratio_to_floor`` and ``gpu_bound`` to a batch sweep (sorted by ``batch_size``).

    GPU-bound at a batch size: its ``t_lq_col`` exceeds ``k`` x the floor (the value at the
    smallest batch) AND ``gpu_idle_fraction`` is below ``idle_threshold``.
    """
    missing = {"batch_size", t_lq_col, "gpu_idle_fraction"} - set(sweep.columns)
    if missing:
        raise ValueError(f"sweep lacks columns: {sorted(missing)}")
    s = sweep.sort_values("batch_size", kind="stable").reset_index(drop=True)
    floor = float(s[t_lq_col].iloc[0])
    ratio = s[t_lq_col] / floor if floor > 0 else pd.Series(np.inf, index=s.index)
    return s.assign(
        ratio_to_floor=ratio,
        gpu_bound=(ratio > k) & (s["gpu_idle_fraction"] < idle_threshold),
    )


def latency_transition(sweep: pd.DataFrame, k: float = 1.5, col: str = "step_ms") -> float | None:
    """The first batch size whose step latency exceeds ``k`` x that at the smallest batch.

    The latency view of the same transition, to check TKLQT's against: while CPU-bound, a step
    costs its launches whatever the batch, so the latency stays flat; once the GPU is the
    bottleneck it grows with the batch. None if it never leaves the flat regime (or the sweep
    has no latency column).
    """
    if col not in sweep or sweep[col].isna().all():
        return None
    s = sweep.dropna(subset=[col]).sort_values("batch_size", kind="stable")
    floor = float(s[col].iloc[0])
    above = s.loc[s[col] > k * floor, "batch_size"]
    return float(above.iloc[0]) if len(above) else None


def knee_batch_size(batch: np.ndarray, t_lq: np.ndarray) -> float | None:
    """Breakpoint of a continuous two-segment linear fit of log t_lq against log batch size.

    Fits ``y = a + b x + c max(0, x - x0)`` by least squares for every interior x0 among the
    data points and returns the batch size at the x0 with the smallest residual.
    """
    b = np.asarray(batch, dtype=float)
    v = np.asarray(t_lq, dtype=float)
    ok = (b > 0) & (v > 0)
    order = np.argsort(b[ok], kind="stable")
    b = b[ok][order]
    x, y = np.log(b), np.log(v[ok][order])
    if len(x) < 4:
        return None
    best, best_sse = None, np.inf
    for i in range(1, len(x) - 1):
        a = np.column_stack([np.ones_like(x), x, np.clip(x - x[i], 0, None)])
        coef, *_ = np.linalg.lstsq(a, y, rcond=None)
        sse = float(np.sum((a @ coef - y) ** 2))
        if sse < best_sse - 1e-12:
            best, best_sse = i, sse
    return float(b[best]) if best is not None else None


def detect_transition(
    sweep: pd.DataFrame,
    k: float = 2.0,
    idle_threshold: float = 0.2,
    t_lq_col: str = "t_lq_median_us",
) -> Transition:
    """Find the CPU-bound -> GPU-bound transition in a batch-size sweep.

    Input: one row per batch size with ``batch_size``, a per-kernel launch-queue statistic
    (``t_lq_col``, default the median t_lq in µs; TKLQT / n_kernels also works) and
    ``gpu_idle_fraction`` (from ``summarize``).

    While CPU-bound the GPU waits for work: each kernel starts a fixed launch latency after its
    launch call (t_lq stays at a floor L) and the GPU idles between kernels. Once kernels outlast
    the launch interval, launches queue behind running kernels: t_lq grows with every queued
    kernel and the GPU idle fraction collapses. Rule: floor = t_lq at the smallest batch size;
    a batch size is GPU-bound when t_lq > ``k`` x floor (default 2) and the GPU idle fraction
    < ``idle_threshold`` (default 0.2); the transition is the first GPU-bound batch size (None
    if the sweep never leaves the CPU-bound regime). As a cross-check the knee of a two-segment
    fit of log t_lq vs log batch size is also reported.
    """
    s = classify_regimes(sweep, k, idle_threshold, t_lq_col)
    bound = s.loc[s["gpu_bound"], "batch_size"]
    return Transition(
        batch_size=float(bound.iloc[0]) if len(bound) else None,
        floor_us=float(s[t_lq_col].iloc[0]),
        knee_batch_size=knee_batch_size(s["batch_size"].to_numpy(), s[t_lq_col].to_numpy()),
    )
