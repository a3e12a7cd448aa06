"""Roofline math, datasheet peak lookup, measured peaks cached per machine, memory-busy."""

from __future__ import annotations

from pathlib import Path

import pytest

import effbench.profilers.bandwidth as bw
from effbench.profilers.bandwidth import (
    BandwidthProfiler,
    NullMemoryBusy,
    NVMLMemoryBusy,
    Peak,
    PeakCache,
    device_peak,
    known_peak,
    memory_busy_for,
    roofline,
)
from effbench.profilers.nvml import NotSupported

PEAK = Peak("test", tflops=100.0, gbps=1000.0, source="test")  # ridge 100 FLOP/B


def test_roofline_memory_bound() -> None:
    p = roofline(bytes_moved=500e9, flops=1e12, seconds=1.0, peak=PEAK)
    assert p.gbps == pytest.approx(500.0)
    assert p.tflops == pytest.approx(1.0)
    assert p.intensity == pytest.approx(2.0)
    assert p.pct_peak_bw == pytest.approx(50.0)
    assert p.pct_peak_compute == pytest.approx(1.0)
    assert p.attainable_tflops == pytest.approx(2.0)  # 2 FLOP/B x 1000 GB/s
    assert p.bound == "memory"


def test_roofline_compute_bound() -> None:
    p = roofline(bytes_moved=1e9, flops=50e12, seconds=0.5, peak=PEAK)
    assert p.intensity == pytest.approx(50_000.0)
    assert p.tflops == pytest.approx(100.0)
    assert p.attainable_tflops == pytest.approx(100.0)
    assert p.bound == "compute" and PEAK.ridge == pytest.approx(100.0)
    with pytest.raises(ValueError):
        roofline(1.0, 1.0, 0.0, PEAK)


@pytest.mark.parametrize(("name", "expect"), [
    ("NVIDIA H100 80GB HBM3", "H100 SXM"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H100 NVL", "H100 NVL"),
    ("NVIDIA H200", "H200 SXM"),
    ("NVIDIA A100-SXM4-80GB", "A100 80GB SXM"),
    ("NVIDIA A100-SXM4-40GB", "A100 40GB SXM"),
    ("NVIDIA L4", "L4"),
    ("NVIDIA A10", "A10"),
    ("Tesla V100-SXM2-16GB", "V100 SXM2"),
    ("NVIDIA GeForce RTX 4090", "RTX 4090"),
])
def test_known_peak_by_name(name: str, expect: str) -> None:
    peak = known_peak(name)
    assert peak is not None and peak.device == expect


def test_unknown_names_and_table_sanity() -> None:
    assert known_peak("NVIDIA L40S") is None
    assert known_peak("AMD EPYC") is None
    for _, peak in bw.KNOWN_PEAKS:
        assert 50 < peak.tflops < 2000 and 200 < peak.gbps < 6000, peak
        assert 50 < peak.ridge < 600, peak
    h100 = known_peak("H100 SXM5")
    assert h100 is not None and h100.gbps == 3350.0 and h100.tflops == pytest.approx(989.5)


def test_cpu_peaks_measured_once_then_cached(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_measure(device: str = "cpu") -> Peak:
        calls.append(device)
        return Peak("cpu", 0.1, 20.0, "measured")

    monkeypatch.setattr(bw, "measure_peaks", fake_measure)
    cache = PeakCache(tmp_path / "sub" / "peaks.json")
    quiet = lambda: (False, "quiet")  # noqa: E731 - a busy machine's peaks are never cached
    first = device_peak("cpu", cache, busy=quiet)
    again = device_peak("cpu", PeakCache(tmp_path / "sub" / "peaks.json"), busy=quiet)
    assert calls == ["cpu"] and first == again
    assert bw.fingerprint("cpu") in (tmp_path / "sub" / "peaks.json").read_text()


def test_measure_peaks_small_is_positive() -> None:
    p = bw.measure_peaks("cpu", copy_mib=4, matmul_n=128, repeats=1)
    assert p.gbps > 0 and p.tflops > 0 and p.source.startswith("measured")


class BusyNVML:
    def __init__(self, supported: bool = True) -> None:
        self.supported = supported

    def available(self) -> tuple[bool, str]:
        return True, ""

    def memory_busy_percent(self, index: int) -> int:
        if not self.supported:
            raise NotSupported("utilization")
        return 40


def test_memory_busy_sampler_and_null() -> None:
    s = NVMLMemoryBusy(BusyNVML(), period_s=0.001)  # type: ignore[arg-type]
    assert s.available() == (True, "")
    s.start()
    m = s.stop()
    assert m["memory_busy_mean"] == (40.0, "%")
    assert not NVMLMemoryBusy(BusyNVML(False)).available()[0]  # type: ignore[arg-type]
    null = memory_busy_for("cpu")
    assert isinstance(null, NullMemoryBusy) and null.available()[1].startswith("device is cpu")


def test_profiler_records_points(tmp_path: Path) -> None:
    prof = BandwidthProfiler("cpu", tmp_path, cache=PeakCache(tmp_path / "p.json"))
    prof.peak = PEAK  # skip measuring
    prof.start()
    prof.record("decode", 500e9, 1e12, 1.0)
    res = prof.stop()
    assert res.metrics["decode.achieved_bw"] == (pytest.approx(500.0), "GB/s")
    assert res.metrics["decode.memory_bound"] == (1.0, "flag")
    assert res.metrics["peak_bw"] == (1000.0, "GB/s")
    assert Path(res.artifacts[0]).name == "roofline.json"
