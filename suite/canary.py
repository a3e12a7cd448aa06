"""The canary: a fixed reference workload timed during every run, the control group of timings.

Two runs of the same code on the same machine differ when the *machine* differs between them
(a competing process, a throttled CPU, a noisy neighbour), and nothing in the cases' own timings
can tell that apart from a change in the code. So every run also times one workload that never
changes: a fixed-size fp32 matmul, a softmax and an elementwise mix (``workload``), through
``effbench.suite.timing.measure`` like any kernel case, so each timing has raw samples, a median
and a distribution-free CI. Its figures go into the run's manifest under ``canary``; the gate
compares the baseline's and the candidate's canaries before it trusts any timing verdict
(``effbench.suite.gate_canary``).

When it runs (``CanaryLog``, driven by the runner): at the start of every run, at the end, and
between cases whenever more than ``interval_s`` seconds (``DEFAULT_INTERVAL_S`` = 30 s,
``EFFBENCH_CANARY_INTERVAL_S`` overrides it) have passed since the last canary, so a long run
shows when the machine changed under it. One timing costs about ``BUDGET_S`` (0.3 s; the runner
gives it no more than one case's budget, so tiny test presets stay quick) at the run's torch
thread count, which is recorded with it: the same workload at another thread count is another
measurement.

Manifest layout::

    "canary": {"workload": ..., "version": 1, "interval_s": 30.0,
               "start": {label, time, median, ci_low, ci_high, rel_ci, n, samples, threads, ...},
               "between": [...], "end": {...},
               "summary": {"median", "min", "max", "spread", "n_ok", "errors"}}

``summary.median`` is the median of every successful canary's median and ``spread`` is
``(max - min) / median`` of those medians: how much the machine's speed moved within the run.

A canary never stops a run: ``run_canary`` returns ``{"label", "error", "threads"}`` instead of
raising, ``CanaryLog`` swallows (and logs) a manifest it cannot write, and the gate reads a run
whose canaries all failed as "timings unverified".
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

from effbench.suite.manifest import utc_now

VERSION = 1
"""Bumped whenever ``workload`` changes: canaries of different versions are not comparable."""
WORKLOAD = "fp32 matmul 256x256x256 + softmax + elementwise mix (tanh), seeded"
BUDGET_S = 0.3
"""Wall time of one canary timing (warm-up included): about 100-150 samples of >= 2 ms."""
MIN_SAMPLES = 20
"""Fewest samples of one canary timing: a loaded machine makes calls slow, and a budget-bound
timing with a handful of samples would tell the gate nothing, so sampling goes on past the
budget until there are this many (or ``MAX_S`` has passed)."""
MAX_S = 3.0
DEFAULT_INTERVAL_S = 30.0
"""Seconds after which the runner times another canary between two cases."""
INTERVAL_ENV = "EFFBENCH_CANARY_INTERVAL_S"
_SIZE = 256
_SAMPLE_DIGITS = 6


def workload() -> Callable[[], Any]:
    """The canary's timed call: fixed, seeded tensors; ~0.1-1 ms per call on a laptop CPU.

    A matmul (compute), a softmax (reductions, exp) and an elementwise mix (memory traffic)
    so that the canary slows down with the same kinds of contention as the kernels effbench
    measures. Never change it without bumping ``VERSION``.
    """
    import torch

    gen = torch.Generator().manual_seed(1234)
    a = torch.randn(_SIZE, _SIZE, generator=gen)
    b = torch.randn(_SIZE, _SIZE, generator=gen)
    c = torch.randn(_SIZE, _SIZE, generator=gen)

    def call() -> Any:
        with torch.inference_mode():
            y = torch.softmax(a @ b, dim=-1)
            return torch.tanh(y * c + a)

    return call


def _threads() -> int | None:
    try:
        import torch

        return int(torch.get_num_threads())
    except Exception:  # noqa: BLE001 - bookkeeping only
        return None


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def run_canary(label: str, budget_s: float = BUDGET_S) -> dict[str, Any]:
    """Time the canary once; a JSON-ready dict, never an exception.

    On success: ``label``, ``time`` (UTC text), ``t_ns`` (``time.time_ns()`` at the end),
    ``median``, ``ci_low``, ``ci_high``, ``rel_ci`` (seconds per call and the median's 95 % CI),
    ``n`` (at least ``MIN_SAMPLES`` unless ``MAX_S`` ran out), ``samples`` (seconds per call,
    6 significant digits), ``threads`` (torch's thread
    count, the run's), ``elapsed_s``, ``loadavg`` (1-minute load average, for the record).
    On failure: ``label``, ``time``, ``t_ns``, ``threads`` and ``error`` (``Type: message``),
    so the run goes on and the manifest says why.
    """
    head: dict[str, Any] = {"label": label, "threads": _threads()}
    try:
        from effbench.suite.stats import summarize
        from effbench.suite.timing import CpuTimer, measure

        t0 = time.perf_counter()
        fn = workload()
        m = measure(fn, device="cpu", warmup_s=0.03, budget_s=budget_s, target_rel_ci=1e-9,
                    min_samples=MIN_SAMPLES)
        samples = list(m.samples)
        timer = CpuTimer()
        while len(samples) < MIN_SAMPLES and time.perf_counter() - t0 < MAX_S:
            samples.append(timer.time_block(fn, m.inner_iters) / m.inner_iters)
        st = summarize(samples)
        if not (st["n"] >= 1 and math.isfinite(st["median"]) and st["median"] > 0):
            raise ValueError(f"no usable sample (n={st['n']:.0f}, median={st['median']})")
        return {**head, "time": utc_now(), "t_ns": time.time_ns(),
                "median": st["median"], "ci_low": st["ci_low"], "ci_high": st["ci_high"],
                "rel_ci": st["rel_ci"], "n": int(st["n"]),
                "samples": [float(f"{s:.{_SAMPLE_DIGITS}g}") for s in samples],
                "elapsed_s": round(time.perf_counter() - t0, 4), "loadavg": _loadavg()}
    except Exception as e:  # noqa: BLE001 - a canary never fails a run
        return {**head, "time": utc_now(), "t_ns": time.time_ns(),
                "error": f"{type(e).__name__}: {e}"}


def entries(canary: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every canary timing of a manifest's ``canary`` block, in time order (start, between...,
    end); failed ones included (they carry ``error``).
    """
    if not isinstance(canary, dict):
        return []
    out = [canary.get("start"), *(canary.get("between") or []), canary.get("end")]
    return [e for e in out if isinstance(e, dict)]


def ok(entry: dict[str, Any]) -> bool:
    """Whether a canary timing succeeded and has a usable median and CI."""
    try:
        vals = [float(entry[k]) for k in ("median", "ci_low", "ci_high")]
    except (KeyError, TypeError, ValueError):
        return False
    return "error" not in entry and all(math.isfinite(v) and v > 0 for v in vals)


def summarize(canary: dict[str, Any]) -> dict[str, Any]:
    """The ``summary`` block: median of all successful canary medians, their min, max and
    relative spread ``(max - min) / median``, how many succeeded, and the failures' errors.
    """
    all_entries = entries(canary)
    medians = sorted(float(e["median"]) for e in all_entries if ok(e))
    errors = [f"{e.get('label', '?')}: {e['error']}" for e in all_entries if "error" in e]
    if not medians:
        return {"median": None, "min": None, "max": None, "spread": None, "n_ok": 0,
                "errors": errors}
    k = len(medians)
    mid = medians[k // 2] if k % 2 else (medians[k // 2 - 1] + medians[k // 2]) / 2
    return {"median": mid, "min": medians[0], "max": medians[-1],
            "spread": (medians[-1] - medians[0]) / mid, "n_ok": k, "errors": errors}


def interval_from_env(default: float = DEFAULT_INTERVAL_S) -> float:
    """``EFFBENCH_CANARY_INTERVAL_S`` when set to a positive number, else ``default``."""
    raw = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if math.isfinite(value) and value > 0 else default


class CanaryLog:
    """The canaries of one run, written into its manifest as each one ends.

    ``run("start")`` at the start (on a resumed run that already has a start canary, the new
    one is kept as a ``between`` entry labelled ``resume``), ``maybe_between()`` before each
    case (times one when more than ``interval_s`` passed since the last), ``run("end")`` after
    the last case. Every call rewrites the manifest's ``canary`` block (with its ``summary``),
    so a run killed half-way keeps the canaries it had. Nothing here raises: a failed canary is
    an entry with ``error``, an unwritable manifest a line in ``log``.
    """

    def __init__(self, store: Any, *, interval_s: float | None = None,
                 budget_s: float = BUDGET_S,
                 log: Callable[[str], None] | None = None,
                 timer: Callable[[str], dict[str, Any]] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.interval_s = interval_from_env() if interval_s is None else float(interval_s)
        self.budget_s = float(budget_s)
        self.log = log or (lambda _m: None)
        self._timer = timer
        self._clock = clock
        self._last = -math.inf
        self.block: dict[str, Any] = {"workload": WORKLOAD, "version": VERSION,
                                      "interval_s": self.interval_s, "start": None,
                                      "between": [], "end": None}
        try:
            old = store.manifest().get("canary")
        except Exception:  # noqa: BLE001 - a fresh block then
            old = None
        if isinstance(old, dict) and old.get("version") == VERSION:
            self.block.update({k: old.get(k) for k in ("start", "end")})
            self.block["between"] = list(old.get("between") or [])

    def run(self, label: str) -> dict[str, Any]:
        """Time one canary now and record it as ``label`` (``start``, ``end`` or a between)."""
        try:
            got = self._timer(label) if self._timer else run_canary(label, self.budget_s)
        except Exception as e:  # noqa: BLE001 - an injected timer may raise
            got = {"label": label, "threads": _threads(), "time": utc_now(),
                   "t_ns": time.time_ns(), "error": f"{type(e).__name__}: {e}"}
        self._last = self._clock()
        if label == "start" and self.block.get("start") is not None:
            got = {**got, "label": "resume"}
            self.block["between"].append(got)
        elif label in ("start", "end"):
            if label == "end" and self.block.get("end") is not None:  # resumed: keep the old
                self.block["between"].append({**self.block["end"], "label": "previous end"})
            self.block[label] = got
        else:
            self.block["between"].append(got)
        if "error" in got:
            self.log(f"canary {got['label']} failed (the run goes on; timings will be "
                     f"unverified if no canary succeeds): {got['error']}")
        self._write()
        return got

    def maybe_between(self) -> dict[str, Any] | None:
        """Time a ``between`` canary when more than ``interval_s`` passed since the last one."""
        if self._clock() - self._last <= self.interval_s:
            return None
        return self.run(f"between-{len(self.block['between']) + 1}")

    def _write(self) -> None:
        self.block["summary"] = summarize(self.block)
        try:
            from effbench.suite.store_files import _write_json

            manifest = self.store.manifest()
            manifest["canary"] = self.block
            _write_json(self.store.manifest_path, manifest)
        except Exception as e:  # noqa: BLE001 - bookkeeping never fails a run
            self.log(f"canary: could not write the manifest: {type(e).__name__}: {e}")
