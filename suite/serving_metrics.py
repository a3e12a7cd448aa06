"""Serving metrics from per-request timelines: the project's contract for TTFT, TPOT, ITL, ...

Input per request (:class:`RequestTimeline`): its arrival time, the *emissions* it received in
time order, each ``(t_s, n_tokens)`` (a speculative-decoding or multi-token step emits
``n_tokens > 1`` at once), its prompt length and whether it finished. All times are seconds on
one clock. Definitions, for a request with emissions ``(t_1, n_1) ... (t_k, n_k)`` and
``output_tokens = n_1 + ... + n_k``:

* ``TTFT = t_1 - arrival``
* ``E2E = t_k - arrival``
* ``TPOT = (E2E - TTFT) / (output_tokens - 1)``; undefined (NaN, excluded from the TPOT
  distribution) when ``output_tokens <= 1``. This is vLLM's convention, and like vLLM the
  goodput check treats an undefined TPOT as meeting the TPOT SLO.
* ``ITL`` (inter-token latency, one value per *token*): for each emission ``i >= 2`` the gap
  ``t_i - t_{i-1}`` is spread evenly over its ``n_i`` tokens, giving ``n_i`` values of
  ``gap / n_i``. A request's ITLs sum to ``E2E - TTFT``; the extra tokens of the first
  emission arrive with TTFT and get no ITL. Spreading keeps multi-token steps from being
  counted as one long gap followed by zero-latency tokens.
* ``ICL`` (inter-chunk latency, one value per emission gap): ``t_i - t_{i-1}``, unspread.
* Throughput over ``duration = (last emission of any request) - (first arrival)``:
  output tokens/s = sum(output tokens) / duration, total tokens/s adds prompt tokens,
  requests/s = finished requests / duration.
* Goodput = (finished requests meeting *all* given SLOs on TTFT, TPOT and E2E, any subset) /
  duration, in requests/s; also reported as the fraction of all requests.

Unfinished requests (``finished=False``, e.g. errors or timeouts) still define the run's time
span, count in the goodput fraction's denominator (they missed their SLO), but are excluded from
latency distributions and token/request throughput, as vLLM's benchmark does with failures.

The timelines themselves are kept: :func:`write_timelines` stores them as one Parquet file
(the serving level writes one per case, see ``TIMELINES_FILE``) and :func:`load_timelines`
reads them back, float for float, so anyone can recompute any serving metric with their own
formulas.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from effbench.suite.stats import summarize


@dataclass(frozen=True)
class MetricInfo:
    """Unit, better direction and one-line definition of a serving metric (mirrored in docs)."""

    unit: str
    direction: str
    definition: str


METRICS: dict[str, MetricInfo] = {
    "ttft": MetricInfo("s", "lower", "time to first token: first emission time - arrival"),
    "tpot": MetricInfo(
        "s",
        "lower",
        "time per output token after the first: (e2e - ttft) / (output_tokens - 1); "
        "undefined for requests with <= 1 output token",
    ),
    "itl": MetricInfo(
        "s",
        "lower",
        "inter-token latency, per token: each emission gap divided evenly over the tokens it "
        "emitted",
    ),
    "icl": MetricInfo("s", "lower", "inter-chunk latency: gap between consecutive emissions"),
    "e2e": MetricInfo("s", "lower", "end-to-end latency: last emission time - arrival"),
    "output_throughput": MetricInfo(
        "tok/s", "higher", "output tokens of finished requests / duration"
    ),
    "total_throughput": MetricInfo(
        "tok/s", "higher", "prompt + output tokens of finished requests / duration"
    ),
    "request_throughput": MetricInfo("req/s", "higher", "finished requests / duration"),
    "goodput": MetricInfo(
        "req/s", "higher", "finished requests meeting all given SLOs / duration"
    ),
    "slo_attainment": MetricInfo(
        "fraction", "higher", "requests meeting all given SLOs / all requests"
    ),
    "duration": MetricInfo(
        "s", "lower", "last emission of any request - first arrival of any request"
    ),
}

LATENCY_METRICS = ("ttft", "tpot", "itl", "icl", "e2e")


@dataclass(frozen=True)
class RequestTimeline:
    """One request's arrival, its token emissions ``(t_s, n_tokens)`` in time order, and size.

    Validated on construction: emissions are time-ordered, at or after arrival, each with
    ``n_tokens >= 1``; a finished request has at least one emission.
    """

    arrival_s: float
    emissions: tuple[tuple[float, int], ...]
    prompt_tokens: int
    finished: bool = True

    def __post_init__(self) -> None:
        ems = tuple((float(t), int(n)) for t, n in self.emissions)
        object.__setattr__(self, "emissions", ems)
        if self.prompt_tokens < 0:
            raise ValueError(f"prompt_tokens must be >= 0, got {self.prompt_tokens}")
        if self.finished and not ems:
            raise ValueError("a finished request must have at least one emission")
        prev = self.arrival_s
        for t, n in ems:
            if n < 1:
                raise ValueError(f"each emission must carry >= 1 token, got {n} at t={t}")
            if t < prev:
                raise ValueError(
                    f"emissions must be in time order and not before arrival ({self.arrival_s})"
                    f"; got t={t} after {prev}"
                )
            prev = t

    @property
    def output_tokens(self) -> int:
        return sum(n for _, n in self.emissions)


@dataclass(frozen=True)
class SLO:
    """Latency objectives in seconds; ``None`` means "not constrained"."""

    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None

    @classmethod
    def coerce(cls, slos: SLO | Mapping[str, float | None] | None) -> SLO:
        """Accept an ``SLO``, a mapping with keys ``ttft_s``/``tpot_s``/``e2e_s``, or None."""
        if slos is None:
            return cls()
        if isinstance(slos, SLO):
            return slos
        valid = ("ttft_s", "tpot_s", "e2e_s")
        bad = sorted(set(slos) - set(valid))
        if bad:
            raise ValueError(f"unknown SLO key(s) {bad}; valid keys: {list(valid)}")
        return cls(**dict(slos))


def ttft(req: RequestTimeline) -> float:
    """``first emission time - arrival``; NaN for a request with no emissions."""
    return req.emissions[0][0] - req.arrival_s if req.emissions else math.nan


def e2e(req: RequestTimeline) -> float:
    """``last emission time - arrival``; NaN for a request with no emissions."""
    return req.emissions[-1][0] - req.arrival_s if req.emissions else math.nan


def tpot(req: RequestTimeline) -> float:
    """``(E2E - TTFT) / (output_tokens - 1)``; NaN (undefined) when output_tokens <= 1."""
    out = req.output_tokens
    if out <= 1:
        return math.nan
    return (e2e(req) - ttft(req)) / (out - 1)


def icl(req: RequestTimeline) -> list[float]:
    """Inter-chunk latencies: ``t_i - t_{i-1}`` for each emission after the first."""
    ts = [t for t, _ in req.emissions]
    return [b - a for a, b in zip(ts, ts[1:])]


def itl(req: RequestTimeline) -> list[float]:
    """Per-token inter-token latencies: each gap ``t_i - t_{i-1}`` spread over its ``n_i`` tokens.

    Emission ``i`` contributes ``n_i`` values of ``gap / n_i``; the sum is ``E2E - TTFT``.
    """
    out: list[float] = []
    for (t_prev, _), (t, n) in zip(req.emissions, req.emissions[1:]):
        out.extend([(t - t_prev) / n] * n)
    return out


def meets_slo(req: RequestTimeline, slo: SLO) -> bool:
    """Whether a *finished* request meets every set objective (value <= objective).

    An undefined TPOT (one output token) counts as meeting the TPOT objective, as in vLLM.
    """
    if not req.finished or not req.emissions:
        return False
    if slo.ttft_s is not None and not ttft(req) <= slo.ttft_s:
        return False
    if slo.e2e_s is not None and not e2e(req) <= slo.e2e_s:
        return False
    tp = tpot(req)
    return slo.tpot_s is None or math.isnan(tp) or tp <= slo.tpot_s


def duration(requests: Sequence[RequestTimeline]) -> float:
    """``last emission of any request - first arrival``; NaN with no emissions at all."""
    last = [r.emissions[-1][0] for r in requests if r.emissions]
    if not last:
        return math.nan
    return max(last) - min(r.arrival_s for r in requests)


def distribution(values: Iterable[float]) -> dict[str, object]:
    """Summarise latency values: mean, median, p90, p99 (NaN-free) plus the full stats and raw.

    ``values`` (the raw list, NaN kept for undefined entries so per-request lists stay aligned
    with requests) is included under ``"values"``; ``n`` counts the defined values.
    """
    raw = [float(v) for v in values]
    stats: dict[str, object] = dict(summarize(raw))
    finite = np.asarray([v for v in raw if math.isfinite(v)], dtype=float)
    if finite.size:
        p90, p99 = np.percentile(finite, [90.0, 99.0])
        stats.update(p90=float(p90), p99=float(p99))
    else:
        stats.update(p90=math.nan, p99=math.nan)
    stats["values"] = raw
    return stats


def _rate(count: float, span: float) -> float:
    return count / span if span > 0 else math.nan


def serving_summary(
    requests: Sequence[RequestTimeline],
    slos: SLO | Mapping[str, float | None] | None = None,
) -> dict[str, dict[str, object]]:
    """Compute every serving metric for one run.

    Returns ``{"ttft"|"tpot"|"e2e": per-request distribution (finished requests, in input
    order), "itl": per-token, "icl": per-gap, "throughput": {...}, "goodput": {...}}``, where a
    distribution is :func:`distribution`'s dict (``mean``, ``median``, ``p90``, ``p99``,
    ``values``, ...). ``throughput`` holds ``output_tokens_per_s``, ``total_tokens_per_s``,
    ``requests_per_s``, ``duration_s`` and the counts; ``goodput`` holds ``requests_per_s``,
    ``fraction``, ``n_good`` and the SLOs used. Rates are NaN when the duration is not > 0;
    with no SLOs set, every finished request counts as good.
    """
    slo = SLO.coerce(slos)
    done = [r for r in requests if r.finished]
    span = duration(requests)
    out_tokens = sum(r.output_tokens for r in done)
    prompt_tokens = sum(r.prompt_tokens for r in done)
    n_good = sum(meets_slo(r, slo) for r in done)
    summary: dict[str, dict[str, object]] = {
        "ttft": distribution(ttft(r) for r in done),
        "tpot": distribution(tpot(r) for r in done),
        "itl": distribution(v for r in done for v in itl(r)),
        "icl": distribution(v for r in done for v in icl(r)),
        "e2e": distribution(e2e(r) for r in done),
        "throughput": {
            "output_tokens_per_s": _rate(out_tokens, span),
            "total_tokens_per_s": _rate(out_tokens + prompt_tokens, span),
            "requests_per_s": _rate(len(done), span),
            "duration_s": span,
            "n_requests": len(requests),
            "n_finished": len(done),
            "output_tokens": out_tokens,
            "prompt_tokens": prompt_tokens,
        },
        "goodput": {
            "requests_per_s": _rate(n_good, span),
            "fraction": n_good / len(requests) if requests else math.nan,
            "n_good": n_good,
            "slos": asdict(slo),
        },
    }
    return summary


def weighted_median(values: Sequence[float], weights: Sequence[float]) -> float:
    """The smallest value whose cumulative weight reaches half the total (NaN when empty)."""
    pairs = sorted((v, w) for v, w in zip(values, weights) if w > 0 and math.isfinite(v))
    total = sum(w for _, w in pairs)
    acc = 0.0
    for v, w in pairs:
        acc += w
        if acc >= total / 2:
            return v
    return math.nan


def client_itl(requests: Sequence[RequestTimeline]) -> dict[str, float]:
    """The ITL median as two reference clients define it, from the same timelines.

    * ``itl_vllm_median``: ``vllm bench serve`` appends the gap between consecutive streamed
      chunks, pooled over requests, whatever the tokens per chunk: effbench's ICL.
    * ``itl_guidellm_median``: GuideLLM takes, per request, ``(last token time - first token
      time) / (output_tokens - 1)`` (effbench's TPOT) and weights each request by
      ``output_tokens - 1`` in its distribution; here the weighted median.

    effbench's own ITL spreads each gap over the tokens it brought (see ``itl``); with one
    token per chunk it equals vLLM's. Finished requests only, as for every latency metric.
    """
    done = [r for r in requests if r.finished]
    gaps = [v for r in done for v in icl(r)]
    tp = [(tpot(r), r.output_tokens - 1) for r in done if r.output_tokens > 1]
    return {
        "itl_vllm_median": float(np.median(gaps)) if gaps else math.nan,
        "itl_guidellm_median": weighted_median([v for v, _ in tp], [w for _, w in tp]),
    }


TIMELINES_FILE = "serving_timelines.parquet"
"""Name of the serving level's per-case timelines file in the case's artifacts folder."""
TIMELINES_SCHEMA = "effbench.serving_timelines/1"
"""Value of the ``effbench.schema`` key in the file's Parquet metadata."""


def _timelines_schema() -> Any:
    import pyarrow as pa

    emission = pa.struct([("t_s", pa.float64()), ("n_tokens", pa.int64())])
    return pa.schema(
        [
            ("request", pa.int64()),
            ("arrival_s", pa.float64()),
            ("emissions", pa.list_(emission)),
            ("prompt_tokens", pa.int64()),
            ("output_tokens", pa.int64()),
            ("finished", pa.bool_()),
        ],
        metadata={
            "effbench.schema": TIMELINES_SCHEMA,
            "effbench.clock": "seconds since the serving run's start (its t0)",
        },
    )


def write_timelines(
    path: str | Path,
    requests: Sequence[RequestTimeline],
    ids: Sequence[int] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write timelines to a Parquet file, one row per request, in the given order.

    Columns: ``request`` (``ids``, default 0..n-1), ``arrival_s``, ``emissions`` (a list of
    ``{t_s, n_tokens}`` structs in time order), ``prompt_tokens``, ``output_tokens`` (the sum
    of ``n_tokens``, for convenience) and ``finished``. Times are float64, written as they are
    (no rounding), so :func:`load_timelines` gives back exactly the same floats. ``metadata``
    adds string key/values to the file's schema metadata (e.g. the case id).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = list(range(len(requests))) if ids is None else list(ids)
    if len(ids) != len(requests):
        raise ValueError(f"{len(ids)} ids for {len(requests)} requests")
    schema = _timelines_schema()
    if metadata:
        schema = schema.with_metadata({**schema.metadata,
                                       **{str(k).encode(): str(v).encode()
                                          for k, v in metadata.items()}})
    table = pa.Table.from_pylist(
        [
            {
                "request": int(i),
                "arrival_s": float(r.arrival_s),
                "emissions": [{"t_s": t, "n_tokens": n} for t, n in r.emissions],
                "prompt_tokens": int(r.prompt_tokens),
                "output_tokens": r.output_tokens,
                "finished": bool(r.finished),
            }
            for i, r in zip(ids, requests)
        ],
        schema=schema,
    )
    path = Path(path)
    pq.write_table(table, path, compression="zstd")
    return path


def load_timelines(path: str | Path) -> list[RequestTimeline]:
    """Read a file written by :func:`write_timelines` back into ``RequestTimeline``s, in file
    order (the serving level writes them in request-id order, the order its metrics use).

    ValueError when a column is missing or a row is not a valid timeline.
    """
    import pyarrow.parquet as pq

    table = pq.read_table(Path(path))
    need = {"arrival_s", "emissions", "prompt_tokens", "finished"}
    missing = sorted(need - set(table.column_names))
    if missing:
        raise ValueError(f"{path}: not a serving timelines file (missing columns {missing})")
    return [
        RequestTimeline(
            arrival_s=row["arrival_s"],
            emissions=tuple((e["t_s"], e["n_tokens"]) for e in row["emissions"] or ()),
            prompt_tokens=row["prompt_tokens"],
            finished=row["finished"],
        )
        for row in table.to_pylist()
    ]
