"""Time ours vs HTA from trace path to per-kernel launch-delay table, on the largest HTA trace.

Run: ``python tests/benchmarks/bench_tklqt_vs_hta.py``. Alternates the two, 3 rounds each, and
prints every time, the medians and the ratio HTA / ours (> 1: ours faster).
"""

from __future__ import annotations

import logging
import os
import statistics
import time
from pathlib import Path

TRACE_DIR = Path(__file__).parents[2].parent / "shared" / "traces" / "hta"


def run_ours(path: Path) -> int:
    from effbench.profilers.kineto import load_trace
    from effbench.profilers.tklqt import kernel_table

    return len(kernel_table(load_trace(path)))


def run_hta(path: Path) -> int:
    from hta.trace_analysis import TraceAnalysis

    ta = TraceAnalysis(trace_files={0: str(path)}, trace_dir=str(path.parent),
                       include_last_profiler_step=True)
    return len(ta.get_cuda_kernel_launch_stats(visualize=False)[0])


def main() -> None:
    os.environ["HTA_DISABLE_NS_ROUNDING"] = "1"
    logging.disable(logging.WARNING)
    files = sorted(TRACE_DIR.glob("*.json*"), key=lambda p: p.stat().st_size)
    if not files:
        raise SystemExit(f"no traces under {TRACE_DIR}")
    path = files[-1]
    import hta.trace_analysis  # noqa: F401  (import cost kept out of the timings)

    import effbench.profilers.tklqt  # noqa: F401

    times: dict[str, list[float]] = {"ours": [], "hta": []}
    rows: dict[str, int] = {}
    for _ in range(3):
        for name, fn in (("ours", run_ours), ("hta", run_hta)):
            t0 = time.perf_counter()
            rows[name] = fn(path)
            times[name].append(time.perf_counter() - t0)
    print(f"trace: {path.name} ({path.stat().st_size / 1e6:.1f} MB gz)")
    for name, ts in times.items():
        print(f"{name:>5}: rows={rows[name]:>6}  " + "  ".join(f"{t:.3f}s" for t in ts)
              + f"  median {statistics.median(ts):.3f}s")
    ratio = statistics.median(times["hta"]) / statistics.median(times["ours"])
    print(f"HTA / ours = {ratio:.2f}x")


if __name__ == "__main__":
    main()
