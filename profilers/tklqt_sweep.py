"""The TKLQT batch sweep: the batch size where the engine turns from CPU- to GPU-bound.

For each batch size, the reference engine generates with that many requests at once under
``torch.profiler`` (CPU + CUDA activities), each engine iteration annotated ``ProfilerStep#N``.
The trace (kept as an artifact) is parsed into per-kernel launch/queue times, split per step,
and the steps are grouped by phase (prefill iterations vs decode iterations, from the engine's
own step log). Per batch size and phase: TKLQT per step, the median per-kernel t_lq, and the
GPU idle fraction; ``effbench.profilers.tklqt.detect_transition`` then finds the batch size where
the
decode phase turns GPU-bound. Without CUDA kernels (a CPU-only machine) the sweep still runs and
keeps the traces, and every row says why TKLQT is unavailable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from effbench.kernels_ref.attention import DenseAttention
from effbench.kernels_ref.decoding import Autoregressive
from effbench.kernels_ref.engine import Engine, EngineConfig, EngineResult
from effbench.kernels_ref.kvcache.full_cache import PooledKVCacheFactory
from effbench.kernels_ref.model import LlamaModel
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling import ContinuousBatching
from effbench.profilers.kineto import load_trace
from effbench.profilers.tklqt import Transition, detect_transition, kernel_table, summarize
from effbench.profilers.tklqt_profiler import export_gzipped

NO_KERNELS = "no CUDA kernels in trace: no NVIDIA GPU"


@dataclass(frozen=True)
class SweepResult:
    table: pd.DataFrame  # one row per (batch_size, phase)
    transition: Transition | None
    unavailable: str
    traces: tuple[str, ...]


def _engine(model: LlamaModel, batch: int, compile: str = "off") -> Engine:
    return Engine(model, attention=DenseAttention(), cache_factory=PooledKVCacheFactory(),
                  scheduler=ContinuousBatching(), decoder=Autoregressive(),
                  config=EngineConfig(max_batch=batch, max_tokens=1 << 20), compile=compile)


def _requests(batch: int, prompt_len: int, new_tokens: int, vocab: int, seed: int) -> list:
    g = torch.Generator().manual_seed(seed)
    return [Request(i, torch.randint(3, vocab, (prompt_len,), generator=g).tolist(), new_tokens)
            for i in range(batch)]


def profile_batch(
    model: LlamaModel, batch: int, prompt_len: int, new_tokens: int, trace_path: Path,
    seed: int = 0, compile: str = "off",
) -> tuple[EngineResult, Path, EngineResult]:
    """One profiled generation at ``batch``: (its engine result, the gzipped trace, the result
    of the same generation timed without the profiler).

    The warm-up generates at the same prompt length, so a compiled decode step (``compile``,
    effbench.kernels_ref.compiled) is compiled, and its CUDA graph captured, before the trace.
    Step latency comes from the unprofiled generation, because the profiler's cost per launch
    would inflate the eager steps (hundreds of launches) far more than a graph replay (one).
    """
    vocab = model.config.vocab_size
    _engine(model, batch, compile).run(_requests(batch, prompt_len, 2, vocab, seed))  # warm-up
    timed = _engine(model, batch, compile).run(_requests(batch, prompt_len, new_tokens, vocab,
                                                         seed))  # fmt: skip
    engine = _engine(model, batch, compile)
    engine.step_context = lambda i, _: torch.profiler.record_function(f"ProfilerStep#{i}")
    activities = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available() and model.device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        res = engine.run(_requests(batch, prompt_len, new_tokens, vocab, seed))
    return res, export_gzipped(prof, trace_path), timed


def _phase(step) -> str:
    return "prefill" if step.prefill_tokens else "decode"


def step_ms(res: EngineResult) -> dict[str, float]:
    """Median wall time of an engine step per phase, in ms (from the engine's step log)."""
    times: dict[str, list[float]] = {}
    for s in res.steps:
        times.setdefault(_phase(s), []).append((s.end_ns - s.start_ns) / 1e6)
    return {phase: float(pd.Series(ms).median()) for phase, ms in times.items()}


def phase_rows(
    res: EngineResult, steps: pd.DataFrame, batch: int, timed: EngineResult | None = None
) -> list[dict]:
    """Per-phase medians over the per-step summary rows (``scope == "step N"``), with the
    median step latency of ``timed`` (an unprofiled run of the same work) when given.
    """
    phase_of = {i: _phase(s) for i, s in enumerate(res.steps)}
    latency = step_ms(timed) if timed is not None else {}
    per_step = steps[steps["scope"].str.startswith("step ")].copy()
    per_step["phase"] = per_step["step"].astype(int).map(phase_of)
    rows = []
    for phase, grp in per_step.dropna(subset=["phase"]).groupby("phase"):
        rows.append({
            "batch_size": batch,
            "phase": phase,
            "steps": len(grp),
            "kernels_per_step": float(grp["n_kernels"].median()),
            "tklqt_us_per_step": float(grp["tklqt_us"].median()),
            "t_lq_median_us": float(grp["t_lq_median_us"].median()),
            "gpu_idle_fraction": float(grp["gpu_idle_fraction"].median()),
            **({"step_ms": latency[phase]} if phase in latency else {}),
        })
    return rows


def sweep(
    model: LlamaModel,
    batch_sizes: Sequence[int],
    artifact_dir: Path,
    prompt_len: int = 64,
    new_tokens: int = 16,
    compile: str = "off",
) -> SweepResult:
    """Profile each batch size and find the decode phase's CPU/GPU-bound transition.

    ``compile`` runs the decode step compiled (``reduce-overhead``: as CUDA graphs, whose one
    launch per step replaces a launch per kernel: the SKIP paper's fusion claim).
    """
    artifact_dir.mkdir(parents=True, exist_ok=True)
    rows, traces = [], []
    for b in batch_sizes:
        tag = "" if compile == "off" else f"_{compile}"
        path = artifact_dir / f"tklqt_b{b}_p{prompt_len}{tag}.json.gz"
        res, path, timed = profile_batch(model, b, prompt_len, new_tokens, path,
                                         compile=compile)  # fmt: skip
        traces.append(str(path))
        table = kernel_table(load_trace(path))
        if not (table["kind"] == "kernel").any():
            rows += [{"batch_size": b, "phase": phase, "steps": sum(_phase(s) == phase
                                                                    for s in res.steps),
                      "step_ms": ms} for phase, ms in step_ms(timed).items()]  # fmt: skip
            continue
        rows += phase_rows(res, summarize(table), b, timed)
    df = pd.DataFrame(rows)
    if "t_lq_median_us" not in df:
        return SweepResult(df, None, NO_KERNELS, tuple(traces))
    decode = df[df["phase"] == "decode"].sort_values("batch_size")
    transition = detect_transition(decode) if len(decode) >= 2 else None
    return SweepResult(df, transition, "", tuple(traces))
