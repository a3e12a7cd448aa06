"""Serving level: timed arrivals through the engine in real time, with the case's scheduler.

Requests take the eval prompts in turn, arrive on the preset's arrival process (Poisson by
default, seeded), and each generates ``output_tokens`` tokens. The engine runs dense attention,
the full cache and autoregressive decoding, so only the scheduler differs between cases. Every
per-request and per-token value is kept as the metric's raw samples.

The timelines themselves (arrival, emissions, lengths; seconds since the run's start) are kept
too, as ``serving_timelines.parquet`` in the case's artifacts folder when the runner gives one
(``effbench.suite.artifacts``); every serving record names it, relative to the run folder, in
``stats["timelines"]``. The metrics are computed from exactly the floats that file holds, so a
recomputation from it with the same formulas matches the stored samples bit for bit.
"""

from __future__ import annotations

import math

from effbench.kernels_ref.engine import Engine, EngineConfig, EngineResult
from effbench.kernels_ref.requests import Request
from effbench.suite import artifacts, registry
from effbench.suite.cases import Case
from effbench.suite.context import RunContext
from effbench.suite.levels import Metric, from_samples, scalar
from effbench.suite.levels.engine import components
from effbench.suite.metrics import MetricSpec, declare
from effbench.suite.serving_metrics import (
    LATENCY_METRICS,
    METRICS,
    TIMELINES_FILE,
    RequestTimeline,
    serving_summary,
    write_timelines,
)
from effbench.suite.workloads import ArrivalSpec

DECLARED = declare(
    "serving",
    *(MetricSpec(name, info.unit, info.direction, "timing", info.definition)
      for name, info in METRICS.items()),
)
"""Every serving metric (the table of effbench.suite.serving_metrics), all measured in real
time from one run's timelines and so noisy (``timing``)."""


def _engine(ctx: RunContext, case: Case) -> Engine:
    s = ctx.preset.serving
    comp = components("scheduling", None, None)
    return Engine(
        ctx.model,
        attention=comp.attention,
        cache_factory=comp.cache,
        scheduler=registry.get(case.technique).build(case.param_dict),
        decoder=comp.decoder(),
        config=EngineConfig(max_batch=s.max_batch, max_tokens=s.max_tokens),
    )


def _requests(ctx: RunContext, times_s: list[float], out_tokens: int) -> list[Request]:
    prompts = [p for p, _ in ctx.eval_tokens]
    return [
        Request(i, prompts[i % len(prompts)], out_tokens, arrival_ns=int(t * 1e9))
        for i, t in enumerate(times_s)
    ]


def timelines_of(res: EngineResult) -> list[RequestTimeline]:
    """Each request's timeline in request-id order, in seconds since the run's start.

    The engine stamps absolute ``perf_counter_ns``; subtracting the run's start (``t0``, taken
    before the first arrival is due) in integer nanoseconds first keeps every time exact until
    the one division by 1e9.
    """
    t0 = res.start_ns
    return [
        RequestTimeline(
            arrival_s=(r.arrival_ns - t0) / 1e9,
            emissions=tuple(((t - t0) / 1e9, n) for t, n in r.emissions),
            prompt_tokens=len(r.prompt),
        )
        for r in res.requests
    ]


def keep_timelines(ctx: RunContext, case: Case, res: EngineResult,
                   timelines: list[RequestTimeline]) -> dict[str, str]:
    """Write the timelines to the case's artifacts folder; the stats entry naming the file.

    ``{"timelines": "artifacts/<case>/serving_timelines.parquet"}`` (relative to the run
    folder), or ``{}`` when no runner gave an artifacts folder (the level run on its own).
    """
    folder = artifacts.for_case(ctx)
    if folder is None:
        return {}
    path, rel = folder.path(TIMELINES_FILE)
    write_timelines(path, timelines, ids=[r.rid for r in res.requests],
                    metadata={"case_id": case.case_id})
    return {"timelines": rel}


def run(case: Case, ctx: RunContext) -> list[Metric]:
    s, seed = ctx.preset.serving, ctx.preset.run.seed
    spec = ArrivalSpec(kind=s.arrival, rate=s.rate, n=s.requests, cv=s.cv, seed=seed)
    times = spec.arrivals()
    # Warm-up: a few requests at once, untimed, so first-call costs stay out of the figures.
    _engine(ctx, case).run(_requests(ctx, [0.0] * min(4, s.max_batch), 4))
    res = _engine(ctx, case).run(_requests(ctx, list(times), s.output_tokens), realtime=True)
    timelines = timelines_of(res)
    kept = keep_timelines(ctx, case, res, timelines)
    summ = serving_summary(timelines, dict(s.slo))
    out: list[Metric] = []
    for name in LATENCY_METRICS:
        vals = [v for v in summ[name]["values"] if not math.isnan(v)]
        if vals:
            tails = {**{q: float(summ[name][q]) for q in ("p90", "p99")}, **kept}
            out.append(
                from_samples(name, vals, METRICS[name].unit, METRICS[name].direction, tails)
            )
    tp, good = summ["throughput"], summ["goodput"]
    scalars = {
        "output_throughput": tp["output_tokens_per_s"],
        "total_throughput": tp["total_tokens_per_s"],
        "request_throughput": tp["requests_per_s"],
        "goodput": good["requests_per_s"],
        "slo_attainment": good["fraction"],
        "duration": tp["duration_s"],
    }
    out += [scalar(k, v, METRICS[k].unit, METRICS[k].direction, dict(kept))
            for k, v in scalars.items()]
    return out
