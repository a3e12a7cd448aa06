"""Measure the regression gate's false-alarm rate and power on this machine.

Run as ``python tests/benchmarks/bench_gate_power.py [--trials 50] [--budget 0.3]``. Not a
pytest test (the name does not match ``test_*``; all work is under ``__main__``).

Workload: ``DenseAttention().forward`` on fixed tensors (batch 1, 4 heads, 128 x 128, head dim
64, float32, one torch thread), timed with ``effbench.suite.timing.measure`` exactly as the kernel
level
does, except that the convergence target is set unreachably tight so each side samples for the
whole ``--budget`` (100-150 samples of >= 2 ms blocks at 0.3 s).

Known slowdowns: every timed call is ``forward(q, k, v)`` followed by ``k`` small matmuls
(32 x 32 float32; ``k = 0`` for the unmodified code). Extra *work* rather than a busy-wait, so
the injected cost stretches with CPU contention exactly like the kernel does and stays the
same fraction of it (a wall-clock spin would shrink relative to a contended kernel). ``k`` is
calibrated once at start: the unmodified call and a block of 100 extra matmuls are timed
alternately for 1 s (so both see the same load), and ``k = round(f * t_call / t_matmul)`` for
``f`` = 10 % or 3 %. The achieved slowdown is printed (from the calibration) and visible per
condition in the "median ratio" column. The wrapper is the same in every condition, so its
own overhead cancels out.

Each trial measures base then candidate, alternating which goes first, in one process (the
A/B setting), and then decides "regressed?" in two ways on the *same* samples:

* effbench gate: ``effbench.suite.gate.compare`` with default ``Thresholds`` (MWU p < 0.01 AND the
  bootstrap 95 % CI of the median ratio entirely above 1.05);
* pytest-benchmark ``--benchmark-compare-fail=mean:10%`` semantics: flagged when
  ``mean(cand) / mean(base) * 100 - 100 > 10`` (also shown for mean:5%).

Conditions: A/A (same code twice: every flag is a false alarm), +10 % and +3 % slowdowns
(share caught = power). Goals: false alarms <= 5 %, 10 % caught >= 90 %; 3 % is below the
gate's 5 % minimum effect on purpose, so it should rarely be flagged.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

try:
    from effbench.kernels_ref.attention import DenseAttention
except ModuleNotFoundError:  # a checkout without ``pip install -e .``
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from effbench.kernels_ref.attention import DenseAttention
from effbench.suite.gate import Thresholds, compare  # noqa: E402
from effbench.suite.stats import wilson_interval  # noqa: E402
from effbench.suite.timing import (  # noqa: E402
    DEFAULT_MIN_SAMPLE_S,
    CpuTimer,
    calibrate,
    measure,
    warm_up,
)

CONDITIONS = {"A/A (no change)": 0.0, "+10% slowdown": 0.10, "+3% slowdown": 0.03}


def make_kernel() -> Callable[[int], Callable[[], Any]]:
    """``with_extra(k)`` -> the timed callable: attention forward then ``k`` small matmuls."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, 128, 64, generator=gen) for _ in range(3))
    a = torch.randn(32, 32, generator=gen)
    attn = DenseAttention()

    def with_extra(extra: int) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode():
                out = attn.forward(q, k, v)
                for _ in range(extra):
                    torch.mm(a, a)
            return out

        return call

    return with_extra


def calibrate_extra(with_extra: Callable[[int], Callable[[], Any]]) -> tuple[float, float]:
    """(seconds per unmodified call, seconds per extra matmul), timed alternately for ~1 s."""
    timer = CpuTimer()
    base, block = with_extra(0), with_extra(100)
    t_base, t_block = [], []
    deadline = time.perf_counter() + 1.0
    while time.perf_counter() < deadline:
        t_base.append(timer.time_block(base, 5) / 5)
        t_block.append(timer.time_block(block, 5) / 5)
    call, with_block = float(np.median(t_base)), float(np.median(t_block))
    return call, max(with_block - call, 1e-9) / 100


def samples(fn: Callable[[], Any], budget: float) -> tuple[float, ...]:
    return measure(fn, warmup_s=0.01, budget_s=budget, target_rel_ci=1e-6,
                   max_samples=100_000).samples


