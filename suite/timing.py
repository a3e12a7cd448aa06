"""Adaptive timing engine: seconds per call of ``fn`` on a device, with their uncertainty.

:func:`measure` warms ``fn`` up, calibrates how many calls go into one timed sample so that
timer resolution and call overhead are negligible, then keeps sampling until the 95 % CI of the
median is tight enough, the time budget is spent or the sample cap is reached. Every raw
per-call sample is kept so reports can show distributions and the regression gate can bootstrap.

Clocks differ by device, hidden behind :class:`Timer`:

* CPU: ``time.perf_counter_ns`` around the block (monotonic, highest resolution available).
* CUDA: a pair of ``torch.cuda.Event(enable_timing=True)`` recorded on the current stream
  around the block, after a ``torch.cuda.synchronize()`` so earlier queued work is not billed
  to this block. Kernel launches are asynchronous, so host clocks would time the launch, not
  the kernel. Optionally the L2 cache is flushed before every call (``cold_cache``), outside
  the timed region, by zeroing a buffer twice the L2 size.

torch is imported lazily and only the CUDA path touches ``torch.cuda``, so importing this module
and timing on CPU never needs a GPU (or torch at all).

:func:`measure_once_each` is the complement for expensive whole runs (an engine serving a
workload): each round calls every function once, rotating the order, so slow drifts of the
machine (thermals, background load) hit all contenders alike.
"""

from __future__ import annotations

import gc
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from effbench.suite.errors import DeviceError
from effbench.suite.stats import summarize

DEFAULT_MIN_SAMPLE_S = {"cpu": 2e-3, "cuda": 2e-4}
#: Fallback flush size when the device does not report its L2 size (covers current GPUs).
DEFAULT_FLUSH_BYTES = 256 * 1024 * 1024
_MAX_INNER_ITERS = 10**9
_DEVICE_RE = re.compile(r"^(cpu|cuda)(?::(\d+))?$")


class Timer(Protocol):
    """Times a block of ``iters`` back-to-back calls of a function on one device."""

    device: str
    cold_cache: bool

    def time_block(self, fn: Callable[[], Any], iters: int) -> float:
        """Run ``fn`` ``iters`` times and return the elapsed time of the calls in seconds."""
        ...


class CpuTimer:
    """Host wall clock (``perf_counter_ns``); the garbage collector is paused while timing.

    Pausing GC (as ``timeit`` does) keeps a collection triggered by earlier allocations from
    landing inside one arbitrary sample. Cache flushing is not supported on CPU.
    """

    def __init__(self, device: str = "cpu", disable_gc: bool = True) -> None:
        self.device = device
        self.cold_cache = False
        self._disable_gc = disable_gc

    def time_block(self, fn: Callable[[], Any], iters: int) -> float:
        gc_was_enabled = gc.isenabled()
        if self._disable_gc:
            gc.disable()
        try:
            start = time.perf_counter_ns()
            for _ in range(iters):
                fn()
            stop = time.perf_counter_ns()
        finally:
            if gc_was_enabled:
                gc.enable()
        return (stop - start) * 1e-9


class CudaTimer:
    """CUDA event timer; with ``cold_cache`` each call runs after an L2 flush.

    Without ``cold_cache`` one event pair brackets the whole block. With it, every call gets
    its own event pair and a flush (zeroing a buffer of twice the L2 size) is issued before the
    start event, so the flush itself is never timed; the block time is the sum of the per-call
    event times.
    """

    def __init__(
        self, device: str = "cuda", cold_cache: bool = False, disable_gc: bool = True
    ) -> None:
        import torch

        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but CUDA is not available")
        self._torch = torch
        self._device = torch.device(device)
        if self._device.index is not None and self._device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r} requested but only {torch.cuda.device_count()} CUDA "
                "device(s) are present"
            )
        self.device = device
        self.cold_cache = cold_cache
        self._disable_gc = disable_gc
        self._flush_buf = None
        with torch.cuda.device(self._device):
            self._start = torch.cuda.Event(enable_timing=True)
            self._stop = torch.cuda.Event(enable_timing=True)
            if cold_cache:
                props = torch.cuda.get_device_properties(self._device)
                l2_bytes = int(getattr(props, "L2_cache_size", 0) or 0)
                n_bytes = 2 * l2_bytes if l2_bytes > 0 else DEFAULT_FLUSH_BYTES
                self._flush_buf = torch.empty(n_bytes, dtype=torch.int8, device=self._device)

    def time_block(self, fn: Callable[[], Any], iters: int) -> float:
        torch = self._torch
        gc_was_enabled = gc.isenabled()
        if self._disable_gc:
            gc.disable()
        try:
            with torch.cuda.device(self._device):
                if self._flush_buf is None:
                    return self._time_warm(fn, iters)
                return self._time_cold(fn, iters)
        finally:
            if gc_was_enabled:
                gc.enable()

    def _time_warm(self, fn: Callable[[], Any], iters: int) -> float:
        torch = self._torch
        torch.cuda.synchronize()
        self._start.record()
        for _ in range(iters):
            fn()
        self._stop.record()
        self._stop.synchronize()
        return self._start.elapsed_time(self._stop) * 1e-3  # elapsed_time is in ms

    def _time_cold(self, fn: Callable[[], Any], iters: int) -> float:
        torch = self._torch
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        stops = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        torch.cuda.synchronize()
        for start, stop in zip(starts, stops):
            self._flush_buf.zero_()
            start.record()
            fn()
            stop.record()
        torch.cuda.synchronize()
        return sum(s.elapsed_time(e) for s, e in zip(starts, stops)) * 1e-3


