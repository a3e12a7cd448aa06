"""Roofline position of measured work: achieved GB/s and TFLOP/s against the device's peaks.

Bytes and FLOPs are analytic (the caller counts them: weights + KV cache + activations read and
written; 2*M*N*K per GEMM) and divided by measured seconds, as tritonbench's ``gbps`` does.
Peaks come from a table of NVIDIA datasheet figures matched by device name; for CPUs and unknown
devices they are measured (a large tensor copy, a large fp32 matmul) and cached in a JSON file
keyed by machine (CPU model, cores), torch version and thread count (``fingerprint``). A
measured peak must be trustworthy, because every roofline percentage is divided by it (a peak
measured under load once made a kernel read 211 % of "peak" bandwidth):

* **stable maximum**: each figure is the best of repeated single calls, repeated until the two
  fastest agree within ``STABLE_TOL`` (2 %), at least ``MIN_ROUNDS`` and at most
  ``MAX_ROUNDS`` calls (``stable_best``); a figure that never settles is used for this run only;
* **never cached when the machine is busy**: ``machine_busy`` samples, just before and just
  after measuring, how much CPU *other* processes use (``/proc/stat`` minus this process, steal
  time included, over ``BUSY_WINDOW_S``); above ``BUSY_THRESHOLD`` (25 % of all CPUs) the
  peaks are used for this run only, with a ``PeakWarning``;
* **expiry**: an entry older than ``max_age`` (``DEFAULT_MAX_AGE_DAYS`` = 7 days, or
  ``EFFBENCH_PEAKS_MAX_AGE_DAYS``) or without a measurement time is measured again;
* **corrupt cache**: a file that is not a JSON object of entries is re-measured and rewritten,
  with a ``PeakWarning`` naming the file.

A second, independent signal is NVML's memory-busy duty cycle (percent of time device memory
was read or written; *not* a fraction of peak bandwidth).
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch

from effbench.profilers.base import ProfileResult
from effbench.profilers.nvml import (
    NotSupported,
    NullNVML,
    NVMLLike,
    open_nvml,
    visible_nvml_index,
)

DEFAULT_CACHE = Path.home() / ".cache" / "effbench" / "peaks.json"
DEFAULT_MAX_AGE_DAYS = 7.0
MAX_AGE_ENV = "EFFBENCH_PEAKS_MAX_AGE_DAYS"
STABLE_TOL = 0.02
MIN_ROUNDS = 3
MAX_ROUNDS = 30
ROUNDS_BUDGET_S = 20.0
BUSY_THRESHOLD = 0.25
BUSY_WINDOW_S = 0.25


class PeakWarning(UserWarning):
    """A measured peak that could not be trusted or cached, or a damaged peaks cache."""


@dataclass(frozen=True)
class Peak:
    """A device's peak dense BF16/FP16 tensor TFLOP/s (fp32 for measured CPUs) and memory GB/s."""

    device: str
    tflops: float
    gbps: float
    source: str
    stable: bool = field(default=True, compare=False)  # both figures reached a stable maximum
    rounds: int = field(default=0, compare=False)  # calls measured (0: datasheet)

    @property
    def ridge(self) -> float:
        """Arithmetic intensity (FLOP/byte) where memory- and compute-bound meet."""
        return self.tflops * 1e3 / self.gbps


