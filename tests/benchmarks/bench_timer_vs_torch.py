"""Cross-check ``effbench.suite.timing.measure`` against ``torch.utils.benchmark`` on fixed CPU
operators.

Run as ``python tests/benchmarks/bench_timer_vs_torch.py [--rounds N]``. For each operator the
two timers run alternately in one process (order swapped every round, so drift hits both) and
the script prints each round's medians, the median over rounds, their ratio (goal: within 3 %)
and how many samples each needed. Not a pytest test: the file name does not match ``test_*``
and all work happens under ``__main__``. torch is pinned to one thread so both timers see the
same single-threaded kernel regardless of other load on the machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils import benchmark

try:
    from effbench.suite.timing import measure
except ModuleNotFoundError:  # a checkout without ``pip install -e .``
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from effbench.suite.timing import measure


def operators() -> dict[str, tuple[str, dict[str, Any], Callable[[], Any]]]:
    """Return name -> (torch Timer stmt, its globals, the same work as a callable for us)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(256, 256, generator=gen)
    b = torch.randn(256, 256, generator=gen)
    x = torch.randn(4096, 256, generator=gen)
    return {
        "matmul 256x256 f32": (
            "torch.matmul(a, b)",
            {"torch": torch, "a": a, "b": b},
            lambda: torch.matmul(a, b),
        ),
        "softmax 4096x256 f32 dim=-1": (
            "torch.softmax(x, dim=-1)",
            {"torch": torch, "x": x},
            lambda: torch.softmax(x, dim=-1),
        ),
    }


def compare(
    name: str,
    stmt: str,
    env: dict[str, Any],
    fn: Callable[[], Any],
    rounds: int,
    budget_s: float,
    min_run_time: float,
) -> float:
    """Time one operator with both timers ``rounds`` times, alternating; print; return ratio.

    Besides the ratio of the two medians over rounds, the median of per-round ratios is shown:
    the two runs of one round are adjacent in time, so that ratio cancels slow load drift.
    """
    ours: list[float] = []
    theirs: list[float] = []
    print(f"\n== {name}")
    print("round  order        ours_us  samples x calls  rel_ci conv   torch_us  samples x calls")
    for r in range(rounds):
        order = ("ours", "torch") if r % 2 == 0 else ("torch", "ours")
        for who in order:
            if who == "ours":
                m = measure(fn, budget_s=budget_s, target_rel_ci=0.02)
            else:
                t = benchmark.Timer(stmt=stmt, globals=env, num_threads=1)
                tm = t.blocked_autorange(min_run_time=min_run_time)
        ours.append(m.median)
        theirs.append(tm.median)
        print(
            f"{r + 1:5d}  {order[0]:>5s} first {m.median * 1e6:9.2f}  {len(m.samples):7d} x "
            f"{m.inner_iters:5d}  {m.stats['rel_ci'] * 100:5.2f}% {str(m.converged):5s}"
            f"  {tm.median * 1e6:9.2f}  {len(tm.times):7d} x {tm.number_per_run:5d}"
        )
    med_ours = statistics.median(ours)
    med_theirs = statistics.median(theirs)
    ratio = med_ours / med_theirs
    paired = statistics.median(o / t for o, t in zip(ours, theirs))
    verdict = "OK" if abs(ratio - 1) <= 0.03 else "OUTSIDE 3%"
    print(
        f"median over rounds: ours {med_ours * 1e6:.2f} us, torch {med_theirs * 1e6:.2f} us, "
        f"ratio ours/torch {ratio:.4f} ({(ratio - 1) * 100:+.2f}%) {verdict}; "
        f"median per-round ratio {paired:.4f}"
    )
    return ratio


def main(argv: list[str] | None = None) -> int:
    """Run the comparison for every operator; exit status 1 if any ratio is outside 3 %."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=10, help="rounds per operator")
    p.add_argument("--budget-s", type=float, default=2.0, help="budget of our measure()")
    p.add_argument("--min-run-time", type=float, default=0.25, help="torch blocked_autorange")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"torch {torch.__version__}, threads=1, cpus={os.cpu_count()}, loadavg={load}")
    ratios = {
        name: compare(name, stmt, env, fn, args.rounds, args.budget_s, args.min_run_time)
        for name, (stmt, env, fn) in operators().items()
    }
    print("\nsummary: " + ", ".join(f"{k}: {v:.4f}" for k, v in ratios.items()))
    return 0 if all(abs(v - 1) <= 0.03 for v in ratios.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