def parse_device(device: str) -> tuple[str, int | None]:
    """Split ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` into (kind, index); anything else errors."""
    m = _DEVICE_RE.match(device.strip().lower())
    if m is None:
        raise DeviceError(f"unknown device {device!r}; valid: 'cpu', 'cuda', 'cuda:N'")
    kind, index = m.group(1), m.group(2)
    if kind == "cpu" and index is not None:
        raise DeviceError(f"unknown device {device!r}; valid: 'cpu', 'cuda', 'cuda:N'")
    return kind, None if index is None else int(index)


def make_timer(device: str = "cpu", cold_cache: bool = False, disable_gc: bool = True) -> Timer:
    """Return the timer for ``device``; on CPU ``cold_cache`` is ignored (see ``timer.cold_cache``).

    Raises :class:`~effbench.suite.errors.DeviceError` for an unknown device string or when CUDA is
    requested but not available.
    """
    kind, _ = parse_device(device)
    if kind == "cpu":
        return CpuTimer(device, disable_gc=disable_gc)
    return CudaTimer(device, cold_cache=cold_cache, disable_gc=disable_gc)


@dataclass(frozen=True)
class Measurement:
    """Result of :func:`measure`: all raw samples plus how they were obtained.

    ``samples`` are seconds per call (block time / ``inner_iters``), in the order taken.
    ``stats`` is :func:`effbench.suite.stats.summarize` of the samples. ``converged`` is true when
    at
    least ``min_samples`` were taken and the median's relative CI half-width reached the target.
    ``stop_reason`` is ``"converged"``, ``"budget"`` or ``"max_samples"``. ``elapsed_s`` is the
    wall time of the whole call (warm-up and calibration included). ``cold_cache`` says whether
    cache flushing was actually applied; ``notes`` explains options that were ignored.
    """

    samples: tuple[float, ...]
    inner_iters: int
    stats: dict[str, float]
    converged: bool
    elapsed_s: float
    warmup_iters: int
    device: str
    cold_cache: bool
    stop_reason: str = "converged"
    target_rel_ci: float = 0.02
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return self.stats["median"]

    @property
    def rel_ci(self) -> float:
        """Half-width of the median's CI relative to the median."""
        return self.stats["rel_ci"]


def _validate(**kw: float) -> None:
    for name, value in kw.items():
        if not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    for name in ("min_sample_s", "target_rel_ci", "budget_s"):
        if kw[name] <= 0:
            raise ValueError(f"{name} must be > 0, got {kw[name]}")
    if kw["warmup_s"] < 0:
        raise ValueError(f"warmup_s must be >= 0, got {kw['warmup_s']}")
    if kw["min_samples"] < 1 or kw["max_samples"] < kw["min_samples"]:
        raise ValueError(
            f"need 1 <= min_samples <= max_samples, got {kw['min_samples']}, {kw['max_samples']}"
        )


def warm_up(timer: Timer, fn: Callable[[], Any], warmup_s: float) -> tuple[int, float]:
    """Call ``fn`` (synchronised, one call per block) for ``warmup_s``, at least once.

    Returns the number of calls and the fastest single-call time seen, which seeds calibration.
    """
    deadline = time.perf_counter() + warmup_s
    iters, fastest = 0, math.inf
    while True:
        fastest = min(fastest, timer.time_block(fn, 1))
        iters += 1
        if time.perf_counter() >= deadline:
            return iters, fastest


def calibrate(
    timer: Timer, fn: Callable[[], Any], min_sample_s: float, per_call_hint: float = math.inf
) -> int:
    """Return the number of calls per sample so that one timed block lasts >= ``min_sample_s``.

    Starts from the estimate ``min_sample_s / per_call_hint`` (from warm-up) and, like
    ``timeit``'s autorange, times a block and grows the count x10 when the block is under a
    tenth of the target, x2 otherwise, until one block reaches ``min_sample_s``.
    """
    if per_call_hint >= min_sample_s and per_call_hint < math.inf:
        return 1  # one call already fills a sample; skip a wasted calibration block
    iters = 1
    if 0 < per_call_hint < math.inf:
        iters = max(1, min(_MAX_INNER_ITERS, int(min_sample_s / per_call_hint)))
    while iters < _MAX_INNER_ITERS:
        block = timer.time_block(fn, iters)
        if block >= min_sample_s:
            break
        iters *= 10 if block < min_sample_s / 10 else 2
    return min(iters, _MAX_INNER_ITERS)