# Dense (non-sparse) BF16 tensor throughput: NVIDIA datasheets print the 2:4-sparse figure with
# an asterisk; the dense one is half of it. Patterns are tried in order, first match wins.
KNOWN_PEAKS: tuple[tuple[str, Peak], ...] = (
    # H100 datasheet, PCIe column: BF16 Tensor Core 1,513 TFLOPS (sparse) -> 756.5; 2 TB/s HBM2e
    (r"H100.*PCIe", Peak("H100 PCIe", 756.5, 2000.0, "NVIDIA H100 datasheet (PCIe)")),
    # H100 datasheet, NVL column: BF16 Tensor Core 1,671 TFLOPS (sparse) -> 835.5; 3.9 TB/s
    (r"H100 NVL", Peak("H100 NVL", 835.5, 3900.0, "NVIDIA H100 datasheet (NVL)")),
    # H100 datasheet, SXM column: BF16 Tensor Core 1,979 TFLOPS (sparse) -> 989.5; 3.35 TB/s HBM3
    (r"H100", Peak("H100 SXM", 989.5, 3350.0, "NVIDIA H100 datasheet (SXM)")),
    # H200 datasheet, NVL column: BF16 Tensor Core 1,671 TFLOPS (sparse) -> 835.5; 4.8 TB/s
    (r"H200 NVL", Peak("H200 NVL", 835.5, 4800.0, "NVIDIA H200 datasheet (NVL)")),
    # H200 datasheet, SXM column: BF16 Tensor Core 1,979 TFLOPS (sparse) -> 989.5; 4.8 TB/s HBM3e
    (r"H200", Peak("H200 SXM", 989.5, 4800.0, "NVIDIA H200 datasheet (SXM)")),
    # A100 datasheet: BF16 Tensor Core 312 TFLOPS dense; 80GB SXM 2,039 GB/s HBM2e
    # A100 datasheet: 80GB PCIe 1,935 GB/s HBM2e
    (r"A100.*80GB.*PCIe|A100.*PCIe.*80GB",
     Peak("A100 80GB PCIe", 312.0, 1935.0, "NVIDIA A100 datasheet (80GB PCIe)")),
    (r"A100.*80GB", Peak("A100 80GB SXM", 312.0, 2039.0, "NVIDIA A100 datasheet (80GB SXM)")),
    # A100 datasheet: BF16 Tensor Core 312 TFLOPS dense; 40GB 1,555 GB/s HBM2
    (r"A100", Peak("A100 40GB SXM", 312.0, 1555.0, "NVIDIA A100 datasheet (40GB)")),
    # L4 datasheet: BF16 Tensor Core 242 TFLOPS (sparse) -> 121; 300 GB/s GDDR6
    (r"\bL4\b", Peak("L4", 121.0, 300.0, "NVIDIA L4 datasheet")),
    # A10 datasheet: BF16 Tensor Core 125 TFLOPS dense (250 sparse); 600 GB/s GDDR6
    (r"\bA10\b", Peak("A10", 125.0, 600.0, "NVIDIA A10 datasheet")),
    # V100 datasheet: no BF16; FP16 Tensor 125 TFLOPS (SXM2), 112 (PCIe); 900 GB/s HBM2
    (r"V100.*PCIE", Peak("V100 PCIe", 112.0, 900.0, "NVIDIA V100 datasheet (PCIe, FP16)")),
    (r"V100", Peak("V100 SXM2", 125.0, 900.0, "NVIDIA V100 datasheet (SXM2, FP16)")),
    # Ada (RTX 4090) whitepaper: FP16/BF16 tensor, FP32 accumulate 165.2 TFLOPS dense
    # (330.4 sparse); 1,008 GB/s GDDR6X
    (r"RTX 4090", Peak("RTX 4090", 165.2, 1008.0, "NVIDIA Ada whitepaper (RTX 4090)")),
)


def known_peak(device_name: str) -> Peak | None:
    """The datasheet peak for a device name such as ``NVIDIA H100 80GB HBM3``, if listed."""
    for pattern, peak in KNOWN_PEAKS:
        if re.search(pattern, device_name, re.IGNORECASE):
            return peak
    return None


# -- roofline (pure) ------------------------------------------------------------------------


@dataclass(frozen=True)
class RooflinePoint:
    """Where measured work sits against a device's roofline."""

    seconds: float
    bytes: float
    flops: float
    gbps: float
    tflops: float
    intensity: float  # FLOP per byte
    pct_peak_bw: float
    pct_peak_compute: float
    attainable_tflops: float  # min(peak compute, intensity x peak bandwidth)
    bound: str  # "memory" or "compute"


