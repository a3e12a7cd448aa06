import contextlib
import math
import sys
import types

import pytest
import torch

from effbench.suite.errors import DeviceError
from effbench.suite.timing import Measurement, calibrate, make_timer, measure, measure_once_each


def busy(n: int = 300) -> int:
    """A pure-Python busy loop (no sleep): the CPU really works for the whole call."""
    total = 0
    for i in range(n):
        total += i * i
    return total


@pytest.fixture
def one_thread():
    """Pin torch to one thread: on a loaded 2-core box, OpenMP spin-waits distort timings."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_measure_small_matmul_keeps_samples_and_calibrates(one_thread):
    a = torch.randn(64, 64)
    b = torch.randn(64, 64)
    m = measure(lambda: torch.matmul(a, b), budget_s=0.5, min_sample_s=2e-3, target_rel_ci=0.05)
    assert isinstance(m, Measurement)
    assert len(m.samples) >= 1 and m.stats["n"] == len(m.samples)
    assert all(s > 0 for s in m.samples)
    assert m.median == m.stats["median"]
    assert m.inner_iters > 1  # a 64x64 matmul is far below 2 ms, so calls are batched
    # Each sample covers inner_iters calls and should last about min_sample_s (loose, noisy box).
    assert m.median * m.inner_iters >= 0.5 * 2e-3
    assert m.warmup_iters >= 1 and m.device == "cpu" and not m.cold_cache


def test_calibration_reaches_min_sample_s_for_busy_function():
    timer = make_timer("cpu")
    inner = calibrate(timer, busy, 2e-3)
    assert inner > 1
    assert timer.time_block(busy, inner) >= 0.5 * 2e-3
    m = measure(busy, warmup_s=0.01, budget_s=0.5, target_rel_ci=0.5)
    assert m.median * m.inner_iters >= 0.5 * 2e-3


def test_loose_target_converges_after_min_samples():
    m = measure(busy, warmup_s=0.01, budget_s=5.0, min_samples=10, target_rel_ci=0.5)
    assert m.converged and m.stop_reason == "converged"
    assert 10 <= len(m.samples) < 100
    assert m.stats["rel_ci"] <= 0.5


def test_unreachable_target_stops_at_budget_and_is_not_converged():
    budget = 0.3
    m = measure(busy, warmup_s=0.01, budget_s=budget, min_samples=5, target_rel_ci=1e-12)
    assert not m.converged and m.stop_reason == "budget"
    assert len(m.samples) >= 5
    assert m.elapsed_s <= budget + 1.5  # generous slack: CI machines are noisy


def test_max_samples_caps_sampling():
    m = measure(
        busy, warmup_s=0.0, budget_s=30.0, min_samples=8, max_samples=8, target_rel_ci=1e-12
    )
    assert len(m.samples) == 8 and m.stop_reason == "max_samples" and not m.converged


def test_slow_function_still_gets_a_sample_within_budget():
    m = measure(lambda: busy(200_000), warmup_s=0.0, budget_s=0.05, min_samples=10)
    assert len(m.samples) >= 1 and m.inner_iters == 1 and not m.converged


def test_cold_cache_is_ignored_and_noted_on_cpu():
    m = measure(busy, warmup_s=0.0, budget_s=0.2, target_rel_ci=0.5, cold_cache=True)
    assert m.cold_cache is False
    assert any("cold_cache" in note for note in m.notes)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"budget_s": 0},
        {"target_rel_ci": -1},
        {"min_samples": 0},
        {"min_samples": 5, "max_samples": 4},
        {"warmup_s": math.nan},
        {"min_sample_s": 0},
    ],
)
def test_invalid_settings_raise(kwargs):
    with pytest.raises(ValueError):
        measure(busy, **kwargs)


def test_unknown_or_missing_device_raises():
    with pytest.raises(DeviceError, match="valid"):
        measure(busy, device="tpu")
    with pytest.raises(DeviceError):
        make_timer("cpu:1")
    if not torch.cuda.is_available():
        with pytest.raises(DeviceError, match="CUDA is not available"):
            measure(busy, device="cuda")


def test_measure_once_each_interleaves_and_returns_equal_counts():
    calls: list[str] = []

    def make(name):
        return lambda: (calls.append(name), busy(50))

    out = measure_once_each(
        {"a": make("a"), "b": make("b"), "c": make("c")}, rounds=4, warmup_rounds=1
    )
    assert set(out) == {"a", "b", "c"}
    assert all(len(v) == 4 for v in out.values())
    assert all(x > 0 for v in out.values() for x in v)
    # rotation: round r starts with the r-th name (warm-up round included)
    assert calls == list("abcbcacababcbca")
    with pytest.raises(ValueError):
        measure_once_each({}, rounds=2)
    with pytest.raises(ValueError):
        measure_once_each({"a": busy}, rounds=0)


class _FakeGpu:
    """Stands in for torch.cuda: a simulated GPU clock that kernels and flushes advance."""

    def __init__(self) -> None:
        self.clock_ms = 0.0
        self.flushes = 0
        self.syncs = 0


def _fake_torch(gpu: _FakeGpu) -> types.ModuleType:
    class Event:
        def __init__(self, enable_timing: bool = False) -> None:
            assert enable_timing
            self.t = None

        def record(self) -> None:
            self.t = gpu.clock_ms

        def synchronize(self) -> None:
            gpu.syncs += 1

        def elapsed_time(self, other: "Event") -> float:
            return other.t - self.t

    class Buffer:
        def __init__(self, n: int) -> None:
            self.n = n

        def zero_(self) -> None:
            gpu.flushes += 1
            gpu.clock_ms += 5.0  # an expensive flush that must not be timed

    class Props:
        L2_cache_size = 50 * 1024 * 1024

    def synchronize(device=None) -> None:
        gpu.syncs += 1

    cuda = types.SimpleNamespace(
        is_available=lambda: True,
        device_count=lambda: 1,
        device=lambda d: contextlib.nullcontext(),
        Event=Event,
        synchronize=synchronize,
        get_device_properties=lambda d: Props(),
    )
    fake = types.ModuleType("torch")
    fake.cuda = cuda
    fake.int8 = "int8"
    fake.device = lambda s: types.SimpleNamespace(index=None if ":" not in s else int(s[5:]))
    fake.empty = lambda n, dtype, device: Buffer(n)
    return fake


@pytest.mark.parametrize("cold", [False, True])
def test_cuda_path_uses_events_in_seconds_and_excludes_flush(monkeypatch, cold):
    gpu = _FakeGpu()
    monkeypatch.setitem(sys.modules, "torch", _fake_torch(gpu))

    def kernel() -> None:
        gpu.clock_ms += 0.5  # 0.5 ms per call on the fake GPU

    m = measure(kernel, device="cuda:0", warmup_s=0.0, cold_cache=cold, budget_s=5.0)
    assert m.device == "cuda:0" and m.cold_cache is cold
    assert m.inner_iters == 1  # 0.5 ms already exceeds the 0.2 ms CUDA default sample length
    assert m.median == pytest.approx(0.5e-3)  # ms -> s, flush time excluded
    assert m.converged and m.notes == ()
    assert (gpu.flushes > 0) is cold
    assert gpu.syncs > 0