def measure(
    fn: Callable[[], Any],
    *,
    device: str = "cpu",
    warmup_s: float = 0.05,
    min_sample_s: float | None = None,
    target_rel_ci: float = 0.02,
    budget_s: float = 2.0,
    min_samples: int = 10,
    max_samples: int = 10_000,
    cold_cache: bool = False,
    confidence: float = 0.95,
    disable_gc: bool = True,
) -> Measurement:
    """Time ``fn()`` adaptively and return every per-call sample with its statistics.

    1. Warm up: call ``fn`` for ``warmup_s`` (at least once) so lazy init, allocator growth
       and JIT/autotuning happen before timing.
    2. Calibrate ``inner_iters`` so one sample (a timed block of back-to-back calls) lasts at
       least ``min_sample_s`` (default 2 ms on CPU, 0.2 ms on CUDA). With ``cold_cache`` on
       CUDA, calls are timed individually after a flush, so the block holds flushes too.
    3. Sample: each sample is ``block_time / inner_iters`` seconds. After ``min_samples``,
       every few samples, stop when the median's ``confidence`` CI half-width is within
       ``target_rel_ci`` of the median. Also stop when ``budget_s`` (wall time of the whole
       call, warm-up included) would be exceeded by the next sample, or at ``max_samples``.
       The budget wins over ``min_samples``, but at least one sample is always taken.

    ``cold_cache`` is only supported on CUDA; on CPU it is ignored and noted in the result.
    Raises :class:`~effbench.suite.errors.DeviceError` for an unavailable device and ``ValueError``
    for invalid settings.
    """
    t0 = time.perf_counter()
    kind, _ = parse_device(device)
    if min_sample_s is None:
        min_sample_s = DEFAULT_MIN_SAMPLE_S[kind]
    _validate(
        warmup_s=warmup_s,
        min_sample_s=min_sample_s,
        target_rel_ci=target_rel_ci,
        budget_s=budget_s,
        min_samples=min_samples,
        max_samples=max_samples,
    )
    notes: list[str] = []
    if cold_cache and kind == "cpu":
        notes.append("cold_cache is unsupported on cpu and was ignored")
    timer = make_timer(device, cold_cache=cold_cache, disable_gc=disable_gc)

    warmup_iters, fastest = warm_up(timer, fn, warmup_s)
    inner = calibrate(timer, fn, min_sample_s, fastest)

    samples: list[float] = []
    stop_reason = "max_samples"
    next_check = min_samples
    last_block = 0.0
    while len(samples) < max_samples:
        if samples and time.perf_counter() - t0 + last_block > budget_s:
            stop_reason = "budget"
            break
        last_block = timer.time_block(fn, inner)
        samples.append(last_block / inner)
        if len(samples) >= next_check:
            if summarize(samples, confidence)["rel_ci"] <= target_rel_ci:
                stop_reason = "converged"
                break
            # Re-check every ~5 % more samples (at least 5): cheap even at 10k samples.
            next_check = len(samples) + max(5, len(samples) // 20)

    stats = summarize(samples, confidence)
    converged = len(samples) >= min_samples and stats["rel_ci"] <= target_rel_ci
    return Measurement(
        samples=tuple(samples),
        inner_iters=inner,
        stats=stats,
        converged=bool(converged),
        elapsed_s=time.perf_counter() - t0,
        warmup_iters=warmup_iters,
        device=device,
        cold_cache=timer.cold_cache,
        stop_reason=stop_reason,
        target_rel_ci=target_rel_ci,
        notes=tuple(notes),
    )


def measure_once_each(
    fns: Mapping[str, Callable[[], Any]],
    rounds: int,
    device: str = "cpu",
    *,
    warmup_rounds: int = 0,
) -> dict[str, tuple[float, ...]]:
    """Time each function once per round, interleaved, for side-by-side A/B comparisons.

    Meant for expensive whole runs where calibration is pointless. Round ``r`` calls the
    functions in the given order rotated by ``r`` (for two functions: AB, BA, AB, ...), so every
    function occupies every position equally often and machine drift is shared. The first
    ``warmup_rounds`` rounds are run the same way but discarded. Returns seconds per call for
    each name, one value per round, so every name has exactly ``rounds`` samples.
    """
    if not fns:
        raise ValueError("fns must contain at least one function")
    if rounds < 1 or warmup_rounds < 0:
        raise ValueError(f"need rounds >= 1 and warmup_rounds >= 0, got {rounds}, {warmup_rounds}")
    timer = make_timer(device)
    names = list(fns)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup_rounds + rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed = timer.time_block(fns[name], 1)
            if r >= warmup_rounds:
                out[name].append(elapsed)
    return {name: tuple(values) for name, values in out.items()}
