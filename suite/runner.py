"""The runner: validate everything, expand the sweep, run each case, journal its records.

Order of work, so that bad input fails before any measurement: preset (already validated on
load), device, model and draft paths, results folder; then cases run one by one. A case that
raises (out of memory included) or yields a NaN is recorded as failed with its error, and the
sweep goes on. Each case's records are journaled as soon as it ends, so a killed run loses no
finished case, and ``resume`` skips the cases a run already holds. A fixed reference workload,
the canary (effbench.suite.canary), is timed at the start, between cases every 30 s and at the
end, into the manifest, so the gate can tell a slower machine from slower code.

Cases run in this process (the local executor, the default) or as one Ray task each
(``--executor ray``, effbench.suite.ray_executor); both measure a case with ``measure_case``
and this process journals every result as it arrives (``_drive``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from effbench.kernels_ref.compiled import check_mode
from effbench.profilers.interference import Observation, make_observer
from effbench.suite import artifacts as case_artifacts
from effbench.suite import canary as run_canaries
from effbench.suite import registry
from effbench.suite.cases import Case, expand
from effbench.suite.context import (
    RunContext,
    check_model,
    check_same_tokenizer,
    check_workload,
    load_model,
)
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
from effbench.suite.threads import ThreadChoice, apply_threads, choose_threads

if TYPE_CHECKING:  # pragma: no cover
    from effbench.profilers.base import ProfileResult

LEVEL_RUNNERS: dict[str, Callable[[Case, RunContext], list[Metric]]] = {
    "kernel": kernel_level.run,
    "engine": engine_level.run,
    "serving": serving_level.run,
}


EXECUTORS = ("local", "ray")
"""Where cases run: ``local`` (in this process, one by one) or ``ray`` (one Ray task per case,
effbench.suite.ray_executor); the records are journaled by this process either way."""


@dataclass(frozen=True)
class RunOutcome:
    store: RunStore
    cases: int
    skipped: int
    failed: int
    wall_s: float


@dataclass(frozen=True)
class CasePlace:
    """Where one case's records and files belong: the run's id and a run folder.

    The local runner passes its ``RunStore`` (which has both attributes); a Ray worker passes
    one of these with a scratch folder of its own as ``run_dir``, whose ``artifacts/`` it ships
    back to the driver with the records (effbench.suite.ray_task).
    """

    run_id: str
    run_dir: Path


@dataclass(frozen=True)
class CaseOutcome:
    """What one case produced: its records (stamped, ready to journal as one batch), whether it
    failed (then ``records`` is its one ``error`` record) and whether it was measured noisy.
    """

    records: list[Record]
    failed: bool
    noisy: bool


def with_overrides(preset: Preset, **run_fields: object) -> Preset:
    """The preset with some [run] settings replaced (CLI flags); None values are ignored."""
    given = {k: v for k, v in run_fields.items() if v is not None}
    return dataclasses.replace(preset, run=dataclasses.replace(preset.run, **given))


def filter_cases(
    cases: list[Case], techniques: list[str] | None, levels: list[str] | None
) -> list[Case]:
    if techniques:
        endpoints = {c.technique for c in cases if c.endpoint}  # [serving] endpoint_name
        for t in techniques:
            if t not in endpoints:
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
    if (not case.endpoint and "cuda" in registry.get(case.technique).requires
            and ctx.device.type != "cuda"):
        raise RuntimeError(f"technique {case.technique} requires a CUDA device")
    metrics = LEVEL_RUNNERS[case.level](case, ctx)
    bad = [m.metric for m in metrics if isinstance(m.value, float) and math.isnan(m.value)]
    if bad:
        raise ValueError(f"metric(s) {bad} came out NaN")
    return metrics


def _observed(observe: Callable[[], Any], case: Case, ctx: RunContext
              ) -> tuple[list[Metric], Observation]:
    """One timed pass of ``case`` inside a fresh interference observer.

    The observer never fails the case: one whose construction, ``start()`` or ``stop()``
    raises gives an observation that says so (``unavailable``) and is not noisy.
    """
    try:
        watcher = observe()
        watcher.start()
    except Exception as e:  # noqa: BLE001 - an observer never fails a case
        watcher, broken = None, f"the observer raised {type(e).__name__}: {e}"
    try:
        metrics = run_case(case, ctx)
    finally:
        if watcher is not None:
            try:
                watcher.stop()
                seen = watcher.observation
            except Exception as e:  # noqa: BLE001
                seen = Observation(unavailable=(f"stop() raised {type(e).__name__}: {e}",))
        else:
            seen = Observation(unavailable=(broken,))
    return metrics, seen


def _timed(
    case: Case, ctx: RunContext, observe: Callable[[], Any], retries: int,
    choice: ThreadChoice, log: Callable[[str], None],
) -> tuple[list[Metric], Observation, int]:
    """The case's timed pass, observed; re-measured while noisy, up to ``retries`` more times.

    Returns the metrics of the cleanest attempt (the least interference, ``Observation.score``;
    the earlier on a tie), its observation, and how many timed passes ran. A quiet attempt ends
    the loop. The first attempt raising fails the case as before; a re-measurement raising ends
    the retries and keeps the best attempt so far, so nothing measured is lost. torch's thread
    count is re-applied before each pass in case a level or profiler changed it.
    """
    best: tuple[list[Metric], Observation] | None = None
    attempts = 0
    for attempt in range(1 + retries):
        if torch.get_num_threads() != choice.threads:
            torch.set_num_threads(choice.threads)
        attempts += 1
        try:
            metrics, seen = _observed(observe, case, ctx)
        except Exception as e:
            if best is None:
                raise
            log(f"re-measuring {case.case_id} raised {type(e).__name__}: {e}; keeping the "
                "cleanest earlier attempt")
            break
        if best is None or seen.score < best[1].score:
            best = (metrics, seen)
        if not seen.noisy:
            break
        if attempt < retries:
            log(f"noisy: {case.case_id}: {seen.reason}; re-measuring "
                f"(attempt {attempt + 2} of at most {retries + 1})")
    assert best is not None  # the first attempt either returned or raised
    return best[0], best[1], attempts


def _interference_records(case: Case, device: str, run_id: str, seen: Observation,
                          attempts: int) -> list[Record]:
    """The observation as ``interference.<x>`` records, plus ``interference.attempts``; a part
    that could not be observed is one ``skipped`` ``interference.unavailable`` record.
    """
    readings = [profiler_reading(f"interference.{name}", value, unit)
                for name, (value, unit) in seen.metrics.items()]
    readings.append(profiler_reading("interference.attempts", float(attempts), "count"))
    recs = _records(case, device, run_id, readings)
    if seen.unavailable:
        recs.append(_not_measured(case, device, run_id, "interference.unavailable", "skipped",
                                  "; ".join(seen.unavailable)))
    return recs


def _stamped(records: list[Record], choice: ThreadChoice, seen: Observation | None,
             attempts: int) -> list[Record]:
    """Every record of a case with the run's ``threads`` in its stats, and, when the case was
    observed, ``noisy`` (1.0 or 0.0) and ``attempts``: so a record read alone says both.
    """
    extra: dict[str, Any] = {"threads": choice.threads}
    if seen is not None:
        extra.update(noisy=1.0 if seen.noisy else 0.0, attempts=attempts)
    return [dataclasses.replace(r, stats={**r.stats, **extra}) for r in records]


def measure_case(
    case: Case, ctx: RunContext, place: RunStore | CasePlace, index: int, *, label: str,
    choice: ThreadChoice, observe: Callable[[], Any], retry_noisy: int = 0,
    profile: list[str] | None = None, log: Callable[[str], None] = print,
) -> CaseOutcome:
    """Run one case and return its records: the one place both executors measure a case.

    The local executor calls it in the runner's process; the Ray executor calls it inside a
    Ray worker (effbench.suite.ray_task) and journals what it returns on the driver. The
    case's timed pass is observed and re-measured while noisy (``_timed``), profiled in a
    second pass when ``profile`` names profilers (``_profiled``); a level may write files under
    ``<place.run_dir>/artifacts/<index>/`` (effbench.suite.artifacts). A case that raises (out
    of memory included) or yields a NaN becomes one failed ``error`` record; this never raises
    for the case's own errors, so the sweep goes on.
    """
    # where a level may write files of its own for this case (effbench.suite.artifacts)
    ctx.memo[case_artifacts.KEY] = case_artifacts.CaseArtifacts(place.run_dir, index)
    seen, attempts, failed, noisy = None, 0, False, False
    try:
        measured, seen, attempts = _timed(case, ctx, observe, retry_noisy, choice, log)
        noisy = seen.noisy
        if profile:
            recs = _profiled(case, ctx, label, place, profile, index, measured)
        else:
            recs = _records(case, label, place.run_id, measured)
        recs += _interference_records(case, label, place.run_id, seen, attempts)
    except Exception as e:  # noqa: BLE001 - every failure is recorded, the sweep goes on
        failed = True
        if isinstance(e, torch.OutOfMemoryError):
            torch.cuda.empty_cache()
        where = traceback.extract_tb(e.__traceback__)[-1]
        msg = f"{type(e).__name__}: {e} ({where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
        recs = [_not_measured(case, label, place.run_id, "error", "failed", msg)]
        log(f"case failed: {case.case_id}: {msg}")
    finally:
        ctx.memo.pop(case_artifacts.KEY, None)
    return CaseOutcome(_stamped(recs, choice, seen, attempts), failed, noisy)


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
    threads: int | str | None = None,
    retry_noisy: int = 0,
    observer: Callable[[], Any] | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    ray_retries: int = 2,
) -> RunOutcome:
    """Run (or resume) a preset and return where its records are.

    ``profile`` names profilers (``effbench.profilers.registry``) attached to every case; each
    case's
    artifacts (traces, py-spy output) go under ``<run>/artifacts/<case index>/``.

    ``threads`` (``--threads``: a count or ``auto``) overrides the preset's ``[run] threads``
    (effbench.suite.threads.choose_threads); the count is validated before anything runs, set
    in torch before the first case, written to the manifest (``threads``) and to every
    record's ``stats["threads"]``. Every case's timed pass is observed for interference
    (``observer``: a factory of effbench.profilers.interference observers, the real one by
    default); a case marked noisy is re-measured up to ``retry_noisy`` times (``_timed``).

    ``executor`` is ``local`` (each case in this process, in order) or ``ray``: one Ray task
    per case on the cluster at ``ray_address`` (else ``RAY_ADDRESS``, else a local cluster on
    127.0.0.1), a task lost with its worker retried ``ray_retries`` times
    (effbench.suite.ray_executor). Either way this process journals each case's records into
    the one run store as the case ends, so ``resume`` works the same.
    """
    if isinstance(retry_noisy, bool) or not isinstance(retry_noisy, int) or retry_noisy < 0:
        raise ConfigError(f"--retry-noisy must be an integer >= 0, got {retry_noisy!r}",
                          "--retry-noisy")
    if executor not in EXECUTORS:
        raise ConfigError(f"unknown executor {executor!r}; valid executors: {list(EXECUTORS)}",
                          "--executor")
    if ray_address and executor != "ray":
        raise ConfigError("--address names a Ray cluster: it needs --executor ray", "--address")
    cluster = None
    if executor == "ray":  # ray installed and the options sane, before anything else
        from effbench.suite import ray_executor

        cluster = ray_executor.RayExecutor(ray_address, ray_retries, log=log)
    threads_where = f"{preset.path}: [run] threads"
    # the thread count is this machine's unless the cases run on a cluster not started here,
    # whose nodes are known only once connected (RayExecutor.choose_threads)
    choice = (choose_threads(threads, preset.run.threads, setting_where=threads_where)
              if cluster is None or cluster.starts_local else None)
    # under Ray the cases' device is the cluster's (checked once connected); the driver only
    # reads model configs, for which the CPU will do
    device = resolve_device(preset.run.device) if cluster is None else torch.device("cpu")
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
            if any("draft-model" in registry.get(c.technique).requires for c in cases
                   if not c.endpoint):
                check_model(preset.run.draft)
                check_same_tokenizer(preset.run.model, preset.run.draft)
        except ValueError as e:
            raise ConfigError(str(e), "--model") from None
        shapes = RunContext(preset, device, dtype)  # reads configs and tokenizers, no weights
        if any(c.level == "engine" for c in cases):
            try:
                check_workload(shapes)
            except ValueError as e:
                raise ConfigError(str(e), f"{preset.path}: [engine] workload") from None
            try:
                check_mode(preset.engine.compile, device)
            except ValueError as e:
                raise ConfigError(str(e), f"{preset.path}: [engine] compile") from None
        if any(c.level == "serving" and not c.endpoint for c in cases):  # prompt + output
            serving_level.check_lengths(  # within the positions
                preset, shapes.model_config.max_position_embeddings)
        if any(c.endpoint for c in cases):  # the server answers and takes the request fields
            from effbench.suite.levels.serving_endpoint import preflight

            preflight(preset)
    drive = functools.partial(
        _drive, preset, cases, cluster, results=results, resume=resume, progress=progress,
        profile=profile, log=log, retry_noisy=retry_noisy, observer=observer, device=device,
        dtype=dtype)
    if cluster is None:
        return drive(choice=choice)
    with cluster:  # connected (or a local cluster started) before the run folder is made
        if choice is None:
            choice = cluster.choose_threads(threads, preset.run.threads, threads_where)
        cluster.check(preset.run.device, choice.threads, cases)
        return drive(choice=choice)


def _drive(
    preset: Preset, cases: list[Case], cluster: Any, *, results: str, resume: str | None,
    progress: bool, profile: list[str] | None, log: Callable[[str], None],
    choice: ThreadChoice, retry_noisy: int, observer: Callable[[], Any] | None,
    device: torch.device, dtype: torch.dtype,
) -> RunOutcome:
    """Open the run store, run the cases not yet journaled, journal each as it ends, finalize.

    ``cluster`` is None for the local executor, else a connected ``RayExecutor``: its results
    arrive in the order the cases end and are journaled here all the same.
    """
    applied = apply_threads(choice.threads)  # before any case, canary or model load
    log(choice.describe())
    config = {"preset": preset.path, "run": dataclasses.asdict(preset.run),
              "cases": [c.case_id for c in cases],
              "threads": {**choice.to_json(), "torch": applied}}
    if cluster is not None:  # the cluster, its nodes and the device the cases run on
        config["executor"] = cluster.describe()
        config["device"] = cluster.device
    store = RunStore.open(results, resume) if resume else RunStore.create(
        results, preset.run.name, config
    )
    done = store.completed_cases()
    todo = [c for c in cases if c.case_id not in done]
    noisy = 0
    failed = 0
    t0 = time.perf_counter()
    if done:
        log(f"resuming {store.run_id}: {len(cases) - len(todo)} case(s) already done")
    index = {c.case_id: i for i, c in enumerate(cases)}
    # the machine's control group: a fixed workload timed at the start, between cases every
    # interval_s and at the end, into the manifest (effbench.suite.canary); never raises.
    # Under Ray it times the driver's machine, at the start and the end only
    canaries = run_canaries.CanaryLog(
        store, log=log, budget_s=min(run_canaries.BUDGET_S, preset.run.case_budget_s))
    canaries.run("start")
    bar = tqdm(total=len(todo), desc=preset.run.name, unit="case", disable=not progress,
               leave=False)
    if cluster is None:
        outcomes = _local_outcomes(todo, preset, store, index, bar, canaries, profile=profile,
                                   log=log, choice=choice, retry_noisy=retry_noisy,
                                   observer=observer, device=device, dtype=dtype)
    else:
        outcomes = cluster.outcomes(todo, preset, store, index, profile=profile,
                                    choice=choice, retry_noisy=retry_noisy)
    for case, out in outcomes:
        failed += out.failed
        noisy += out.noisy
        store.append(out.records)  # journaled as each case ends, whichever executor ran it
        bar.update()
        bar.set_postfix_str(f"{case.level}:{case.technique}", refresh=True)
    bar.close()
    if preset.tklqt_sweep is not None:
        failed += _tklqt_sweep(preset, store, done, device, dtype, log)
    canaries.run("end")
    if noisy:
        log(f"{noisy} case(s) measured under interference (marked ~ in the report)"
            + ("" if retry_noisy else "; --retry-noisy N re-measures them"))
    store.finalize()
    return RunOutcome(store, len(cases), len(cases) - len(todo), failed,
                      time.perf_counter() - t0)


def _tklqt_sweep(
    preset: Preset, store: RunStore, done: set[str], device: torch.device, dtype: torch.dtype,
    log: Callable[[str], None],
) -> int:
    """Run the preset's ``[profile.tklqt]`` sweeps into the run; return how many of their
    cases failed. A resumed run keeps the compile modes it already has.

    They run in this process on the run's device (under Ray: the driver's), after the cases,
    so the profiler and the warm-ups never share the machine with a timed case.
    """
    from effbench.suite.profiling import CASE_PREFIX, preset_sweep_cases

    have = {c.rsplit("@", 1)[1].split("/", 1)[0] for c in done if c.startswith(CASE_PREFIX)}
    model, _ = load_model(preset.run.model, device, dtype, preset.run.seed)
    cases = preset_sweep_cases(preset.tklqt_sweep, model, device, store.run_id,
                               describe(device), store.run_dir / "artifacts" / "tklqt", log,
                               skip=have)
    for recs in cases:
        store.append(recs)
    return sum(any(r.status == "error" for r in recs) for recs in cases)


def _local_outcomes(
    todo: list[Case], preset: Preset, store: RunStore, index: dict[str, int], bar: Any,
    canaries: run_canaries.CanaryLog, *, profile: list[str] | None,
    log: Callable[[str], None], choice: ThreadChoice, retry_noisy: int,
    observer: Callable[[], Any] | None, device: torch.device, dtype: torch.dtype,
) -> Iterator[tuple[Case, CaseOutcome]]:
    """The local executor: each case in this process, in order, a canary between when due."""
    ctx = RunContext(preset, device, dtype)
    observe = observer or (lambda: make_observer(choice.threads, choice.usable_cores,
                                                 str(device)))
    label = describe(device)
    for case in todo:
        canaries.maybe_between()
        bar.set_postfix_str(f"{case.level}:{case.technique}", refresh=True)
        yield case, measure_case(case, ctx, store, index[case.case_id], label=label,
                                 choice=choice, observe=observe, retry_noisy=retry_noisy,
                                 profile=profile, log=log)


def _profiled(
    case: Case, ctx: RunContext, label: str, store: RunStore | CasePlace, names: list[str],
    index: int,
    measured: list[Metric] | None = None,
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

    if measured is None:  # pass 1: timed, nothing attached (``run`` gives it, observed)
        measured = run_case(case, ctx)
    ctx.memo.pop(case_artifacts.KEY, None)  # pass 2 must not overwrite pass 1's level files
    artifacts = case_artifacts.CaseArtifacts(store.run_dir, index).dir
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
