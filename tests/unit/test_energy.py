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


# -- torch device -> NVML index, and several GPUs at once ----------------------------------


def test_nvml_index_follows_cuda_visible_devices() -> None:
    from effbench.profilers.nvml import nvml_index

    assert nvml_index(1, None) == 1  # unset: cuda:N is NVML's N
    assert nvml_index(0, "2,0") == 2 and nvml_index(1, " 2, 0 ") == 0
    uuids = {"GPU-8932f937-d72c-4106-c12f-20bd9faed9f6": 3, "MIG-c6c5a5e0-2b5d": 1}
    lookup = uuids.__getitem__  # a KeyError is a LookupError, as NVML.index_of_uuid raises
    assert nvml_index(1, "0,GPU-8932f937-d72c-4106-c12f-20bd9faed9f6", lookup) == 3
    assert nvml_index(0, "MIG-c6c5a5e0-2b5d", lookup) == 1


@pytest.mark.parametrize(("index", "visible", "count", "message"), [
    (1, "0,oops,1", None, "CUDA_VISIBLE_DEVICES='0,oops,1' shows 1 GPU(s), so cuda:1 has no GPU "
     "('oops' is neither a GPU index nor a GPU-/MIG- UUID, so it and later entries are hidden)"),
    (0, "", None, "CUDA_VISIBLE_DEVICES='' shows 0 GPU(s), so cuda:0 has no GPU"),
    (1, "0,-1,1", None, "CUDA_VISIBLE_DEVICES='0,-1,1' shows 1 GPU(s), so cuda:1 has no GPU "
     "('-1' is neither a GPU index nor a GPU-/MIG- UUID, so it and later entries are hidden)"),
    (0, "4", 2, "CUDA_VISIBLE_DEVICES='4' shows 0 GPU(s), so cuda:0 has no GPU "
     "('4' is not a GPU index below 2, so it and later entries are hidden)"),
    (0, "GPU-dead", None, "CUDA_VISIBLE_DEVICES='GPU-dead': no GPU with UUID GPU-dead"),
])
def test_nvml_index_bad_entries_are_one_clear_line(index, visible, count, message) -> None:
    from effbench.profilers.nvml import nvml_index

    def lookup(uuid: str) -> int:
        raise KeyError(f"no GPU with UUID {uuid}")

    with pytest.raises(ValueError) as err:
        nvml_index(index, visible, lookup, count)
    assert str(err.value) == message and "\n" not in message
    assert nvml_index(0, "0,oops,1") == 0  # entries before a bad one stay visible, as in CUDA


class UUIDPynvml(FakePynvml):
    """Three GPUs with UUIDs, one of them split into a MIG slice."""

    UUIDS = ("GPU-aaaa-0000", "GPU-bbbb-1111", "GPU-bbbc-2222")

    def nvmlDeviceGetCount(self) -> int:  # noqa: N802
        return 3

    def nvmlDeviceGetUUID(self, h: str) -> str:  # noqa: N802
        return self.UUIDS[int(h[1:])]

    def nvmlDeviceGetHandleByUUID(self, uuid: bytes | str) -> str:  # noqa: N802
        if uuid != "MIG-1234":
            raise self.NVMLError("Not Found")
        return "mig-of-h2"

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, h: str) -> str:  # noqa: N802
        return h.removeprefix("mig-of-")

    def nvmlDeviceGetIndex(self, h: str) -> int:  # noqa: N802
        return int(h[1:])


def test_nvml_resolves_uuids_prefixes_and_mig_to_the_parent_gpu() -> None:
    from effbench.profilers.nvml import NVML

    nv = NVML(UUIDPynvml())
    assert nv.index_of_uuid("GPU-bbbb-1111") == 1
    assert nv.index_of_uuid("GPU-aa") == 0  # a unique prefix, as CUDA accepts
    assert nv.index_of_uuid("MIG-1234") == 2
    assert nv.index_of_uuid("MIG-GPU-bbbc-2222/1/0") == 2  # the pre-R470 MIG form
    with pytest.raises(LookupError, match="2 GPUs"):
        nv.index_of_uuid("GPU-bbb")
    with pytest.raises(LookupError, match="no MIG device"):
        nv.index_of_uuid("MIG-9999")