def roofline(bytes_moved: float, flops: float, seconds: float, peak: Peak) -> RooflinePoint:
    """Achieved rates, percent of peaks and the roofline bound of one measured region."""
    if seconds <= 0:
        raise ValueError("seconds must be positive")
    gbps = bytes_moved / seconds / 1e9
    tflops = flops / seconds / 1e12
    ai = flops / bytes_moved if bytes_moved > 0 else float("inf")
    attainable = min(peak.tflops, ai * peak.gbps / 1e3)
    return RooflinePoint(
        seconds, bytes_moved, flops, gbps, tflops, ai,
        100.0 * gbps / peak.gbps, 100.0 * tflops / peak.tflops, attainable,
        "memory" if ai < peak.ridge else "compute",
    )


# -- measured peaks, cached per machine -----------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint(device: str = "cpu") -> str:
    """Key of this machine in the peaks cache: CPU model, cores, torch version (+ GPU name).

    torch's thread count is part of it too: a CPU's measured matmul peak scales with it.
    """
    parts = [_cpu_model(), f"{os.cpu_count()} cores", f"torch {torch.__version__}",
             f"{torch.get_num_threads()} threads"]
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        parts.append(torch.cuda.get_device_name(dev))
    return " | ".join(parts)


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def stable_best(call: Callable[[], float], *, tol: float = STABLE_TOL,
                min_rounds: int = MIN_ROUNDS, max_rounds: int = MAX_ROUNDS,
                budget_s: float = ROUNDS_BUDGET_S) -> tuple[float, bool, int]:
    """The fastest of repeated timings ``call()`` (seconds of one call), once it is stable.

    Calls until the two fastest times agree within ``tol`` (relative), after at least
    ``min_rounds`` (2 at the least) and at most ``max_rounds`` calls or ``budget_s`` seconds.
    A peak is a maximum, so the fastest call is the estimate; its runner-up agreeing says it was
    not one lucky call. Returns (fastest seconds, stable?, calls made).
    """
    min_rounds = max(2, min_rounds)
    deadline = time.perf_counter() + budget_s
    times: list[float] = []
    while len(times) < max(min_rounds, max_rounds):
        times.append(float(call()))
        if len(times) >= min_rounds:
            first, second = sorted(times)[:2]
            if first > 0 and second / first - 1 <= tol:
                return first, True, len(times)
            if time.perf_counter() > deadline:
                break
    return min(times), False, len(times)


def _timed(fn: Callable[[], object], dev: torch.device) -> Callable[[], float]:
    def call() -> float:
        t = time.perf_counter()
        fn()
        _sync(dev)
        return time.perf_counter() - t

    return call


def measure_peaks(device: str = "cpu", copy_mib: int = 256, matmul_n: int = 2048,
                  repeats: int = MIN_ROUNDS, tol: float = STABLE_TOL,
                  max_rounds: int = MAX_ROUNDS) -> Peak:
    """Copy bandwidth (read + write bytes of a large tensor copy) and fp32 matmul TFLOP/s.

    Each figure is ``stable_best`` of single calls after one warm-up call (``repeats`` is the
    minimum number of calls); ``Peak.stable`` says whether both reached a stable maximum.
    """
    dev = torch.device(device)
    n = copy_mib * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    copy = _timed(lambda: dst.copy_(src), dev)
    copy()  # warm-up
    copy_s, copy_ok, copy_k = stable_best(copy, tol=tol, min_rounds=repeats,
                                          max_rounds=max_rounds)
    src = dst = torch.empty(0)  # free the copy buffers before the matmul
    a = torch.randn(matmul_n, matmul_n, device=dev)
    b = torch.randn(matmul_n, matmul_n, device=dev)
    mm = _timed(lambda: a @ b, dev)
    mm()
    mm_s, mm_ok, mm_k = stable_best(mm, tol=tol, min_rounds=repeats, max_rounds=max_rounds)
    stable = copy_ok and mm_ok
    how = (f"best of {copy_k} copies / {mm_k} matmuls"
           + ("" if stable else f", no stable maximum within {tol:.0%}"))
    return Peak(fingerprint(device), 2 * matmul_n**3 / mm_s / 1e12,
                2 * n * 4 / copy_s / 1e9, f"measured (tensor copy, fp32 matmul; {how})",
                stable, copy_k + mm_k)