def sequential(base: Callable[[], Any], cand: Callable[[], Any], budget: float,
               swap: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Base for ``budget`` then candidate for ``budget`` (or the other way round)."""
    if swap:
        c = samples(cand, budget)
        return samples(base, budget), c
    b = samples(base, budget)
    return b, samples(cand, budget)


def interleaved(base: Callable[[], Any], cand: Callable[[], Any], budget: float,
                swap: bool) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Alternate one timed block of each side (A B B A A B ...) for ``2 * budget`` in all.

    Blocks are calibrated to >= 2 ms like ``measure``'s; alternating at block level makes both
    sides see the same background load, which sequential measurement cannot promise.
    """
    timer = CpuTimer()
    warm_up(timer, base, 0.01)
    warm_up(timer, cand, 0.01)
    inner = calibrate(timer, base, DEFAULT_MIN_SAMPLE_S["cpu"])
    out: dict[bool, list[float]] = {False: [], True: []}
    deadline = time.perf_counter() + 2 * budget
    r = int(swap)
    while time.perf_counter() < deadline:
        for is_cand in ((False, True) if r % 2 == 0 else (True, False)):
            fn = cand if is_cand else base
            out[is_cand].append(timer.time_block(fn, inner) / inner)
        r += 1
    return tuple(out[False]), tuple(out[True])


MODES = {"sequential": sequential, "interleaved": interleaved}


def frame(s: tuple[float, ...]) -> pd.DataFrame:
    return pd.DataFrame([{"case_id": "kernel:dense[]@attn128", "metric": "latency",
                          "value": float(np.median(s)), "unit": "s", "direction": "lower",
                          "samples": list(s), "status": "ok", "schema_version": 1}])


def trial(base: Callable[[], Any], cand: Callable[[], Any], budget: float, swap: bool,
          th: Thresholds, mode: str) -> dict[str, Any]:
    b, c = MODES[mode](base, cand, budget, swap)
    row = compare(frame(b), frame(c), th).iloc[0]
    mean_change = (np.mean(c) / np.mean(b)) * 100 - 100
    return {"gate": row["verdict"] == "regressed", "pb10": mean_change > 10,
            "pb5": mean_change > 5, "ratio": row["ratio"], "n": len(b) + len(c)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=50, help="trials per condition (default 50)")
    ap.add_argument("--budget", type=float, default=0.3, help="seconds per side per trial")
    ap.add_argument("--confidence", type=float, default=Thresholds().confidence,
                    help="bootstrap CI level of the gate's effect test")
    ap.add_argument("--mode", action="append", choices=list(MODES),
                    help="sampling scheme(s) to run (default: both)")
    args = ap.parse_args(argv)
    args.mode = args.mode or list(MODES)
    torch.set_num_threads(1)
    th = Thresholds(confidence=args.confidence)
    with_extra = make_kernel()
    base = with_extra(0)
    per_call, per_mm = calibrate_extra(with_extra)
    extras = {name: round(f * per_call / per_mm) for name, f in CONDITIONS.items()}
    injected = ", ".join(f"{name}: {k} matmuls = {k * per_mm / per_call:+.1%}"
                         for name, k in extras.items() if k)
    print(f"unmodified call: median {per_call * 1e6:.1f} us; extra matmul "
          f"{per_mm * 1e6:.2f} us; injected {injected}")
    print(f"{args.trials} trials x "
          f"{len(CONDITIONS)} conditions, {args.budget:.2f} s per side")
    t0 = time.perf_counter()
    rows = []
    for i in range(args.trials):  # conditions interleaved too, so drift hits all of them
        for name in CONDITIONS:
            for mode in args.mode:
                cand = with_extra(extras[name])
                got = trial(base, cand, args.budget, i % 2 == 1, th, mode)
                rows.append({"condition": name, "mode": mode, **got})
    df = pd.DataFrame(rows)
    load = os.getloadavg()[1] if hasattr(os, "getloadavg") else math.nan
    print(f"{len(df)} trials in {time.perf_counter() - t0:.0f} s; "
          f"median samples per trial {int(df['n'].median())}; "
          f"5-min load average at the end {load:.1f} on {os.cpu_count()} cores\n")
    lines = []
    for (mode, name), d in df.groupby(["mode", "condition"], sort=False):
        n = len(d)
        cells = []
        for col in ("gate", "pb10", "pb5"):
            k = int(d[col].sum())
            lo, hi = wilson_interval(k, n)
            cells.append(f"{k}/{n} = {k / n:5.1%} [{lo:.0%}, {hi:.0%}]")
        q = d["ratio"].quantile([0.05, 0.5, 0.95]).to_numpy()
        lines.append((mode, name, *cells, f"{q[1]:.3f} ({q[0]:.3f}..{q[2]:.3f})"))
    out = pd.DataFrame(lines, columns=["sampling", "condition", "effbench gate flagged",
                                       "pytest-benchmark mean:10%", "pytest-benchmark mean:5%",
                                       "median ratio (5..95%)"])
    with pd.option_context("display.width", 200):
        print(out.to_string(index=False))
    print("\nA/A row: false-alarm rate. Slowdown rows: share caught (power).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