class ByIndex:
    """Several FakeNVML boards behind one NVML, addressed by NVML index."""

    def __init__(self, boards: dict[int, FakeNVML]) -> None:
        self.boards = boards

    def available(self) -> tuple[bool, str]:
        return True, ""

    def device_count(self) -> int:
        return 1 + max(self.boards)

    def total_energy_mj(self, index: int) -> int:
        return self.boards[index].total_energy_mj(index)

    def power_mw(self, index: int) -> int:
        return self.boards[index].power_mw(index)

    def index_of_uuid(self, uuid: str) -> int:
        return {"GPU-left": 3, "GPU-right": 1}[uuid]

    def shutdown(self) -> None:
        pass


@pytest.mark.parametrize("counter", [True, False])
def test_two_gpus_mapped_summed_and_kept_per_device(monkeypatch, tmp_path, counter) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-left,1")
    clock = FakeClock()
    boards = {3: FakeNVML(clock, 100.0, counter), 1: FakeNVML(clock, 50.0, counter)}
    prof = EnergyProfiler(["cuda:0", "cuda:1"], tmp_path, nvml=ByIndex(boards),
                          rapl=NullRAPL(), clock=clock, sleep=clock.sleep, idle_s=1.0,
                          poll_s=1000.0)
    assert prof.available() == (True, "") and prof.indices() == [3, 1]
    prof.start()
    assert prof.baseline.gpu_w == pytest.approx(150.0)
    assert prof.baseline.gpu_w_by_device == {"gpu0": pytest.approx(100.0),
                                             "gpu1": pytest.approx(50.0)}
    boards[3].watts = 300.0  # cuda:0 (NVML 3) gets busy, cuda:1 stays idle
    with prof.window("decode"):
        for s in prof._samplers.values():
            s.mark()
        clock.sleep(2.0)
    res = prof.stop()
    w = next(w for w in prof.windows if w.name == "decode")
    assert w.gpu_source == ("counter" if counter else "sampled")
    # sampled power is linear between samples, so the jump to 300 W is ramped in that mode
    busy = 600.0 if counter else 400.0
    assert w.gpu_j_by_device == {"gpu0": pytest.approx(busy), "gpu1": pytest.approx(100.0)}
    assert w.gpu_j == pytest.approx(busy + 100.0)
    assert w.gpu_net_j_by_device == {"gpu0": pytest.approx(busy - 200.0),
                                     "gpu1": pytest.approx(0.0)}
    m = res.metrics
    assert m["decode.gpu_J"][0] == pytest.approx(busy + 100.0)
    assert m["decode.gpu0_J"][0] == pytest.approx(busy)
    assert m["decode.gpu1_J"][0] == pytest.approx(100.0)
    assert m["decode.gpu_net_J"][0] == pytest.approx(busy - 200.0)
    assert m["idle.gpu1_W"] == (pytest.approx(50.0), "W")
    saved = json.loads(Path(res.artifacts[0]).read_text())
    assert saved["devices"] == [{"device": "cuda:0", "key": "gpu0", "nvml_index": 3},
                                {"device": "cuda:1", "key": "gpu1", "nvml_index": 1}]


def test_one_gpu_keeps_its_metric_names_and_reads_the_mapped_board(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    clock = FakeClock()
    boards = {0: FakeNVML(clock, 999.0), 1: FakeNVML(clock, 80.0)}
    prof = EnergyProfiler("cuda", nvml=ByIndex(boards), rapl=NullRAPL(), clock=clock,
                          sleep=clock.sleep, idle_s=0.0)
    prof.start()
    clock.sleep(1.0)
    m = prof.stop().metrics
    assert prof.index == 1 and m["run.gpu_J"][0] == pytest.approx(80.0)
    assert not any(k.startswith(("run.gpu0", "run.gpu1")) for k in m)


def test_unmappable_device_makes_the_profiler_unavailable(monkeypatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,oops")
    clock = FakeClock()
    prof = EnergyProfiler("cuda:0,cuda:1", nvml=ByIndex({0: FakeNVML(clock)}),
                          rapl=NullRAPL(), clock=clock, sleep=clock.sleep)
    ok, why = prof.available()
    assert not ok
    assert why.startswith("CUDA_VISIBLE_DEVICES='0,oops' shows 1 GPU(s), so cuda:1 has no GPU")
    with pytest.raises(ValueError, match="one index per GPU"):
        EnergyProfiler(["cuda:0", "cuda:1"], nvml_index=2)
