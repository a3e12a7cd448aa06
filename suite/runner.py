"""The runner: validate everything, expand the sweep, run each case, journal its records.

Order of work, so that bad input fails before any measurement: preset (already validated on
load), device, model and draft paths, results folder; then cases run one by one. A case that
raises (out of memory included) or yields a NaN is recorded as failed with its error, and the
sweep goes on. Each case's records are journaled as soon as it ends, so a killed run loses no
finished case, and ``resume`` skips the cases a run already holds.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from effbench.suite import registry
from effbench.suite.cases import Case, expand
from effbench.suite.context import RunContext, check_model
from effbench.suite.devices import describe, resolve_device, resolve_dtype
from effbench.suite.errors import ConfigError
from effbench.suite.family import get_family
from effbench.suite.levels import Metric, profiler_reading
from effbench.suite.levels import engine as engine_level
from effbench.suite.levels import kernel as kernel_level
from effbench.suite.levels import serving as serving_level
from effbench.suite.presets import Preset
from effbench.suite.records import Record
from effbench.suite.store import RunStore, check_writable

if TYPE_CHECKING:  # pragma: no cover
    from effbench.profilers.base import ProfileResult

LEVEL_RUNNERS: dict[str, Callable[[Case, RunContext], list[Metric]]] = {
    "kernel": kernel_level.run,
    "engine": engine_level.run,
    "serving": serving_level.run,
}


@dataclass(frozen=True)
class RunOutcome:
    store: RunStore
    cases: int
    skipped: int
    failed: int
    wall_s: float


def with_overrides(preset: Preset, **run_fields: object) -> Preset:
    """The preset with some [run] settings replaced (CLI flags); None values are ignored."""
    given = {k: v for k, v in run_fields.items() if v is not None}
    return dataclasses.replace(preset, run=dataclasses.replace(preset.run, **given))


def filter_cases(
    cases: list[Case], techniques: list[str] | None, levels: list[str] | None
) -> list[Case]:
    if techniques:
        for t in techniques:
            registry.get(t, "--technique")
        cases = [c for c in cases if c.technique in techniques]
    if levels:
        cases = [c for c in cases if c.level in levels]
    if not cases:
        raise ConfigError("no case left to run after --technique/--level filtering")
    return cases


def _record(case: Case, device: str, run_id: str, **fields: Any) -> Record:
    """A record carrying the case's identity; ``fields`` give the metric and its outcome."""
    return Record(run_id=run_id, case_id=case.case_id, technique=case.technique,
                  family=case.family, level=case.level, params=case.param_dict,
                  workload=case.workload, device=device, created_ns=time.time_ns(), **fields)


def _records(case: Case, device: str, run_id: str, metrics: list[Metric]) -> list[Record]:
    return [
        _record(case, device, run_id, metric=m.metric, value=m.value, unit=m.unit,
                direction=m.direction, samples=m.samples, stats=m.stats)
        for m in metrics
    ]


def _not_measured(case: Case, device: str, run_id: str, metric: str, status: str,
                  error: str) -> Record:
    """A failed case (``error``) or an unavailable profiler (``skipped``), with the reason."""
    return _record(case, device, run_id, metric=metric, value=math.nan, unit="",
                   direction="lower", status=status, error=error)


def _profiler_records(
    case: Case, device: str, run_id: str, results: list[ProfileResult]
) -> list[Record]:
    """Profiler metrics as records named ``profiler.metric``; the ones that did not run, skipped.

    A profiler result carries no direction: it is the one the profilers declare
    (effbench.profilers.metrics); an undeclared reading is better lower unless it is a rate.

    A profiler that could not run here becomes one ``skipped`` record ``<profiler>.unavailable``
    with the reason in ``error``; one that broke (its ``start()`` or ``stop()`` raised, or the
    profiled pass failed under it) becomes one ``skipped`` record ``<profiler>.error`` with the
    error text. ``skipped``, not ``failed``: a failed record marks the whole case failed (case
    counts, gate verdict, no retry on resume), while the case's own measurement is intact.
    """
    metrics, skipped = [], []
    for r in results:
        if r.unavailable or r.error:
            what, why = ("unavailable", r.unavailable) if r.unavailable else ("error", r.error)
            skipped.append(_not_measured(case, device, run_id, f"{r.profiler}.{what}",
                                         "skipped", why))
            continue
        for name, (value, unit) in r.metrics.items():
            metrics.append(profiler_reading(f"{r.profiler}.{name}", value, unit))
    return _records(case, device, run_id, metrics) + skipped


def run_case(case: Case, ctx: RunContext) -> list[Metric]:
    """Run one case; a NaN metric turns the case into a failure (ValueError)."""
    if "cuda" in registry.get(case.technique).requires and ctx.device.type != "cuda":
        raise RuntimeError(f"technique {case.technique} requires a CUDA device")
    metrics = LEVEL_RUNNERS[case.level](case, ctx)
    bad = [m.metric for m in metrics if isinstance(m.value, float) and math.isnan(m.value)]
    if bad:
        raise ValueError(f"metric(s) {bad} came out NaN")
    return metrics


