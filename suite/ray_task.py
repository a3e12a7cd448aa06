"""The Ray executor's task: one case, run inside a Ray worker, returned as plain data.

One job: the worker side. ``run_case`` rebuilds what the local runner has in its process (the
run context with its models, the thread count, the interference observer), calls the same
``runner.measure_case`` the local executor calls, and returns a ``TaskResult`` as a plain dict:
the case's records as JSON rows (stamped with the worker's host, Ray node id and pid), the lines
it logged, and the small files it wrote under its artifacts folder (serving timelines, profiler
traces) as bytes, because the driver that journals the records may be on another machine.

Files are written to a scratch folder of the worker, never into the driver's run folder (which
need not exist on this host): the run folder's layout is kept inside it
(``artifacts/<index>/...``), so the paths the records name hold on the driver once the bytes
are written there. Files beyond ``MAX_SHIP_BYTES`` per case stay on the worker, in a folder the
result names. A case's own errors never raise here (``measure_case`` records them), so a Ray
retry happens only when the worker itself is lost.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

MAX_SHIP_BYTES = 32 * 1024 * 1024
"""Artifact bytes one case may send back with its records; the rest stay on the worker."""

_CONTEXTS: dict[tuple[str, str, str], Any] = {}
"""The run context of the latest run this worker served, so models and baselines load once per
worker process rather than once per case (Ray reuses a worker for many tasks)."""


@dataclass(frozen=True)
class TaskSpec:
    """Everything a worker needs for one case besides the preset (sent once, by reference)."""

    case: Any  # effbench.suite.cases.Case
    run_id: str
    index: int
    device: str  # cpu or cuda, resolved by the driver for the whole cluster
    choice: Any  # effbench.suite.threads.ThreadChoice
    retry_noisy: int = 0
    profile: tuple[str, ...] = ()


@dataclass
class TaskResult:
    """What a task sends back (as ``to_json``): plain data only, nothing effbench-typed."""

    rows: list[dict[str, Any]]
    failed: bool
    noisy: bool
    host: str
    node_id: str
    pid: int
    wall_s: float
    log: list[str] = field(default_factory=list)
    artifacts: dict[str, bytes] = field(default_factory=dict)
    left_on_worker: str = ""

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _node_id() -> str:
    try:
        import ray

        return str(ray.get_runtime_context().get_node_id())
    except Exception:  # noqa: BLE001 - run outside Ray (a test): no node id
        return ""


def _context(preset: Any, spec: TaskSpec) -> Any:
    """The run context of this worker for the run: made on its first case, kept after."""
    from effbench.suite.context import RunContext
    from effbench.suite.devices import resolve_device, resolve_dtype

    # Ray sets CUDA_VISIBLE_DEVICES to the GPU it gave the task, so ``cuda`` is that GPU
    key = (spec.run_id, spec.device, str(preset.run.dtype))
    ctx = _CONTEXTS.get(key)
    if ctx is None:
        _CONTEXTS.clear()  # one run at a time: drop an earlier run's models
        device = resolve_device(spec.device)
        ctx = RunContext(preset, device, resolve_dtype(preset.run.dtype, device))
        _CONTEXTS[key] = ctx
    return ctx


def collect_artifacts(
    scratch: Path, limit: int = MAX_SHIP_BYTES
) -> tuple[dict[str, bytes], list[str]]:
    """The files under ``scratch/artifacts/`` as ``{path relative to scratch: bytes}``, smallest
    first while they fit in ``limit`` bytes; and the relative paths of the ones that did not.
    """
    root = scratch / "artifacts"
    files = sorted((p for p in root.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    shipped: dict[str, bytes] = {}
    left: list[str] = []
    total = 0
    for path in files:
        rel = path.relative_to(scratch).as_posix()
        size = path.stat().st_size
        if total + size > limit:
            left.append(rel)
            continue
        shipped[rel] = path.read_bytes()
        total += size
    return shipped, left


def run_case(preset: Any, spec: TaskSpec) -> dict[str, Any]:
    """Run one case in this worker and return its ``TaskResult`` as a plain dict.

    ``preset`` arrives through Ray's object store (put once by the driver). The records are
    ``runner.measure_case``'s, each with ``stats`` ``host``, ``ray_node_id`` and
    ``worker_pid`` added, as JSON rows (``store_rows``), so the driver journals them as is.
    """
    from effbench.profilers.interference import make_observer
    from effbench.suite import runner
    from effbench.suite.devices import describe
    from effbench.suite.store_rows import _record_to_row
    from effbench.suite.threads import apply_threads, usable_cores

    t0 = time.perf_counter()
    choice = spec.choice
    apply_threads(choice.threads)
    ctx = _context(preset, spec)
    host, node, pid = socket.gethostname(), _node_id(), os.getpid()
    lines: list[str] = []
    scratch = Path(tempfile.mkdtemp(prefix=f"effbench-{spec.run_id}-{spec.index:04d}-"))
    keep = False
    try:
        out = runner.measure_case(
            spec.case,
            ctx,
            runner.CasePlace(spec.run_id, scratch),
            spec.index,
            label=describe(ctx.device),
            choice=choice,
            observe=lambda: make_observer(choice.threads, usable_cores(), str(ctx.device)),
            retry_noisy=spec.retry_noisy,
            profile=list(spec.profile) or None,
            log=lines.append,
        )
        where = {"host": host, "ray_node_id": node, "worker_pid": pid}
        rows = [_record_to_row(replace(r, stats={**r.stats, **where})) for r in out.records]
        shipped, left = collect_artifacts(scratch)
        keep = bool(left)
        return TaskResult(
            rows,
            out.failed,
            out.noisy,
            host,
            node,
            pid,
            time.perf_counter() - t0,
            lines,
            shipped,
            f"{host}:{scratch}" if left else "",
        ).to_json()
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
