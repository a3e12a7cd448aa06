"""Serving level against an OpenAI-compatible endpoint: the same workload and metrics, over HTTP.

With ``[serving] endpoint = "http://host:port/v1"`` (or ``effbench run --endpoint``) the serving
case measures that server (``effbench serve``, ``transformers serve``, vLLM, ...) instead of
the in-process engine:

- **Workload.** The same plan as the in-process level (effbench.suite.levels.serving.plan):
  the same arrival process, prompt and output lengths and seeds. Prompts are sent as text: the
  planned token ids (BOS dropped) decoded with the run's model tokenizer (``[run] model``);
  each request asks for its planned output length as ``max_tokens``, greedy
  (``temperature = 0``), with ``ignore_eos`` (``[serving] ignore_eos``, on by default, so
  lengths are what was planned; servers that refuse the field need it off) and
  ``stream_options.include_usage``.
- **Modes.** Rate-limited: requests are sent at the arrival process's times (``rate``,
  ``arrival``, ``cv``). Concurrency-limited: ``[serving] max_concurrency = N`` also caps the
  requests in flight at N (a request due while N are in flight waits for one to end), as
  ``vllm bench serve --max-concurrency`` and GuideLLM's ``concurrent`` profile do; with
  ``rate = inf`` this is a closed loop of N clients. A request's arrival is when it is sent,
  after any such wait, as in both reference clients.
- **Measurement.** An async httpx client streams every request; chunks are stamped on
  arrival (effbench.suite.endpoint_client) and turned into timelines with token counts from the
  streamed usage, else the ``[serving] tokenizer`` (effbench.suite.endpoint_timelines). The
  timelines file and the metrics are the in-process level's (``serving.metrics_of``).
- **Failures.** A request that fails (HTTP error naming the field, invalid SSE with its first
  bad bytes, timeout) is recorded unfinished and the run goes on; the records' stats count
  them and keep the first error. A run where every request fails fails the case.

Before anything runs (the runner calls :func:`preflight`; the level calls it again as its
warm-up): ``GET {endpoint}/models`` must answer (else one line: unreachable), the model is
chosen (``[serving] endpoint_model``, else the first served), one short streamed request with
the run's fields must not be refused (a 4xx names the field), and a server that streams no
usage needs a ``[serving] tokenizer``.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from effbench.kernels_ref.checkpoint import resolve_model
from effbench.kernels_ref.tokenizer import Tokenizer
from effbench.suite.cases import Case
from effbench.suite.context import RunContext
from effbench.suite.endpoint_client import API_PATHS, Outcome, request_body, stream_one
from effbench.suite.endpoint_timelines import Counted, timeline_of
from effbench.suite.errors import ConfigError
from effbench.suite.levels import Metric
from effbench.suite.levels import serving as serving_level
from effbench.suite.presets import Preset, ServingSettings
from effbench.suite.workloads import ArrivalSpec

EXTRA_HINT = 'pip install "effbench[serve]"'
PROBE_PROMPT = "def add(a, b):"
PROBE_TOKENS = 2
PREFLIGHT_TIMEOUT_S = 10.0


def _httpx() -> Any:
    try:
        import httpx
    except ImportError:
        raise ConfigError(
            f"endpoint runs need httpx, which is in the 'serve' extra: {EXTRA_HINT}",
            "[serving] endpoint",
        ) from None
    return httpx


@dataclass(frozen=True)
class Probe:
    """What the preflight learnt: the model to ask for, what the server lists, whether it
    streams usage, and the tokenizer to count with (None: none given).
    """

    model: str
    served: tuple[str, ...]
    usage: bool
    tokenizer: Tokenizer | None


def counting_tokenizer(s: ServingSettings, where: str) -> Tokenizer | None:
    """``[serving] tokenizer`` (an embedded model name or a folder with tokenizer.json)."""
    if not s.tokenizer:
        return None
    try:
        return Tokenizer.from_dir(resolve_model(s.tokenizer))
    except (ValueError, OSError) as e:
        raise ConfigError(f"[serving] tokenizer {s.tokenizer!r}: {e}", where) from None


def _served_models(httpx: Any, endpoint: str, where: str) -> tuple[str, ...]:
    url = f"{endpoint}/models"
    try:
        r = httpx.get(url, timeout=PREFLIGHT_TIMEOUT_S)
    except httpx.HTTPError as e:
        raise ConfigError(
            f"endpoint {endpoint} is unreachable: GET {url} failed "
            f"({type(e).__name__}: {e or 'no answer'})",
            where,
        ) from None
    if r.status_code != 200:
        raise ConfigError(
            f"endpoint {endpoint}: GET {url} answered HTTP {r.status_code}; "
            "expected an OpenAI-compatible base URL ending in /v1",
            where,
        )
    try:
        return tuple(str(m["id"]) for m in r.json()["data"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"endpoint {endpoint}: GET {url} did not return a model list "
            f"(first bytes {r.content[:80]!r})",
            where,
        ) from None


async def _one(s: ServingSettings, body: dict[str, Any]) -> Outcome:
    httpx = _httpx()
    async with httpx.AsyncClient(timeout=httpx.Timeout(PREFLIGHT_TIMEOUT_S)) as client:
        return await stream_one(
            client, s.endpoint + API_PATHS[s.endpoint_api], body, s.endpoint_api
        )


def preflight(preset: Preset) -> Probe:
    """Check the endpoint answers and takes the run's request; ConfigError (one line) else."""
    s = preset.serving
    httpx = _httpx()
    where = f"{preset.path}: [serving] endpoint"
    served = _served_models(httpx, s.endpoint, where)
    if s.endpoint_model and served and s.endpoint_model not in served:
        raise ConfigError(
            f"endpoint_model '{s.endpoint_model}' is not served by {s.endpoint}; "
            f"it serves {list(served)}",
            f"{preset.path}: [serving] endpoint_model",
        )
    model = s.endpoint_model or (served[0] if served else "")
    if not model:
        raise ConfigError(
            f"endpoint {s.endpoint} lists no model; set [serving] endpoint_model", where
        )
    tokenizer = counting_tokenizer(s, f"{preset.path}: [serving] tokenizer")
    body = request_body(s.endpoint_api, model, PROBE_PROMPT, PROBE_TOKENS, ignore_eos=s.ignore_eos)
    out = asyncio.run(_one(s, body))
    if out.error is not None and out.error.startswith("HTTP "):
        hint = "; set [serving] ignore_eos = false" if "ignore_eos" in out.error else ""
        raise ConfigError(
            f"endpoint {s.endpoint} refused the benchmark's request: {out.error}{hint}", where
        )
    if out.error is None and out.usage is None and tokenizer is None:
        raise ConfigError(
            f"endpoint {s.endpoint} streams no usage (stream_options."
            "include_usage) and no [serving] tokenizer is given to count its "
            "tokens; set [serving] tokenizer to the served model's tokenizer "
            '("tiny" or a folder with tokenizer.json)',
            where,
        )
    return Probe(model, served, out.usage is not None, tokenizer)