def run(
    preset: Preset,
    *,
    results: str = "results",
    resume: str | None = None,
    techniques: list[str] | None = None,
    levels: list[str] | None = None,
    progress: bool = True,
    profile: list[str] | None = None,
    log: Callable[[str], None] = print,
) -> RunOutcome:
    """Run (or resume) a preset and return where its records are.

    ``profile`` names profilers (``effbench.profilers.registry``) attached to every case; each
    case's
    artifacts (traces, py-spy output) go under ``<run>/artifacts/<case index>/``.
    """
    device = resolve_device(preset.run.device)
    dtype = resolve_dtype(preset.run.dtype, device)
    cases = filter_cases(expand(preset, preset.run.device), techniques, levels)
    check_writable(Path(results))
    if profile:
        from effbench.profilers.registry import PROFILERS

        bad = [p for p in profile if p not in PROFILERS]
        if bad:
            raise ConfigError(
                f"unknown profiler {bad[0]!r}; valid profilers: {sorted(PROFILERS)}", "--profile"
            )
    needs_model = any(
        c.level != "kernel" or get_family(c.family).kernel_needs_model for c in cases
    )
    if needs_model:
        try:
            check_model(preset.run.model)
            if any("draft-model" in registry.get(c.technique).requires for c in cases):
                check_model(preset.run.draft)
        except ValueError as e:
            raise ConfigError(str(e), "--model") from None
    config = {"preset": preset.path, "run": dataclasses.asdict(preset.run),
              "cases": [c.case_id for c in cases]}
    store = RunStore.open(results, resume) if resume else RunStore.create(
        results, preset.run.name, config
    )
    done = store.completed_cases()
    todo = [c for c in cases if c.case_id not in done]
    if preset.run.threads:
        torch.set_num_threads(preset.run.threads)
    ctx = RunContext(preset, device, dtype)
    label = describe(device)
    failed = 0
    t0 = time.perf_counter()
    if done:
        log(f"resuming {store.run_id}: {len(cases) - len(todo)} case(s) already done")
    index = {c.case_id: i for i, c in enumerate(cases)}
    bar = tqdm(todo, desc=preset.run.name, unit="case", disable=not progress, leave=False)
    for case in bar:
        bar.set_postfix_str(f"{case.level}:{case.technique}", refresh=True)
        try:
            if profile:
                recs = _profiled(case, ctx, label, store, profile, index[case.case_id])
            else:
                recs = _records(case, label, store.run_id, run_case(case, ctx))
        except Exception as e:  # noqa: BLE001 - every failure is recorded, the sweep goes on
            failed += 1
            if isinstance(e, torch.OutOfMemoryError):
                torch.cuda.empty_cache()
            where = traceback.extract_tb(e.__traceback__)[-1]
            msg = f"{type(e).__name__}: {e} ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
            recs = [_not_measured(case, label, store.run_id, "error", "failed", msg)]
            log(f"case failed: {case.case_id}: {msg}")
        store.append(recs)
    bar.close()
    store.finalize()
    return RunOutcome(store, len(cases), len(cases) - len(todo), failed,
                      time.perf_counter() - t0)


def _profiled(
    case: Case, ctx: RunContext, label: str, store: RunStore, names: list[str], index: int
) -> list[Record]:
    """Run a case timed with no profiler attached, then once more under the profilers.

    Pass 1 is exactly an unprofiled run (``run_case``): every timing and quality metric of
    the case comes from it, so profiler overhead (a trace, a sampling thread, an idle-power
    baseline, py-spy) never lands inside the timed repeats. Pass 2 runs the case again inside
    ``collect(profilers)``, the way pytest-benchmark runs cProfile in a separate pass; its own
    timings are discarded. From pass 2 only what pass 1 cannot give is kept: the profilers'
    metrics and artifacts (``_profiler_records``), and the metrics the case emits only because
    a profiler is attached (names absent from pass 1).

    The energy profiler is the one such case: when it started, it is handed to the level as
    ``ctx.memo["energy"]`` during pass 2 only, the engine level measures its prefill and decode
    phases as windows, and returns ``energy_per_token_*`` and ``energy_per_request``. Those
    come from pass 2, which is right: energy is what is measured there, over the same work as
    pass 1 (with the overhead of any other profiler attached in the same pass included).

    A profiler never fails or distorts the case. One whose ``start()`` or ``stop()`` raises
    gets a ``skipped`` ``<profiler>.error`` record with the error text (``collect`` catches
    it); if pass 2 itself raises, pass 1's records are kept and every profiler that ran gets
    such a record naming that error. Only pass 1 raising fails the case, as without profilers.
    Profiling thus costs a second run of each case.
    """
    from effbench.profilers import ProfileResult, collect
    from effbench.profilers.base import Collected
    from effbench.profilers.registry import build

    measured = run_case(case, ctx)  # pass 1: timed, nothing attached
    artifacts = store.run_dir / "artifacts" / f"{index:04d}"
    artifacts.mkdir(parents=True, exist_ok=True)
    profs = build(names, str(ctx.device), artifacts)
    got, extra = Collected(), []
    try:
        with collect(profs) as got:  # pass 2: profiled, its timings discarded
            energy = next((p for p in got.started if p.name == "energy"), None)
            if energy is not None:
                ctx.memo["energy"] = energy  # the engine level measures its phases in windows
            try:
                again = run_case(case, ctx)
            finally:
                ctx.memo.pop("energy", None)
    except Exception as e:  # noqa: BLE001 - the profiled pass never fails a measured case
        if isinstance(e, torch.OutOfMemoryError):
            torch.cuda.empty_cache()
        why = f"profiled pass raised {type(e).__name__}: {e}"
        results = [r if r.unavailable or r.error else ProfileResult(r.profiler, error=why)
                   for r in got.results]
    else:
        have = {m.metric for m in measured}
        extra = [m for m in again if m.metric not in have]
        results = got.results
    return _records(case, label, store.run_id, measured + extra) + _profiler_records(
        case, label, store.run_id, results
    )