# -- is the machine busy? -------------------------------------------------------------------


def _proc_jiffies() -> tuple[int, int, int] | None:
    """(all CPUs' busy ticks incl. steal, all CPUs' total ticks, this process's ticks)."""
    try:
        cpu = Path("/proc/stat").read_text().splitlines()[0].split()
        own = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if cpu[0] != "cpu" or len(cpu) < 9:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in cpu[1:9])
    total = user + nice + system + idle + iowait + irq + softirq + steal
    # /proc/self/stat after the name: state is field 3, utime and stime fields 14 and 15
    mine = int(own[11]) + int(own[12])
    return total - idle - iowait, total, mine


def others_busy(window_s: float = BUSY_WINDOW_S) -> float | None:
    """Share of all CPUs' time (0..1) used by other processes (steal included) over a
    ``window_s`` sample; None where ``/proc/stat`` is unavailable.
    """
    before = _proc_jiffies()
    if before is None:
        return None
    time.sleep(window_s)
    after = _proc_jiffies()
    if after is None or after[1] <= before[1]:
        return None
    busy = (after[0] - before[0]) - (after[2] - before[2])
    return max(0.0, busy / (after[1] - before[1]))


def machine_busy(threshold: float = BUSY_THRESHOLD,
                 window_s: float = BUSY_WINDOW_S) -> tuple[bool, str]:
    """(busy?, why): other processes use more than ``threshold`` of all CPUs right now.

    Sampled from ``/proc/stat`` (``others_busy``); elsewhere from the 1-minute load average
    less this process's own thread, per CPU.
    """
    share = others_busy(window_s)
    if share is not None:
        why = f"other processes used {share:.0%} of the CPUs (threshold {threshold:.0%})"
        return share > threshold, why
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return False, "no CPU-busy signal on this platform"
    per_cpu = max(0.0, load - 1.0) / (os.cpu_count() or 1)
    why = f"load average {load:.2f} on {os.cpu_count()} CPUs (threshold {threshold:.0%} busy)"
    return per_cpu > threshold, why


def max_age_s(days: float | None = None) -> float:
    """Age after which a cached peak is measured again: ``days``, else
    ``EFFBENCH_PEAKS_MAX_AGE_DAYS``, else ``DEFAULT_MAX_AGE_DAYS``.
    """
    if days is None:
        try:
            days = float(os.environ.get(MAX_AGE_ENV, DEFAULT_MAX_AGE_DAYS))
        except ValueError:
            days = DEFAULT_MAX_AGE_DAYS
    return days * 86400.0 if math.isfinite(days) and days > 0 else DEFAULT_MAX_AGE_DAYS * 86400


class PeakCache:
    """Measured peaks in a JSON file: ``fingerprint -> Peak fields + measured_at`` (epoch s).

    A file that is not a JSON object, or an entry that is not a peak, is reported with a
    ``PeakWarning`` naming the file and treated as absent, so the peak is measured again and
    the file rewritten. Writes are atomic (a temporary file renamed over the old one).
    """

    def __init__(self, path: Path | str = DEFAULT_CACHE) -> None:
        self.path = Path(path)

    def _load(self, warn: bool = True) -> dict[str, dict]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        except OSError as e:
            if warn:
                warnings.warn(f"peaks cache {self.path} is unreadable ({e}): peaks are measured "
                              "again", PeakWarning, stacklevel=3)
            return {}
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        except ValueError as e:
            if warn:
                warnings.warn(f"peaks cache {self.path} is corrupt ({e}): peaks are measured "
                              "again and the file rewritten", PeakWarning, stacklevel=3)
            return {}
        return data

    def entry(self, key: str) -> tuple[Peak, float | None] | None:
        """(peak, measured_at or None) for ``key``; None when absent or unusable (warned)."""
        got = self._load().get(key)
        if got is None:
            return None
        names = {f.name for f in fields(Peak)}
        try:
            peak = Peak(**{k: v for k, v in got.items() if k in names})
            if not (float(peak.gbps) > 0 and float(peak.tflops) > 0):
                raise ValueError("non-positive peak")
            at = got.get("measured_at")
            at = float(at) if at is not None else None
        except (TypeError, ValueError, AttributeError) as e:
            warnings.warn(f"peaks cache {self.path}: entry {key!r} is corrupt ({e}): peaks are "
                          "measured again", PeakWarning, stacklevel=2)
            return None
        return peak, at

    def get(self, key: str) -> Peak | None:
        got = self.entry(key)
        return got[0] if got else None

    def put(self, key: str, peak: Peak, measured_at: float | None = None) -> None:
        data = self._load(warn=False)
        data[key] = {**asdict(peak), "measured_at": time.time() if measured_at is None
                     else float(measured_at)}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self.path)


