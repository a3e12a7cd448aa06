"""Our per-kernel launch delays against Holistic Trace Analysis on real GPU traces.

Ground truth: HTA 0.5.0 ``TraceAnalysis.get_cuda_kernel_launch_stats`` (launch delay = GPU start
- CPU launch end, clipped at 0, for cudaLaunchKernel/ExC/MemcpyAsync/MemsetAsync), with
``include_last_profiler_step=True`` and HTA's ns rounding disabled (HTA_DISABLE_NS_ROUNDING=1;
otherwise it ceils/floors sub-µs times). Kernels are matched by correlation id.

Tolerance: 1 ns, plus one float64 ULP of the trace's largest timestamp. HTA holds timestamps as
float64 µs; for integer-µs traces that is exact, but a 19-digit epoch-µs timestamp with ns
fraction (v100_ns_resolution) is only kept to 0.25 µs there, while we keep exact ns. Launches
HTA does not analyse (cuLaunchKernel from Triton, cudaGraphLaunch) are checked against the raw
events instead, with exact decimal arithmetic.
"""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from effbench.profilers.kineto import load_trace
from effbench.profilers.tklqt import kernel_table

TRACE_DIR = Path(__file__).parents[2].parent / "shared" / "traces" / "hta"
FILES = sorted(TRACE_DIR.glob("*.json*")) if TRACE_DIR.is_dir() else []
HTA_LAUNCHES = {"cudaLaunchKernel", "cudaLaunchKernelExC", "cudaMemcpyAsync", "cudaMemsetAsync"}
NS_US = 1e-3


@lru_cache(maxsize=2)
def _raw_delays(path: Path) -> pd.DataFrame:
    """Exact (Decimal) launch delay and t_lq per correlation, straight from the raw events."""
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        events = json.load(f, parse_float=Decimal)["traceEvents"]
    launch = {}
    for e in events:
        if e.get("cat") in ("cuda_runtime", "cuda_driver") and "correlation" in e.get("args", {}):
            launch.setdefault(e["args"]["correlation"], e)
    rows = []
    for e in events:
        if e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset"):
            c = e["args"]["correlation"]
            if c in launch and launch[c]["name"].startswith(("cu", "cuda")):
                ls, ld = Decimal(launch[c]["ts"]), Decimal(launch[c]["dur"])
                ks = Decimal(e["ts"])
                rows.append((c, Decimal(e["ts"]), float(ks - ls - ld), float(ks - ls)))
    return pd.DataFrame(rows, columns=["correlation", "kts", "raw_delay", "raw_t_lq"])


@lru_cache(maxsize=2)
def _ours(path: Path) -> pd.DataFrame:
    return kernel_table(load_trace(path))


pytestmark = pytest.mark.skipif(not FILES, reason=f"no HTA test traces under {TRACE_DIR}")


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_launch_delay_matches_hta(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trace_analysis = pytest.importorskip("hta.trace_analysis")
    monkeypatch.setenv("HTA_DISABLE_NS_ROUNDING", "1")
    ours = _ours(path)
    assert len(ours) > 0
    try:
        ta = trace_analysis.TraceAnalysis(
            trace_files={0: str(path)}, trace_dir=str(path.parent),
            include_last_profiler_step=True,
        )
        hta = ta.get_cuda_kernel_launch_stats(visualize=False)[0]
    except Exception as exc:  # HTA cannot analyse this file: the raw-event check below stands
        hta = pd.DataFrame(columns=["correlation", "launch_delay"])
        print(f"HTA could not analyse {path.name}: {exc!r}; checked against raw events only")

    comparable = ours[ours["launch_name"].isin(HTA_LAUNCHES) & ~ours["in_graph"]]
    m = comparable.merge(hta, on="correlation", how="outer", indicator=True)
    if len(hta):
        # Same kernel set (HTA's filter keeps launches up to the last profiler step's end).
        assert (m["_merge"] == "both").all(), m["_merge"].value_counts().to_dict()
        both = m[m["_merge"] == "both"]
        max_ts = ours["kernel_start_ns"].max() / 1e3
        tol = NS_US + float(np.spacing(max_ts))
        diff = (both["launch_delay_us"].clip(lower=0) - both["launch_delay"]).abs()
        assert diff.max() <= tol, (diff.max(), tol)
        assert (both["launch_dur_us"] - both["cpu_duration"]).abs().max() <= tol
        assert (both["kernel_dur_us"] - both["gpu_duration"]).abs().max() <= tol

    # Everything HTA did not compare (driver launches, graph kernels, files HTA cannot read):
    # exact check against the raw events.
    rest = ours[~ours["correlation"].isin(hta["correlation"])]
    if len(rest):
        raw = _raw_delays(path)
        r = rest.merge(raw, on="correlation", how="left")
        r = r[(r["kernel_start_ns"] == (r["kts"] * 1000).astype("int64"))]
        assert len(r) == len(rest)
        assert np.allclose(r["launch_delay_us"], r["raw_delay"], rtol=0, atol=NS_US)
        assert np.allclose(r["t_lq_us"], r["raw_t_lq"], rtol=0, atol=NS_US)


def test_ns_precision_kept_exactly() -> None:
    """On the ns-resolution trace, every t_lq equals the exact decimal difference to 1 ns."""
    path = TRACE_DIR / "v100_ns_resolution.json.gz"
    if not path.exists():
        pytest.skip(f"{path} missing")
    ours = _ours(path)
    raw = _raw_delays(path)
    m = ours.merge(raw, on="correlation")
    assert len(m) == len(ours)
    assert np.abs(m["t_lq_us"] - m["raw_t_lq"]).max() < NS_US / 2
    # float64 µs would have lost this: sub-µs digits really are present
    assert (ours["kernel_start_ns"] % 1000 != 0).mean() > 0.5
