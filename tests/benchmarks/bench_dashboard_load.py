"""First load of the Frontier explorer over a large synthetic store (goal: under 3 s).

Run as ``python tests/benchmarks/bench_dashboard_load.py [--runs 20] [--records 5000]``. It
writes ``runs`` genuine run folders (``effbench.suite.store.RunStore``: journal, then Parquet) of
about
``records`` records each, then times ``AppTest`` runs of the dashboard's default page (the
Frontier explorer) with Streamlit's data cache cleared before each one: a cold load that reads
every Parquet file, pivots the records to one row per case, computes the frontier and builds
the figure. Prints every round and the median. Not a pytest test (the name is not ``test_*``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

try:
    from effbench.suite.records import Record
except ModuleNotFoundError:  # a checkout without ``pip install -e .``
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from effbench.suite.records import Record

import streamlit as st
from streamlit.testing.v1 import AppTest

from effbench.suite.store import RunStore

APP = Path(__file__).resolve().parents[2] / "dashboards" / "app.py"
METRICS = (  # name, unit, direction
    ("latency", "s", "lower"), ("tflops", "TFLOP/s", "higher"), ("bandwidth", "GB/s", "higher"),
    ("max_abs_error", "abs", "lower"), ("bytes_moved", "B", "lower"),
    ("decode_tokens_per_s", "tok/s", "higher"), ("perplexity", "ppl", "lower"),
    ("kv_bytes_per_token", "B", "lower"), ("top1_agreement", "fraction", "higher"),
    ("kl_vs_baseline", "nats/token", "lower"),
)
TECHNIQUES = ("dense", "streaming-llm", "sparse-a", "sparse-b", "quant-4", "quant-8")


def synthetic_records(run_id: str, n: int, rng: np.random.Generator) -> list[Record]:
    """About ``n`` records: n / len(METRICS) cases, each with every metric, plausible values."""
    out = []
    for i in range(max(1, n // len(METRICS))):
        technique = TECHNIQUES[i % len(TECHNIQUES)]
        params = {"window": int(16 * (1 + i % 64)), "seed": i}
        case_id = f"kernel:{technique}[window={params['window']},seed={i}]@w{i % 5}/cpu"
        speed = rng.lognormal(0, 1)
        for metric, unit, direction in METRICS:
            value = speed if direction == "higher" else 1 / speed
            value *= rng.lognormal(0, 0.3)
            out.append(Record(
                run_id=run_id, case_id=case_id, technique=technique, family="attention",
                level="kernel" if metric in ("latency", "tflops") else "engine", params=params,
                workload=f"w{i % 5}", device="cpu", metric=metric, value=float(value), unit=unit,
                direction=direction, stats={"median": float(value), "n": 5},
            ))
    return out


def make_store(root: Path, runs: int, records: int) -> int:
    """Write the synthetic runs; returns the number of records written."""
    rng = np.random.default_rng(0)
    total = 0
    for r in range(runs):
        store = RunStore.create(root, f"synthetic-{r}", {"run": {"name": f"synthetic-{r}"}})
        recs = synthetic_records(store.run_id, records, rng)
        store.append(recs)
        store.finalize()
        total += len(recs)
    return total


def cold_load_seconds(root: Path) -> float:
    """Seconds for one AppTest run of the default page with an empty data cache."""
    st.cache_data.clear()
    at = AppTest.from_file(str(APP), default_timeout=120)
    at.session_state["results_root"] = str(root)
    t = time.perf_counter()
    at.run()
    elapsed = time.perf_counter() - t
    if at.exception or not at.get("plotly_chart"):
        raise RuntimeError(f"the frontier page did not render: {at.exception}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--records", type=int, default=5000, help="records per run")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        total = make_store(root, args.runs, args.records)
        print(f"store: {args.runs} runs, {total:,} records, written in "
              f"{time.perf_counter() - t:.1f} s")
        times = []
        for i in range(args.rounds):
            times.append(cold_load_seconds(root))
            label = "first (imports + cold cache)" if i == 0 else "cold cache"
            print(f"round {i + 1}: {times[-1]:.2f} s  [{label}]")
        med = statistics.median(times)
        print(f"first load {times[0]:.2f} s, median cold load {med:.2f} s (goal < 3 s): "
              f"{'OK' if times[0] < 3 else 'SLOW'}")


if __name__ == "__main__":
    main()