def device_peak(device: str = "cpu", cache: PeakCache | None = None, *,
                max_age_days: float | None = None,
                busy: Callable[[], tuple[bool, str]] | None = None,
                now: float | None = None) -> Peak:
    """The datasheet peak of a listed GPU, else measured peaks, cached when trustworthy.

    The cache (keyed by ``fingerprint``: machine, torch version, thread count) answers when
    its entry is younger than ``max_age_s(max_age_days)``. Otherwise the peaks are measured
    (``measure_peaks``) and stored only when the machine was quiet just before and just after
    (``busy``, default ``machine_busy``) and both figures reached a stable maximum; else they
    serve this call only and a ``PeakWarning`` says why.
    """
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        peak = known_peak(torch.cuda.get_device_name(dev))
        if peak is not None:
            return peak
    cache = cache or PeakCache()
    key = fingerprint(device)
    now = time.time() if now is None else now
    got = cache.entry(key)
    if got is not None:
        peak, at = got
        if at is not None and 0 <= now - at <= max_age_s(max_age_days):
            return peak
    probe = busy or machine_busy
    before = probe()
    peak = measure_peaks(device)
    after = probe()
    why = before[1] if before[0] else after[1] if after[0] else None
    if why is not None:
        warnings.warn(f"peaks measured while the machine was busy ({why}): used for this "
                      f"measurement only, not cached in {cache.path}", PeakWarning, stacklevel=2)
    elif not peak.stable:
        warnings.warn(f"peaks did not reach a stable maximum ({peak.source}): used for this "
                      f"measurement only, not cached in {cache.path}", PeakWarning, stacklevel=2)
    else:
        cache.put(key, peak, now)
    return peak


# -- NVML memory-busy sampling (second signal) ----------------------------------------------


class NullMemoryBusy:
    """No NVML memory-busy signal (CPU device or no driver)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def available(self) -> tuple[bool, str]:
        return False, self.reason

    def start(self) -> None:
        pass

    def stop(self) -> dict[str, tuple[float, str]]:
        return {}


class NVMLMemoryBusy:
    """Polls ``nvmlDeviceGetUtilizationRates().memory`` (a duty cycle, %) in a daemon thread."""

    def __init__(self, nvml: NVMLLike, index: int = 0, period_s: float = 0.2) -> None:
        self.nvml, self.index, self.period_s = nvml, index, period_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def available(self) -> tuple[bool, str]:
        ok, why = self.nvml.available()
        if not ok:
            return False, why
        try:
            self.nvml.memory_busy_percent(self.index)
        except NotSupported as e:
            return False, f"memory utilisation not supported ({e})"
        return True, ""

    def _run(self) -> None:
        while True:
            try:
                self.samples.append(self.nvml.memory_busy_percent(self.index))
            except NotSupported:
                return
            if self._stop.wait(self.period_s):
                return

    def start(self) -> None:
        self.samples.clear()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="effbench-membusy", daemon=True)
        self._thread.start()

    def stop(self) -> dict[str, tuple[float, str]]:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None
        if not self.samples:
            return {}
        return {"memory_busy_mean": (sum(self.samples) / len(self.samples), "%"),
                "memory_busy_max": (float(max(self.samples)), "%")}


def memory_busy_for(device: str, nvml: NVMLLike | None = None) -> NVMLMemoryBusy | NullMemoryBusy:
    """The memory-busy sampler for a CUDA device, a null one elsewhere.

    Torch's ``cuda:N`` is read from NVML's device ``CUDA_VISIBLE_DEVICES`` maps it to; an
    entry that cannot be mapped gives a null sampler with that reason, not another GPU's signal.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return NullMemoryBusy(f"device is {dev}: no NVML memory-busy signal")
    nvml = nvml or open_nvml()
    if isinstance(nvml, NullNVML):
        return NullMemoryBusy(nvml.reason)
    try:
        index = visible_nvml_index(dev.index or 0, nvml)
    except ValueError as e:
        return NullMemoryBusy(str(e))
    return NVMLMemoryBusy(nvml, index)