async def drive(
    s: ServingSettings,
    model: str,
    prompts: Sequence[str],
    outputs: Sequence[int],
    times_s: Sequence[float],
    now: Callable[[], int] = time.perf_counter_ns,
) -> tuple[list[Outcome], int]:
    """Send request ``i`` at ``times_s[i]`` after the start (at most ``max_concurrency`` in
    flight when set); every outcome, in request order, and the start ``t0`` in ns.
    """
    httpx = _httpx()
    limit = s.max_concurrency or None
    url = s.endpoint + API_PATHS[s.endpoint_api]
    gate = asyncio.Semaphore(limit) if limit else None
    timeout = httpx.Timeout(s.timeout_s, connect=min(PREFLIGHT_TIMEOUT_S, s.timeout_s))
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        t0 = now()

        async def one(i: int) -> Outcome:
            await asyncio.sleep(max(0.0, (t0 + times_s[i] * 1e9 - now()) / 1e9))
            body = request_body(
                s.endpoint_api, model, prompts[i], outputs[i], ignore_eos=s.ignore_eos
            )
            if gate is None:
                return await stream_one(client, url, body, s.endpoint_api, now)
            async with gate:
                return await stream_one(client, url, body, s.endpoint_api, now)

        outcomes = await asyncio.gather(*(one(i) for i in range(len(times_s))))
    return list(outcomes), t0


def _texts(ctx: RunContext, prompts: Sequence[Sequence[int]]) -> list[str]:
    """The planned prompts as text: their ids decoded without the leading BOS."""
    tok = ctx.tokenizer
    return [tok.decode(p[1:] if p and p[0] == tok.bos_id else p) for p in prompts]


def _summary(counted: Sequence[Counted], probe: Probe, s: ServingSettings) -> dict[str, Any]:
    """What every record of the case keeps about the endpoint and the counting."""
    failed = [c for c in counted if c.error is not None]
    ok = [c for c in counted if c.error is None]
    out: dict[str, Any] = {
        "endpoint": s.endpoint,
        "endpoint_model": probe.model,
        "endpoint_api": s.endpoint_api,
        "max_concurrency": s.max_concurrency,
        "client": "effbench (httpx)",
        "output_count": _mostly(c.output_count for c in ok),
        "prompt_count": _mostly(c.prompt_count for c in ok),
        "chunk_split": dict(Counter(c.split for c in ok)),
        "failed_requests": len(failed),
    }
    if failed:
        out["first_error"] = failed[0].error
    return out


def _mostly(values: Any) -> str:
    """The single value, or ``a+b`` when requests differed (e.g. ``usage+tokenizer``)."""
    seen = sorted(set(values))
    return "+".join(seen) if seen else "none"


def run(case: Case, ctx: RunContext) -> list[Metric]:
    """Measure the endpoint with the preset's serving workload (module docstring)."""
    s, seed = ctx.preset.serving, ctx.preset.run.seed
    probe = preflight(ctx.preset)  # also the warm-up request
    work = serving_level.plan(ctx)
    n = len(work.prompts)
    times = ArrivalSpec(kind=s.arrival, rate=s.rate, n=s.requests, cv=s.cv, seed=seed).arrivals()
    prompts = _texts(ctx, work.prompts)
    outputs = [work.outputs[i % n] for i in range(len(times))]
    texts = [prompts[i % n] for i in range(len(times))]
    outcomes, t0 = asyncio.run(drive(s, probe.model, texts, outputs, list(times)))
    counted = [
        timeline_of(o, t0, len(work.prompts[i % n]), probe.tokenizer)
        for i, o in enumerate(outcomes)
    ]
    info = _summary(counted, probe, s)
    if info["failed_requests"] == len(counted):
        raise RuntimeError(
            f"all {len(counted)} requests to {s.endpoint} failed; first: {info['first_error']}"
        )
    lengths = dict(work.stats)
    timelines = [c.timeline for c in counted]
    meta = {
        "endpoint": s.endpoint,
        "endpoint_model": probe.model,
        "output_count": info["output_count"],
    }
    if lengths:
        meta["lengths"] = json.dumps(lengths, sort_keys=True)
    kept = {
        **serving_level.store_timelines(ctx, case, timelines, range(len(timelines)), meta),
        **lengths,
        **info,
    }
    return serving_level.metrics_of(timelines, dict(s.slo), kept)
