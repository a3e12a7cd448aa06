"""Roofline position of measured work: achieved GB/s and TFLOP/s against the device's peaks.

Bytes and FLOPs are analytic (the caller counts them: weights + KV cache + activations read and
written; 2*M*N*K per GEMM) and divided by measured seconds, as tritonbench's ``gbps`` does.
Peaks come from a table of NVIDIA datasheet figures matched by device name; for CPUs and unknown
devices they are measured once (a large tensor copy, a large fp32 matmul) and cached per machine
in a JSON file. A second, independent signal is NVML's memory-busy duty cycle (percent of time
device memory was read or written; *not* a fraction of peak bandwidth).
"""

from __future__ import annotations

import json
import os
import platform
import re
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
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


@dataclass(frozen=True)
class Peak:
    """A device's peak dense BF16/FP16 tensor TFLOP/s (fp32 for measured CPUs) and memory GB/s."""

    device: str
    tflops: float
    gbps: float
    source: str

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


def _best_seconds(fn: Callable[[], object], dev: torch.device, repeats: int) -> float:
    fn()
    _sync(dev)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(dev)
        best = min(best, time.perf_counter() - t)
    return best


def measure_peaks(device: str = "cpu", copy_mib: int = 256, matmul_n: int = 2048,
                  repeats: int = 3) -> Peak:
    """Copy bandwidth (read + write bytes of a large tensor copy) and fp32 matmul TFLOP/s."""
    dev = torch.device(device)
    n = copy_mib * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    copy_s = _best_seconds(lambda: dst.copy_(src), dev, repeats)
    src = dst = torch.empty(0)  # free the copy buffers before the matmul
    a = torch.randn(matmul_n, matmul_n, device=dev)
    b = torch.randn(matmul_n, matmul_n, device=dev)
    mm_s = _best_seconds(lambda: a @ b, dev, repeats)
    return Peak(fingerprint(device), 2 * matmul_n**3 / mm_s / 1e12,
                2 * n * 4 / copy_s / 1e9, "measured (tensor copy, fp32 matmul)")


class PeakCache:
    """Measured peaks in a JSON file, ``fingerprint -> Peak`` fields."""

    def __init__(self, path: Path | str = DEFAULT_CACHE) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, dict]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> Peak | None:
        got = self._load().get(key)
        return Peak(**got) if got else None

    def put(self, key: str, peak: Peak) -> None:
        data = self._load()
        data[key] = asdict(peak)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(data, indent=1, sort_keys=True))


def device_peak(device: str = "cpu", cache: PeakCache | None = None) -> Peak:
    """The datasheet peak of a listed GPU, else measured peaks (cached per machine)."""
    dev = torch.device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        peak = known_peak(torch.cuda.get_device_name(dev))
        if peak is not None:
            return peak
    cache = cache or PeakCache()
    key = fingerprint(device)
    peak = cache.get(key)
    if peak is None:
        peak = measure_peaks(device)
        cache.put(key, peak)
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
