"""Energy windows against a fake NVML (and a fake RAPL tree) driven by a fake clock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from effbench.profilers.energy import (
    EnergyProfiler,
    EnergyWindow,
    integrate_power,
    joules_per_request,
    joules_per_token,
    phase_energy,
    request_joules,
)
from effbench.profilers.nvml import NotSupported, NullNVML
from effbench.profilers.rapl import RAPL, NullRAPL


class FakeClock:
    """Time that moves only when the test (or the profiler's sleep) says so."""

    def __init__(self) -> None:
        self.now = 100.0
        self.listeners: list = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        for f in self.listeners:
            f(s)
        self.now += s


class FakeNVML:
    """A device drawing ``watts``; its energy counter (mJ) integrates that power over time."""

    def __init__(self, clock: FakeClock, watts: float = 50.0, counter: bool = True) -> None:
        self.watts, self.counter, self.mj = watts, counter, 0.0
        self.energy_calls = 0
        clock.listeners.append(self._advance)

    def _advance(self, s: float) -> None:
        self.mj += self.watts * s * 1000

    def available(self) -> tuple[bool, str]:
        return True, ""

    def device_count(self) -> int:
        return 1

    def device_name(self, index: int) -> str:
        return "Fake H100"

    def total_energy_mj(self, index: int) -> int:
        self.energy_calls += 1
        if not self.counter:
            raise NotSupported("nvmlDeviceGetTotalEnergyConsumption: Not Supported")
        return int(self.mj)

    def power_mw(self, index: int) -> int:
        return int(self.watts * 1000)

    def memory_busy_percent(self, index: int) -> int:
        return 0

    def shutdown(self) -> None:
        pass


def make(clock: FakeClock, nvml: object, rapl: object | None = None, **kw) -> EnergyProfiler:
    return EnergyProfiler("cuda:0", nvml=nvml, rapl=rapl or NullRAPL(), clock=clock,
                          sleep=clock.sleep, poll_s=1000.0, **kw)


def test_counter_windows_nested_and_named_with_baseline() -> None:
    clock = FakeClock()
    nv = FakeNVML(clock, watts=50.0)
    prof = make(clock, nv, idle_s=2.0)
    prof.start()
    assert prof.baseline is not None and prof.baseline.gpu_w == pytest.approx(50.0)
    nv.watts = 250.0
    with prof.window("request"):
        with prof.window("prefill"):
            clock.sleep(1.0)
        with prof.window("decode"):
            clock.sleep(3.0)
    res = prof.stop()
    by_path = {w.path: w for w in prof.windows}
    assert set(by_path) == {"request/prefill", "request/decode", "request", "run"}
    assert by_path["request/prefill"].gpu_j == pytest.approx(250.0)
    assert by_path["request/prefill"].gpu_net_j == pytest.approx(200.0)
    assert by_path["request/decode"].gpu_j == pytest.approx(750.0)
    assert by_path["request"].gpu_net_j == pytest.approx(800.0)
    assert by_path["request"].gpu_source == "counter"
    assert not any(w.short_window for w in prof.windows)
    m = res.metrics
    assert m["request/decode.gpu_W"] == (pytest.approx(250.0), "W")
    assert m["idle.gpu_W"] == (pytest.approx(50.0), "W")
    assert m["run.gpu_J"][0] == pytest.approx(1000.0)


def test_sampling_fallback_when_counter_not_supported() -> None:
    clock = FakeClock()
    nv = FakeNVML(clock, watts=100.0, counter=False)
    prof = make(clock, nv, idle_s=1.0)
    prof.start()
    assert any("not supported" in n for n in prof.notes)
    with prof.window("decode"):
        prof._sampler.mark()  # what the polling thread does, at a known time
        nv.watts = 300.0
        clock.sleep(2.0)
        prof._sampler.mark()
        clock.sleep(2.0)
    prof.stop()
    w = prof.windows[0]
    assert w.gpu_source == "sampled"
    # 100 W ramps to 300 W over the first 2 s (400 J), then 300 W for 2 s (600 J)
    assert w.gpu_j == pytest.approx(1000.0)
    assert w.gpu_net_j == pytest.approx(600.0)


def test_short_window_flagged_not_zero() -> None:
    clock = FakeClock()
    nv = FakeNVML(clock, watts=200.0)
    prof = make(clock, nv, idle_s=0.0, counter_period_s=0.1)
    with prof.window("step"):
        clock.sleep(0.02)
    w = prof.windows[0]
    assert w.short_window and w.gpu_source == "instant"
    assert w.gpu_j == pytest.approx(4.0)
    assert w.gpu_net_j is None  # no baseline measured


def test_rapl_cpu_energy_with_baseline(tmp_path: Path) -> None:
    d = tmp_path / "intel-rapl:0"
    d.mkdir()
    (d / "name").write_text("package-0")
    (d / "max_energy_range_uj").write_text("1000000000")
    (d / "energy_uj").write_text("0")
    clock = FakeClock()
    uj = [0]
    clock.listeners.append(lambda s: uj.__setitem__(0, uj[0] + int(10e6 * s)))  # 10 W
    clock.listeners.append(lambda s: (d / "energy_uj").write_text(str(uj[0])))
    prof = EnergyProfiler("cpu", tmp_path, rapl=RAPL(tmp_path), clock=clock,
                          sleep=clock.sleep, idle_s=1.0)
    assert prof.available() == (True, "")
    prof.start()
    clock.sleep(3.0)
    res = prof.stop()
    assert res.metrics["run.cpu.package-0_J"][0] == pytest.approx(30.0)
    assert res.metrics["run.cpu.package-0_net_J"][0] == pytest.approx(0.0)
    assert "run.gpu_J" not in res.metrics
    saved = json.loads(Path(res.artifacts[0]).read_text())
    assert saved["windows"][0]["cpu_j"]["package-0"] == pytest.approx(30.0)


def test_unavailable_reason_names_both_sources() -> None:
    prof = EnergyProfiler("cuda:0", nvml=NullNVML("no NVIDIA GPU (NVML: Not Found)"),
                          rapl=NullRAPL("RAPL not exposed by this kernel"))
    ok, why = prof.available()
    assert not ok
    assert why == "no NVIDIA GPU (NVML: Not Found); RAPL not exposed by this kernel"


def test_integrate_power_trapezoid_and_edges() -> None:
    s = [(1.0, 100.0), (2.0, 200.0), (3.0, 200.0)]
    assert integrate_power(s, 1.0, 3.0) == pytest.approx(350.0)
    assert integrate_power(s, 0.0, 1.0) == pytest.approx(100.0)  # held before first sample
    assert integrate_power(s, 1.5, 2.0) == pytest.approx(0.5 * 175.0)
    assert integrate_power([], 0.0, 1.0) == 0.0


def win(name: str, j: float, s: float = 1.0) -> EnergyWindow:
    return EnergyWindow(name, name, s, gpu_j=j, gpu_net_j=j / 2, gpu_source="counter",
                        cpu_j={"package-0": 1.0, "package-0/core": 0.5})


def test_joules_per_token_and_request() -> None:
    phases = phase_energy([win("prefill", 9.0), win("decode", 19.0), win("decode", 19.0)])
    assert phases["decode"].windows == 2
    assert phases["decode"].joules == pytest.approx(40.0)  # core is inside the package
    jpt = joules_per_token(phases, {"prefill": 100, "decode": 20, "other": 5})
    assert jpt == {"prefill": pytest.approx(0.1), "decode": pytest.approx(2.0)}
    assert joules_per_token(phases, {"decode": 20}, net=True)["decode"] == pytest.approx(0.95)
    assert joules_per_request(phases, 4)["decode"] == pytest.approx(10.0)
    assert request_joules(2.0, 64) == pytest.approx(128.0)
    with pytest.raises(ValueError):
        joules_per_request(phases, 0)


def test_registry_builds_energy_and_rejects_unknown(tmp_path: Path) -> None:
    from effbench.profilers.registry import PROFILERS, build

    assert set(PROFILERS) == {"energy", "bandwidth", "host", "memory", "tklqt"}
    built = build(["energy", "memory", "tklqt"], "cpu", tmp_path)
    assert [p.name for p in built] == ["energy", "memory", "tklqt"]
    assert isinstance(built[0], EnergyProfiler)
    tk = built[2]  # whichever TKLQT exists: built with our arguments, it must run
    if tk.available()[0]:
        tk.start()
        res = tk.stop()
        assert res.profiler == "tklqt" and all(str(tmp_path) in a for a in res.artifacts)
    with pytest.raises(ValueError, match="valid profilers"):
        build(["energy", "nope"], "cpu", tmp_path)


class FakePynvml:
    """The slice of the ``pynvml`` module that effbench.profilers.nvml.NVML calls."""

    class NVMLError(Exception):
        pass

    class NVMLError_NotSupported(NVMLError):  # noqa: N801 - pynvml's name
        pass

    class Util:
        memory = 37

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return 1

    def nvmlDeviceGetHandleByIndex(self, i: int) -> str:  # noqa: N802
        return f"h{i}"

    def nvmlDeviceGetName(self, h: str) -> bytes:  # noqa: N802
        return b"NVIDIA H100 80GB HBM3"

    def nvmlDeviceGetTotalEnergyConsumption(self, h: str) -> int:  # noqa: N802
        raise self.NVMLError_NotSupported("Not Supported")

    def nvmlDeviceGetPowerUsage(self, h: str) -> int:  # noqa: N802
        return 123_000

    def nvmlDeviceGetUtilizationRates(self, h: str) -> Util:  # noqa: N802
        return self.Util()

    def nvmlShutdown(self) -> None:  # noqa: N802
        pass


def test_nvml_wrapper_maps_not_supported() -> None:
    from effbench.profilers.nvml import NVML

    nv = NVML(FakePynvml())
    assert nv.available() == (True, "") and nv.device_name(0) == "NVIDIA H100 80GB HBM3"
    assert nv.power_mw(0) == 123_000 and nv.memory_busy_percent(0) == 37
    with pytest.raises(NotSupported):
        nv.total_energy_mj(0)


def test_open_nvml_without_driver_says_why() -> None:
    from effbench.profilers.nvml import open_nvml

    nv = open_nvml()
    if nv.available()[0]:
        pytest.skip("an NVIDIA driver is present here")
    ok, why = nv.available()
    assert not ok and why.startswith("no NVIDIA GPU (")
    with pytest.raises(NotSupported):
        nv.power_mw(0)


def test_power_sampler_thread_integrates_real_time() -> None:
    import time

    from effbench.profilers.energy import PowerSampler

    class Steady:
        def power_mw(self, index: int) -> int:
            return 200_000

    s = PowerSampler(Steady(), 0, period_s=0.002)  # type: ignore[arg-type]
    s.start()
    t0 = s.mark()
    time.sleep(0.05)
    t1 = s.mark()
    s.stop()
    assert len(s._samples) > 5  # the thread sampled between the edges
    assert s.energy_j(t0, t1) == pytest.approx(200.0 * (t1 - t0))
