"""Profiler overhead: the reference engine's generation timed without and with each profiler.

A fixed CPU workload (the shipped tiny target, eval prompts, greedy, fixed new tokens, batch 8)
runs bare and under one profiler, interleaved (A B B A ...) over several rounds so machine
drift hits both sides. Reported per profiler: the median over rounds of the ratio with/without
(each round's pair run back to back) for the workload's own time (``region``) and for the whole
block including the profiler's start/stop (``block``). The ``none`` row (a null profiler) is the
noise floor of this machine. Because that floor is a few percent on a shared 2-core box, each
profiler's fixed cost is also timed directly: ``start()`` + ``stop()`` around an empty region
(median of several), shown in ms and as a percent of the bare workload.

Energy has no NVML or RAPL on a CPU-only machine, so besides the real (unavailable) profiler it
is run against an in-process fake NVML without an energy counter: that exercises the costly
path, the power-sampling thread, plus per-step-free window edges. The idle baseline (a fixed
pre-run cost, ``idle_s``) is switched off here and is not overhead of the measured region.
Run: ``python tests/benchmarks/bench_profiler_overhead.py``.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from effbench.kernels_ref.attention import DenseAttention
from effbench.kernels_ref.checkpoint import EMBEDDED, load_checkpoint
from effbench.kernels_ref.decoding import Autoregressive
from effbench.kernels_ref.engine import Engine, EngineConfig
from effbench.kernels_ref.evalset import load_evalset
from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling import ContinuousBatching
from effbench.profilers.bandwidth import BandwidthProfiler, PeakCache
from effbench.profilers.base import NullProfiler
from effbench.profilers.energy import EnergyProfiler
from effbench.profilers.host import HostProfiler
from effbench.profilers.memory import MemoryProfiler
from effbench.profilers.nvml import NotSupported


class SamplingOnlyNVML:
    """A GPU without an energy counter, so the profiler falls back to its sampling thread."""

    def available(self) -> tuple[bool, str]:
        return True, ""

    def device_count(self) -> int:
        return 1

    def device_name(self, index: int) -> str:
        return "fake"

    def total_energy_mj(self, index: int) -> int:
        raise NotSupported("no counter")

    def power_mw(self, index: int) -> int:
        return 100_000

    def memory_busy_percent(self, index: int) -> int:
        return 0

    def shutdown(self) -> None:
        pass


def generate(model: Any, prompts: list[list[int]], new: int) -> None:
    eng = Engine(model, attention=DenseAttention(), cache_factory=PooledKVCacheFactory(),
                 scheduler=ContinuousBatching(), decoder=Autoregressive(),
                 config=EngineConfig(max_batch=len(prompts), max_tokens=1 << 16))
    eng.run([Request(i, p, new) for i, p in enumerate(prompts)])


def timed(work: Callable[[], None], prof: Any | None) -> tuple[float, float]:
    """(region seconds, block seconds including the profiler's start and stop)."""
    t0 = time.perf_counter()
    if prof is not None:
        prof.start()
    t1 = time.perf_counter()
    work()
    t2 = time.perf_counter()
    if prof is not None:
        res = prof.stop()
        assert not res.unavailable, res.unavailable
    return t2 - t1, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--only", default="", help="comma-separated name prefixes to run")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_checkpoint(EMBEDDED["tiny-target"])
    prompts = [tok.encode(it["prompt"]) for it in load_evalset()[: args.batch]]
    tmp = Path(tempfile.mkdtemp(prefix="effbench-overhead-"))
    cache = PeakCache(tmp / "peaks.json")
    factories: dict[str, Callable[[], Any]] = {
        "none (control)": lambda: NullProfiler(),
        "energy (fake NVML, sampling 50 ms)": lambda: EnergyProfiler(
            "cuda:0", tmp, nvml=SamplingOnlyNVML(), idle_s=0.0, poll_s=0.05),
        "memory": lambda: MemoryProfiler("cpu"),
        "bandwidth": lambda: BandwidthProfiler("cpu", tmp, cache=cache),
        "host (py-spy 100 Hz --native)": lambda: HostProfiler("cpu", tmp / "host"),
        "host (py-spy 100 Hz)": lambda: HostProfiler("cpu", tmp / "host", native=False),
        "host (py-spy 100 Hz, nonblocking)": lambda: HostProfiler(
            "cpu", tmp / "host", native=False, nonblocking=True),
    }
    real_energy = EnergyProfiler("cpu", tmp)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
          f"new tokens {args.new}, rounds {args.rounds}")
    print(f"real energy profiler here: available={real_energy.available()}")

    def work() -> None:
        generate(model, prompts, args.new)

    work()  # warm-up
    BandwidthProfiler("cpu", tmp, cache=cache).start()  # measure and cache the CPU peaks once
    print(f"{'profiler':<36} {'bare s':>8} {'region ratio':>13} {'block ratio':>12} "
          f"{'start+stop ms':>14} {'% of bare':>10}")
    only = [p for p in args.only.split(",") if p]
    for name, make in factories.items():
        if only and not any(name.startswith(p) for p in only):
            continue
        if not make().available()[0]:
            print(f"{name:<36} unavailable: {make().available()[1]}")
            continue
        bare, region, block = [], [], []
        for r in range(args.rounds):
            order = (False, True) if r % 2 == 0 else (True, False)
            for with_prof in order:
                reg, blk = timed(work, make() if with_prof else None)
                if with_prof:
                    region.append(reg)
                    block.append(blk)
                else:
                    bare.append(reg)
        r_reg = statistics.median(w / b for w, b in zip(region, bare))
        r_blk = statistics.median(w / b for w, b in zip(block, bare))
        fixed = statistics.median(timed(lambda: None, make())[1] for _ in range(11))
        b = statistics.median(bare)
        print(f"{name:<36} {b:>8.3f} {r_reg:>13.4f} {r_blk:>12.4f} {fixed * 1e3:>14.3f} "
              f"{100 * fixed / b:>10.3f}")


if __name__ == "__main__":
    main()
