"""Engine level: the reference engine runs the model with the technique plugged in.

Speed and quality come from the same run of the same components:
Prompts and reference continuations come from ``[engine] workload`` (the short eval set by
default; long-context cuts, retrieval items and copy-heavy edits otherwise:
effbench.suite.engine_workloads).

- speed: ``prompts`` workload prompts generate ``max_new_tokens`` each, offline (all present at
  t=0, at most ``batch`` running at once), repeated until the median's confidence interval is
  within the target or the budget is spent.
  Non-baseline techniques run interleaved with their family's baseline (A B, B A, ...), so the
  speedup is a ratio of runs measured side by side, and the rounds go on until the speedup's
  own confidence interval reaches the target (or are marked ``converged = 0``).
- quality (attention, KV cache): the reference continuations are teacher-forced through the same
  attention backend and cache, one decode step per token as in generation; perplexity, and
  top-1 agreement and KL divergence against the dense/full-cache baseline's logits.
- decoding: exact match of the greedy output against the autoregressive baseline (lossless
  techniques must reach 1.0), tokens committed per step, and draft acceptance.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from effbench.kernels_ref.decoding.speculative import Speculative
from effbench.kernels_ref.engine import (
    Engine,
    EngineConfig,
    EngineResult,
    Feed,
    layout_of,
    run_forward,
)
from effbench.kernels_ref.requests import Request
from effbench.kernels_ref.scheduling import ContinuousBatching
from effbench.suite import artifacts as case_artifacts
from effbench.suite import registry
from effbench.suite.cases import Case
from effbench.suite.context import RunContext
from effbench.suite.family import families, get_family
from effbench.suite.levels import Metric, from_samples, scalar
from effbench.suite.metrics import MetricSpec, declare
from effbench.suite.stats import summarize

METRICS = declare(
    "engine",
    # speed (speed): one sample per generation run
    MetricSpec("decode_tokens_per_s", "tok/s", "higher", "timing",
               "tokens emitted by decode-only steps / their summed duration"),
    MetricSpec("prefill_tokens_per_s", "tok/s", "higher", "timing",
               "prompt tokens / summed duration of the steps that prefill"),
    MetricSpec("batch_latency", "s", "lower", "timing", "wall time of one generation run"),
    MetricSpec("speedup", "x", "higher", "timing",
               "baseline batch_latency / technique batch_latency, per interleaved round"),
    # energy (energy_metrics), with the energy profiler attached
    MetricSpec("energy_per_token_prefill", "J/token", "lower", "timing",
               "prefill-phase joules / prompt tokens"),
    MetricSpec("energy_per_token_decode", "J/token", "lower", "timing",
               "decode-phase joules / tokens emitted by decode steps"),
    MetricSpec("energy_per_request", "J", "lower", "timing", "joules / requests served"),
    # KV memory (kv_memory) and decoders (decoding_metrics)
    MetricSpec("kv_bytes_per_token", "B", "lower", "count",
               "cache bytes / tokens after prefilling real prompts"),
    MetricSpec("tokens_per_step", "tokens", "higher", "count",
               "tokens committed per verification step"),
    MetricSpec("acceptance_rate", "fraction", "higher", "count",
               "accepted draft tokens / proposed draft tokens"),
    MetricSpec("exact_match", "fraction", "higher", "count",
               "requests whose greedy output equals the baseline decoder's"),
    MetricSpec("acceptance_alpha", "fraction", "higher", "count",
               "per-token acceptance probability (iid model): accepted / (accepted + "
               "rejections)"),
    MetricSpec("accepted_per_step", "tokens", "higher", "count",
               "accepted draft tokens / verify steps (mean accepted length; right for trees)"),
    MetricSpec("draft_state_bytes", "B", "lower", "count",
               "memory a model-free drafter keeps (Token Recycling's matrix)"),
    MetricSpec("rollback_share", "fraction", "lower", "timing",
               "share of the run's step time spent accepting drafts and rolling caches back"),
    MetricSpec("rejection_rule_pvalue", "p", "higher", "numeric",
               "chi-square p-value of the sampled first token vs the target's distribution"),
    # memory-aware admission (capacity), with [engine] kv_memory_cap
    MetricSpec("max_batch_under_cap", "requests", "higher", "count",
               "most requests in one iteration with KV memory capped at kv_memory_cap"),
    MetricSpec("preemptions_under_cap", "count", "lower", "count",
               "recompute preemptions during that capped run"),
    # quality (quality): teacher-forced logits against the all-baseline engine's
    MetricSpec("perplexity", "ppl", "lower", "numeric", "exp(mean NLL of the continuations)"),
    MetricSpec("top1_agreement", "fraction", "higher", "numeric",
               "positions where the argmax equals the baseline's"),
    MetricSpec("kl_vs_baseline", "nats/token", "lower", "numeric",
               "mean KL(P_baseline || P_technique) per token"),
    MetricSpec("answer_exact_match", "fraction", "higher", "numeric",
               "retrieval workloads: items whose every answer token is the technique's argmax "
               "(teacher-forced, so the same as greedy decoding reproducing the answer)"),
)
"""What this level measures (effbench.suite.metrics); docs/METRICS.md defines each one."""


@dataclass(frozen=True)
class Components:
    """What fills the engine's attention, cache and decoder slots for one run.

    The decoder is kept as (technique, params) and built fresh per run by ``decoder()``: it
    holds per-request state. The scheduler is not a component here (the engine level always
    runs continuous batching; the serving level plugs the case's scheduler in).
    """

    attention: Any
    cache: Any
    decoder_name: str
    decoder_params: tuple

    def decoder(self) -> Any:
        return registry.get(self.decoder_name).build(dict(self.decoder_params))


def components(family: str, technique: str | None, params: dict | None) -> Components:
    """The family's technique in its engine slot and a family baseline in every other slot.

    A slot's baseline is that of the first family (in report order) plugging into it
    (``Family.engine_slot``); ``technique=None`` gives the all-baseline components.
    """
    chosen: dict[str, tuple[str, tuple]] = {}
    for fam in families():
        if fam.engine_slot is not None:
            chosen.setdefault(fam.engine_slot, (registry.baseline_of(fam.name).name, ()))
    if technique is not None:
        slot = get_family(family).engine_slot
        if slot is None:
            raise ValueError(f"family {family} has no engine slot")
        chosen[slot] = (technique, tuple(sorted((params or {}).items())))

    def build(slot: str) -> Any:
        name, given = chosen[slot]
        return registry.get(name).build(dict(given))

    return Components(build("attention"), build("cache"), *chosen["decoder"])


class PhaseWindows:
    """Energy windows per contiguous run of same-phase engine steps (``step_context`` hook).

    One window per step would be far shorter than the energy counter's update period; a window
    per phase run (the prefill burst, then the decode stretch) is long enough to measure, and
    windows of one name are summed by the energy profiler.
    """

    def __init__(self, energy: Any) -> None:
        self.energy = energy
        self.phase: str | None = None
        self._cm: Any = None

    def __call__(self, index: int, phase: str) -> contextlib.AbstractContextManager:
        if phase != self.phase:
            self.close()
            self._cm = self.energy.window(phase)
            self._cm.__enter__()
            self.phase = phase
        return contextlib.nullcontext()

    def close(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
        self._cm, self.phase = None, None


def generate(
    ctx: RunContext, comp: Components, max_batch: int, window: str | None = None
) -> EngineResult:
    """One offline run: the first ``prompts`` eval prompts, at most ``max_batch`` at a time.

    With an energy profiler attached to the case (``ctx.memo["energy"]``) and a ``window``
    name, the run is measured as that window with its prefill and decode phases inside.
    """
    e = ctx.preset.engine
    prompts = [p for p, _ in ctx.workload_tokens[: e.prompts]]
    engine = Engine(
        ctx.model,
        attention=comp.attention,
        cache_factory=comp.cache,
        scheduler=ContinuousBatching(),
        decoder=comp.decoder(),
        config=EngineConfig(max_batch=max_batch, max_tokens=max(4096, sum(map(len, prompts)))),
        draft=ctx.draft if "draft-model" in registry.get(comp.decoder_name).requires else None,
        compile=e.compile,
    )
    reqs = [Request(i, p, e.max_new_tokens) for i, p in enumerate(prompts)]
    energy = ctx.memo.get("energy")
    if energy is None or window is None:
        return _noted(ctx, engine.run(reqs))
    phases = PhaseWindows(energy)
    engine.step_context = phases
    with energy.window(window):
        try:
            return _noted(ctx, engine.run(reqs))
        finally:
            phases.close()


_COMPILES = "engine-compile-stats"


def _noted(ctx: RunContext, res: EngineResult) -> EngineResult:
    """Keep a compiled run's counters for the case (compilations happen in the warm-up)."""
    if res.compile_stats:
        ctx.memo.setdefault(_COMPILES, []).append(res.compile_stats)
    return res


def _phase_times(res: EngineResult) -> tuple[float, float, int]:
    """(prefill seconds, decode seconds, tokens emitted by decode steps) from the step log."""
    pre = sum(s.end_ns - s.start_ns for s in res.steps if s.prefill_tokens) / 1e9
    dec_steps = [s for s in res.steps if not s.prefill_tokens]
    dec = sum(s.end_ns - s.start_ns for s in dec_steps) / 1e9
    return pre, dec, sum(s.emitted_tokens for s in dec_steps)


def score(ctx: RunContext, comp: Components, n: int) -> list[torch.Tensor]:
    """Teacher-forced logits of each eval continuation through the given attention and cache.

    Row j of item i predicts continuation token j. Prompts are prefilled together, then each
    continuation token is fed as one decode step, exactly as generation would feed it.
    """
    items = ctx.workload_tokens[:n]
    layout = layout_of(ctx.model)
    caches = [comp.cache.new_cache(layout) for _ in items]
    rows: list[list[torch.Tensor]] = [[] for _ in items]
    with torch.inference_mode():
        feeds = [Feed(c, p, 0) for c, (p, _) in zip(caches, items)]
        for i, lg in enumerate(run_forward(ctx.model, comp.attention, feeds).logits):
            rows[i].append(lg.float())
        longest = max(len(c) for _, c in items)
        for j in range(longest - 1):
            live = [i for i, (_, c) in enumerate(items) if j < len(c) - 1]
            feeds = [Feed(caches[i], [items[i][1][j]], len(items[i][0]) + j) for i in live]
            for i, lg in zip(live, run_forward(ctx.model, comp.attention, feeds).logits):
                rows[i].append(lg.float())
    return [torch.cat(r) for r in rows]


def quality(ctx: RunContext, case: Case, comp: Components) -> list[Metric]:
    """Perplexity, top-1 agreement and KL against the baseline on the workload's references;
    on a retrieval workload also the share of answers reproduced exactly.
    """
    n = min(ctx.preset.engine.prompts, len(ctx.workload_tokens))
    key = f"baseline-logits-{n}"
    if key not in ctx.memo:
        ctx.memo[key] = score(ctx, components(case.family, None, None), n)
    base = ctx.memo[key]
    tech = base if registry.get(case.technique).baseline else score(ctx, comp, n)
    nll, agree, kl, count, exact = 0.0, 0, 0.0, 0, 0
    for (_, cont), lt, lb in zip(ctx.workload_tokens[:n], tech, base):
        target = torch.tensor(cont)
        lp_t = torch.log_softmax(lt, -1)
        lp_b = torch.log_softmax(lb, -1)
        nll += -lp_t.gather(1, target[:, None]).sum().item()
        agree += (lt.argmax(-1) == lb.argmax(-1)).sum().item()
        kl += (lp_b.exp() * (lp_b - lp_t)).sum().item()
        exact += bool((lt.argmax(-1) == target).all())
        count += len(cont)
    out = [
        scalar("perplexity", math.exp(nll / count), "ppl", "lower"),
        scalar("top1_agreement", agree / count, "fraction", "higher"),
        scalar("kl_vs_baseline", kl / count, "nats/token", "lower"),
    ]
    if ctx.workload.kind == "retrieval":
        out.append(scalar("answer_exact_match", exact / n, "fraction", "higher"))
    return out


def converged(samples: list[float], target_rel_ci: float) -> bool:
    """Whether the median's CI of ``samples`` is within ``target_rel_ci`` (NaN: not)."""
    return bool(summarize(samples)["rel_ci"] <= target_rel_ci)


def speed(ctx: RunContext, case: Case, comp: Components) -> tuple[list[Metric], dict]:
    """Repeated generation runs; interleaved with the baseline unless this is the baseline.

    A round is one technique run, plus one baseline run for a non-baseline technique, in
    alternating order (T B, B T, ...). Rounds go on until the statistic the case reports as
    its result is precise enough: for a non-baseline technique that is ``speedup``, the
    per-round ratio baseline/technique batch latency, so the loop stops once the median's CI
    of those ratios (``rel_ci``) is within ``[run] target_rel_ci``; for the baseline itself it
    is ``batch_latency``. It also stops after ``[engine] max_repeats`` rounds, or after at least
    ``min_repeats`` once the case budget (doubled when paired) has passed. The driving
    metric's stats say ``converged`` (1.0 when its ``rel_ci`` reached the target, else 0.0:
    the samples are kept and the record stored, marked) and ``target_rel_ci``; every speed
    metric's say ``rounds``. Every round's ratio is a ``speedup`` sample, and the technique's
    own timings (``batch_latency``, token rates) are the same rounds' technique runs, so
    sample ``i`` of each belongs to round ``i``.
    """
    e, run = ctx.preset.engine, ctx.preset.run
    ctx.memo.pop(_COMPILES, None)  # this case's compilations only
    is_base = registry.get(case.technique).baseline
    base = None if is_base else components(case.family, None, None)
    generate(ctx, comp, e.batch)  # warm-up, untimed
    if base is not None:
        generate(ctx, base, e.batch)
    tps, pre_tps, e2e, ratios = [], [], [], []
    driver = e2e if base is None else ratios  # what the result's precision is judged on
    tokens = {"prefill_tokens": 0, "decode_tokens": 0, "requests": 0}
    last: dict[str, EngineResult] = {}
    t_end = time.perf_counter() + run.case_budget_s * (1 if is_base else 2)
    while True:
        order = [("tech", comp)] if base is None else [("tech", comp), ("base", base)]
        if base is not None and len(tps) % 2:
            order.reverse()
        got = {name: generate(ctx, c, e.batch, window=name) for name, c in order}
        last.update(got)
        pre, dec, dec_tokens = _phase_times(got["tech"])
        prompt_tokens = sum(len(r.prompt) for r in got["tech"].requests)
        tokens["prefill_tokens"] += prompt_tokens
        tokens["decode_tokens"] += dec_tokens
        tokens["requests"] += len(got["tech"].requests)
        tps.append(dec_tokens / dec if dec else math.nan)
        pre_tps.append(prompt_tokens / pre if pre else math.nan)
        e2e.append(got["tech"].wall_s)
        if base is not None:
            ratios.append(got["base"].wall_s / got["tech"].wall_s)
        n = len(tps)
        if n >= e.max_repeats:
            break
        if n >= e.min_repeats and (
            converged(driver, run.target_rel_ci) or time.perf_counter() > t_end
        ):
            break
    res = last["tech"]
    rounds = {"rounds": float(len(e2e)), **compile_stats(ctx, list(last.values()))}
    done = {**rounds, "converged": float(converged(driver, run.target_rel_ci)),
            "target_rel_ci": float(run.target_rel_ci)}
    metrics = [
        from_samples("decode_tokens_per_s", tps, "tok/s", "higher", rounds),
        from_samples("prefill_tokens_per_s", pre_tps, "tok/s", "higher", rounds),
        from_samples("batch_latency", e2e, "s", "lower", rounds if ratios else done),
    ]
    if ratios:
        metrics.append(from_samples("speedup", ratios, "x", "higher", done))
    if ctx.memo.get("energy") is not None:
        metrics += energy_metrics(ctx.memo["energy"].windows, tokens)
    return metrics, {"result": res, "baseline": last.get("base")}


def compile_stats(ctx: RunContext, results: list[EngineResult]) -> dict[str, float]:
    """The compiled mode's counters as numeric stats of the speed metrics (empty when eager):
    compilations and their seconds over the case's runs (warm-up included), and the last
    timed run's forwards that ran compiled and eager. The eager forwards' reasons (a cache
    without a static slot, prefill, ...) go to the case's ``compile.json`` artifact.
    """
    stats = [r.compile_stats for r in results if r.compile_stats]
    if not stats:
        return {}
    last = stats[0]  # the technique's (results list it before the baseline's)
    case_runs = ctx.memo.get(_COMPILES, [])
    out = {
        "compilations": float(sum(s["compilations"] for s in case_runs)),
        "compile_seconds": float(sum(s["compile_seconds"] for s in case_runs)),
        "compiled_forwards": float(last["compiled_forwards"]),
        "eager_forwards": float(sum(last["eager_forwards"].values())),
    }
    where = case_artifacts.for_case(ctx)
    if where is not None:
        path, _ = where.path("compile.json")
        path.write_text(json.dumps({"stats": out, "last_run": last}, indent=2) + "\n")
    return out


def energy_metrics(windows: list, tokens: dict[str, int]) -> list[Metric]:
    """J/token per phase and J/request of the technique's timed runs (energy profiler attached).

    ``tokens`` holds the prompt tokens prefilled, the tokens emitted by decode steps and the
    requests served over the timed runs. Net joules (idle power subtracted) when the profiler
    measured a baseline, gross otherwise; the short-window count says how many windows were
    shorter than the counter's update period (estimated from instant power).
    """
    from effbench.profilers.energy import phase_energy

    mine = [w for w in windows if w.path.startswith("tech/")]
    phases = phase_energy(mine)
    joules = {}
    for phase, p in phases.items():
        j = p.net_joules if p.net_joules is not None else p.joules
        if j is None:
            return []
        joules[phase] = (j, {"short_windows": float(p.short_windows)})
    out: list[Metric] = []
    if "prefill" in joules and tokens["prefill_tokens"]:
        j, extra = joules["prefill"]
        out.append(scalar("energy_per_token_prefill", j / tokens["prefill_tokens"], "J/token",
                          "lower", extra))
    if "decode" in joules and tokens["decode_tokens"]:
        j, extra = joules["decode"]
        out.append(scalar("energy_per_token_decode", j / tokens["decode_tokens"], "J/token",
                          "lower", extra))
    total = sum(j for j, _ in joules.values())
    if out and tokens["requests"]:
        out.append(scalar("energy_per_request", total / tokens["requests"], "J", "lower"))
    return out


def kv_memory(ctx: RunContext, comp: Components) -> list[Metric]:
    """KV bytes per token measured from the real tensors after prefilling the eval prompts."""
    layout = layout_of(ctx.model)
    total_bytes, total_tokens = 0, 0
    with torch.inference_mode():
        for p, c in ctx.workload_tokens[: ctx.preset.engine.batch]:
            cache = comp.cache.new_cache(layout)
            run_forward(ctx.model, comp.attention, [Feed(cache, p + c, 0, "none")])
            total_bytes += cache.nbytes()
            total_tokens += len(p) + len(c)
    return [scalar("kv_bytes_per_token", total_bytes / total_tokens, "B", "lower")]


def decoding_metrics(res: EngineResult, baseline: EngineResult | None) -> list[Metric]:
    st = res.decoder_stats
    out = [scalar("tokens_per_step", st.get("tokens_per_step", 1.0), "tokens", "higher")]
    if "acceptance_rate" in st:
        out.append(scalar("acceptance_rate", st["acceptance_rate"], "fraction", "higher"))
    if "acceptance_alpha" in st:
        out.append(scalar("acceptance_alpha", st["acceptance_alpha"], "fraction", "higher"))
    if st.get("decode_steps") and "drafts_accepted" in st:
        out.append(scalar("accepted_per_step", st["drafts_accepted"] / st["decode_steps"],
                          "tokens", "higher"))  # fmt: skip
    if "storage_bytes" in st:
        out.append(scalar("draft_state_bytes", float(st["storage_bytes"]), "B", "lower"))
    step_s = sum(s.end_ns - s.start_ns for s in res.steps) / 1e9
    if "accept_rollback_s" in st and step_s > 0:
        out.append(scalar("rollback_share", st["accept_rollback_s"] / step_s, "fraction",
                          "lower"))  # fmt: skip
    if baseline is not None:
        same = sum(a.output == b.output for a, b in zip(res.requests, baseline.requests))
        out.append(scalar("exact_match", same / len(res.requests), "fraction", "higher"))
    return out


def run(case: Case, ctx: RunContext) -> list[Metric]:
    """Speed, then what the technique's engine slot changes: output agreement for a decoder
    (against the slot's baseline run side by side; none for the baseline itself), quality and
    KV memory for attention and cache techniques.
    """
    fam = get_family(case.family)
    if "engine" not in fam.levels or fam.engine_slot not in ("attention", "cache", "decoder"):
        raise ValueError(f"family {case.family} has no engine level")
    comp = components(case.family, case.technique, case.param_dict)
    metrics, runs = speed(ctx, case, comp)
    if fam.engine_slot == "decoder":
        metrics += decoding_metrics(runs["result"], runs["baseline"])
        if isinstance(comp.decoder(), Speculative):
            metrics += sampling_check(ctx)
    else:
        metrics += quality(ctx, case, comp)
        metrics += kv_memory(ctx, comp)
        if ctx.preset.engine.kv_memory_cap:
            metrics += capacity(ctx, comp)
    return metrics


def sampling_check(ctx: RunContext) -> list[Metric]:
    """The speculative rejection rule's output distribution on the real models (chi-square,
    effbench.suite.levels.speculative_check), on the first eval prompt.
    """
    from effbench.suite.levels.speculative_check import rejection_rule_pvalue

    prompt = ctx.eval_tokens[0][0]
    pvalue = rejection_rule_pvalue(ctx.model, ctx.draft, prompt, seed=ctx.preset.run.seed)
    return [scalar("rejection_rule_pvalue", pvalue, "p", "higher")]


def capacity(ctx: RunContext, comp: Components) -> list[Metric]:
    """The largest batch the engine's admission runs when KV memory is capped.

    Every eval prompt (``prompts`` of them) is queued at once with no batch limit but the
    cap; the scheduler admits what fits (``Budget.fits``) and the engine preempts by
    recompute when running requests outgrow it. The most requests in one iteration is what a
    compressed cache buys (KIVI: "up to 4x larger batch size").
    """
    e = ctx.preset.engine
    prompts = [p for p, _ in ctx.workload_tokens[: e.prompts]]
    engine = Engine(
        ctx.model, attention=comp.attention, cache_factory=comp.cache,
        scheduler=ContinuousBatching(), decoder=comp.decoder(),
        config=EngineConfig(max_batch=len(prompts), max_tokens=max(4096, sum(map(len, prompts))),
                            kv_memory_cap=e.kv_memory_cap),
    )
    res = engine.run([Request(i, p, e.max_new_tokens) for i, p in enumerate(prompts)])
    return [
        scalar("max_batch_under_cap", max(s.batch for s in res.steps), "requests", "higher",
               {"kv_memory_cap": float(e.kv_memory_cap)}),
        scalar("preemptions_under_cap", res.preemptions, "count", "lower"),
    ]