# -- profiler --------------------------------------------------------------------------------


class BandwidthProfiler:
    """Device peaks, NVML memory-busy over the region, and the roofline of recorded work.

    Callers that know their analytic bytes/FLOPs call :meth:`record` for each measured piece
    (e.g. ``decode``); each becomes ``<name>.GB/s``, ``<name>.TFLOP/s``, percent of peaks, etc.
    """

    name = "bandwidth"

    def __init__(self, device: str = "cpu", artifacts_dir: Path | None = None, *,
                 cache: PeakCache | None = None, nvml: NVMLLike | None = None) -> None:
        self.device = device
        self.artifacts_dir = artifacts_dir
        self.cache = cache
        self._nvml = nvml
        self.peak: Peak | None = None
        self.points: dict[str, RooflinePoint] = {}
        self._busy: NVMLMemoryBusy | NullMemoryBusy | None = None

    def available(self) -> tuple[bool, str]:
        if torch.device(self.device).type == "cuda" and not torch.cuda.is_available():
            return False, "no NVIDIA GPU (torch.cuda unavailable)"
        return True, ""

    def record(self, name: str, bytes_moved: float, flops: float, seconds: float) -> RooflinePoint:
        """Place one measured piece of work on the roofline."""
        self.peak = self.peak or device_peak(self.device, self.cache)
        self.points[name] = roofline(bytes_moved, flops, seconds, self.peak)
        return self.points[name]

    def start(self) -> None:
        self.peak = self.peak or device_peak(self.device, self.cache)
        self._busy = memory_busy_for(self.device, self._nvml)
        if self._busy.available()[0]:
            self._busy.start()

    def stop(self) -> ProfileResult:
        assert self.peak is not None, "BandwidthProfiler.stop() without start()"
        m: dict[str, tuple[float, str]] = {
            "peak_bw": (self.peak.gbps, "GB/s"), "peak_compute": (self.peak.tflops, "TFLOP/s"),
        }
        if self._busy is not None:
            m.update(self._busy.stop())
        for name, p in self.points.items():
            m[f"{name}.achieved_bw"] = (p.gbps, "GB/s")
            m[f"{name}.achieved_compute"] = (p.tflops, "TFLOP/s")
            m[f"{name}.intensity"] = (p.intensity, "FLOP/B")
            m[f"{name}.pct_peak_bw"] = (p.pct_peak_bw, "%")
            m[f"{name}.pct_peak_compute"] = (p.pct_peak_compute, "%")
            m[f"{name}.memory_bound"] = (float(p.bound == "memory"), "flag")
        artifacts = ()
        if self.artifacts_dir is not None:
            out = Path(self.artifacts_dir) / "roofline.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({"peak": asdict(self.peak),
                                       "points": {k: asdict(v) for k, v in self.points.items()}},
                                      indent=1))
            artifacts = (str(out),)
        return ProfileResult(self.name, m, artifacts)
