"""Serving level: timed arrivals through the engine in real time, with the case's scheduler.

Requests arrive on the preset's arrival process (Poisson by default, seeded with ``[run] seed``).
By default they take the eval prompts in turn and each generates ``output_tokens`` tokens. With
``[serving] prompt_len`` and/or ``output_len`` (length distributions, effbench.suite.workloads)
the lengths are drawn instead, as vLLM's and GuideLLM's benchmarks do:

* prompt ``i`` is real code of exactly its drawn length: BOS, then the next ``length - 1``
  tokens of the eval items' prompt and continuation ids concatenated in order, starting where
  eval item ``i mod items`` starts and wrapping around at the end (``cut_prompts``);
* request ``i`` generates exactly its drawn output length.

Seeds: the arrivals use the run seed ``s``, prompt lengths ``s + 1`` and output lengths ``s + 2``
(``PROMPT_SEED_OFFSET``, ``OUTPUT_SEED_OFFSET``), so the three are independent and each is
reproducible alone. Every record of the case keeps the specs (``LengthSpec.to_json``) and seeds
in ``stats`` (``prompt_len``, ``prompt_len_seed``, ``output_len``, ``output_len_seed``; only
those set), and the timelines file keeps the drawn lengths per request. The longest prompt
plus the longest output must fit the model's ``max_position_embeddings`` (``check_lengths``;
the runner checks it before any case runs).

The engine runs dense attention, the full cache and autoregressive decoding, so only the
scheduler differs between cases. Every per-request and per-token value is kept as the metric's
raw samples.

With ``[serving] endpoint`` set, the case is an endpoint case (effbench.suite.cases) and
effbench.suite.levels.serving_endpoint measures that server instead, with the same plan, the
same timelines file and the same metrics (``metrics_of``).

The timelines themselves (arrival, emissions, lengths; seconds since the run's start) are kept
too, as ``serving_timelines.parquet`` in the case's artifacts folder when the runner gives one
(``effbench.suite.artifacts``); every serving record names it, relative to the run folder, in
``stats["timelines"]``. The metrics are computed from exactly the floats that file holds, so a
recomputation from it with the same formulas matches the stored samples bit for bit.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effbench.kernels_ref.engine import Engine, EngineConfig, EngineResult
from effbench.kernels_ref.requests import Request
from effbench.suite import artifacts, registry
from effbench.suite.cases import Case
from effbench.suite.context import RunContext
from effbench.suite.errors import ConfigError
from effbench.suite.levels import Metric, from_samples, scalar
from effbench.suite.levels.engine import components
from effbench.suite.metrics import MetricSpec, declare
from effbench.suite.preset_checks import Locator
from effbench.suite.presets import Preset
from effbench.suite.serving_metrics import (
    LATENCY_METRICS,
    METRICS,
    TIMELINES_FILE,
    RequestTimeline,
    client_itl,
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


PROMPT_SEED_OFFSET = 1
"""Prompt lengths are drawn with seed ``[run] seed + 1`` (the arrivals use the run seed)."""
OUTPUT_SEED_OFFSET = 2
"""Output lengths are drawn with seed ``[run] seed + 2``."""


@dataclass(frozen=True)
class Plan:
    """What the requests of one serving run are: prompt ids and output lengths in request
    order, and what the records keep so the run can be reproduced (``stats``).
    """

    prompts: tuple[tuple[int, ...], ...]
    outputs: tuple[int, ...]
    stats: tuple[tuple[str, Any], ...] = ()


def cut_prompts(eval_tokens: Sequence[tuple[Sequence[int], Sequence[int]]], bos_id: int,
                lengths: Sequence[int]) -> list[list[int]]:
    """Prompt ``i``: ``bos_id`` then ``lengths[i] - 1`` tokens of the eval stream.

    The stream is every eval item's prompt ids (their leading BOS dropped) and continuation
    ids, concatenated in item order; prompt ``i`` starts where item ``i mod items`` starts and
    runs on through the following items, wrapping around at the end (as often as needed), so
    every prompt is real code and different requests start at different places.
    """
    stream: list[int] = []
    starts: list[int] = []
    for prompt, continuation in eval_tokens:
        starts.append(len(stream))
        body = list(prompt[1:]) if prompt and prompt[0] == bos_id else list(prompt)
        stream += body + list(continuation)
    if not stream:
        raise ValueError("the eval items have no tokens to cut prompts from")
    ids = np.asarray(stream, dtype=np.int64)
    out = []
    for i, n in enumerate(lengths):
        take = (starts[i % len(starts)] + np.arange(int(n) - 1)) % len(ids)
        out.append([bos_id, *ids[take].tolist()])
    return out


def plan(ctx: RunContext) -> Plan:
    """The run's requests: drawn from ``[serving] prompt_len``/``output_len`` where set
    (seeds ``[run] seed + PROMPT_SEED_OFFSET`` / ``+ OUTPUT_SEED_OFFSET``), else the eval
    prompts in turn and ``output_tokens`` each.
    """
    s, seed = ctx.preset.serving, ctx.preset.run.seed
    stats: dict[str, Any] = {}
    if s.prompt_len is None:
        evals = [p for p, _ in ctx.eval_tokens]
        prompts = [evals[i % len(evals)] for i in range(s.requests)]
    else:
        pseed = seed + PROMPT_SEED_OFFSET
        lengths = s.prompt_len.sample(s.requests, pseed)
        prompts = cut_prompts(ctx.eval_tokens, ctx.tokenizer.bos_id, lengths.tolist())
        stats.update(prompt_len=s.prompt_len.to_json(), prompt_len_seed=pseed)
    if s.output_len is None:
        outputs = [s.output_tokens] * s.requests
    else:
        oseed = seed + OUTPUT_SEED_OFFSET
        outputs = s.output_len.sample(s.requests, oseed).tolist()
        stats.update(output_len=s.output_len.to_json(), output_len_seed=oseed)
    return Plan(tuple(tuple(p) for p in prompts), tuple(int(n) for n in outputs),
                tuple(stats.items()))


def _where(preset: Preset, key: str) -> str:
    """``file:line`` of ``[serving] <key>`` in the preset file (the path alone if unreadable)."""
    try:
        text = Path(preset.path).read_text()
    except OSError:
        return preset.path
    return Locator(preset.path, text).at("serving", key)


def check_lengths(preset: Preset, max_positions: int, eval_prompt_max: int | None = None
                  ) -> None:
    """ConfigError (one line) when the longest prompt plus the longest output can outrun the
    model's ``max_position_embeddings``.

    The longest prompt is ``prompt_len``'s bound, else ``eval_prompt_max`` (the longest eval
    prompt; when None, as before the model's tokenizer is loaded, only a ``prompt_len`` is
    checked); the longest output is ``output_len``'s bound, else ``output_tokens``. A preset
    with neither distribution is not checked here, as before they existed.
    """
    s = preset.serving
    if s.prompt_len is None and (s.output_len is None or eval_prompt_max is None):
        return
    if s.prompt_len is not None:
        prompt, pname = s.prompt_len.max_length, f"prompt_len's bound {s.prompt_len.max_length}"
    else:
        prompt, pname = eval_prompt_max, f"the longest eval prompt {eval_prompt_max}"
    if s.output_len is not None:
        output, oname = s.output_len.max_length, f"output_len's bound {s.output_len.max_length}"
    else:
        output, oname = s.output_tokens, f"output_tokens {s.output_tokens}"
    if prompt + output > max_positions:
        key = "prompt_len" if s.prompt_len is not None else "output_len"
        raise ConfigError(
            f"[serving] {pname} + {oname} = {prompt + output} tokens exceeds the model's "
            f"max_position_embeddings ({max_positions}); lower the longest prompt or output",
            _where(preset, key))


def _requests(plan: Plan, times_s: Sequence[float], out_tokens: int | None = None
              ) -> list[Request]:
    """One request per arrival time, request ``i`` with ``plan``'s prompt ``i`` (cycling) and
    output length ``i`` (or ``out_tokens`` each, for the warm-up).
    """
    n = len(plan.prompts)
    return [
        Request(i, list(plan.prompts[i % n]),
                out_tokens if out_tokens is not None else plan.outputs[i % n],
                arrival_ns=int(t * 1e9))
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
                   timelines: list[RequestTimeline], lengths: dict[str, Any] | None = None
                   ) -> dict[str, str]:
    """Write the timelines to the case's artifacts folder; the stats entry naming the file.

    ``{"timelines": "artifacts/<case>/serving_timelines.parquet"}`` (relative to the run
    folder), or ``{}`` when no runner gave an artifacts folder (the level run on its own).
    ``lengths`` (the plan's specs and seeds, when any) go into the file's metadata as JSON.
    """
    meta = {"lengths": json.dumps(lengths, sort_keys=True)} if lengths else {}
    return store_timelines(ctx, case, timelines, [r.rid for r in res.requests], meta)


def store_timelines(ctx: RunContext, case: Case, timelines: list[RequestTimeline],
                    ids: Sequence[int], metadata: dict[str, str]) -> dict[str, str]:
    """``keep_timelines`` for any source of timelines: request ``ids`` and extra metadata."""
    folder = artifacts.for_case(ctx)
    if folder is None:
        return {}
    path, rel = folder.path(TIMELINES_FILE)
    write_timelines(path, timelines, ids=list(ids),
                    metadata={"case_id": case.case_id, **metadata})
    return {"timelines": rel}


def run(case: Case, ctx: RunContext) -> list[Metric]:
    if case.endpoint:
        from effbench.suite.levels import serving_endpoint

        return serving_endpoint.run(case, ctx)
    s, seed = ctx.preset.serving, ctx.preset.run.seed
    spec = ArrivalSpec(kind=s.arrival, rate=s.rate, n=s.requests, cv=s.cv, seed=seed)
    times = spec.arrivals()
    check_lengths(ctx.preset, ctx.model_config.max_position_embeddings,
                  max(len(p) for p, _ in ctx.eval_tokens))
    work = plan(ctx)
    lengths = dict(work.stats)
    # Warm-up: a few requests at once, untimed, so first-call costs stay out of the figures.
    _engine(ctx, case).run(_requests(work, [0.0] * min(4, s.max_batch), 4))
    res = _engine(ctx, case).run(_requests(work, list(times)), realtime=True)
    timelines = timelines_of(res)
    kept: dict[str, Any] = {**keep_timelines(ctx, case, res, timelines, lengths), **lengths}
    return metrics_of(timelines, dict(s.slo), kept)


def metrics_of(timelines: Sequence[RequestTimeline], slo: dict[str, float],
               kept: dict[str, Any]) -> list[Metric]:
    """Every serving metric of one run's timelines; ``kept`` goes into every record's stats.

    The ``itl`` record also carries the ITL median as vLLM's and GuideLLM's clients define it
    (``serving_metrics.client_itl``), so a comparison with either reads off the same run.
    """
    summ = serving_summary(timelines, slo)
    clients = client_itl(timelines)
    out: list[Metric] = []
    for name in LATENCY_METRICS:
        vals = [v for v in summ[name]["values"] if not math.isnan(v)]
        if vals:
            tails = {**{q: float(summ[name][q]) for q in ("p90", "p99")}, **kept}
            if name == "itl":
                tails.update(clients)
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
