"""Metric declarations: what a metric means is declared once, and nothing can drift from it.

The level helpers refuse an undeclared metric or one produced with another unit or direction;
the gate's class comes from the declaration; profiler readings take their declared direction;
and the built-in profilers report exactly the units profilers/metrics.py declares for them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from effbench.profilers.bandwidth import BandwidthProfiler, Peak
from effbench.profilers.energy import Baseline, EnergyWindow, window_metrics
from effbench.profilers.memory import MemoryProfiler
from effbench.profilers.tklqt_profiler import METRIC_UNITS
from effbench.suite import gate, metrics
from effbench.suite.levels import from_samples, profiler_reading, scalar
from effbench.suite.metrics import MetricSpec

PROFILERS_DIR = Path(__file__).parents[2] / "profilers"


@pytest.fixture
def scratch() -> Iterator[None]:
    """Declarations made by a test are forgotten afterwards."""
    metrics.load()
    saved = dict(metrics._EXACT), list(metrics._PATTERNS), dict(metrics._ORDER)
    yield
    metrics._EXACT.clear()
    metrics._EXACT.update(saved[0])
    metrics._PATTERNS[:] = saved[1]
    metrics._ORDER.clear()
    metrics._ORDER.update(saved[2])


def test_helpers_refuse_undeclared_metrics_and_disagreeing_units_or_directions():
    assert scalar("flops", 8.0, "FLOP", "lower").value == 8.0
    assert from_samples("latency", [1e-3, 2e-3, 3e-3], "s", "lower").value == 2e-3
    with pytest.raises(ValueError, match="'latncy' is not declared"):
        from_samples("latncy", [1e-3], "s", "lower")
    with pytest.raises(ValueError, match="declared \\(kernel\\) with unit 's'.*unit 'ms'"):
        from_samples("latency", [1.0], "ms", "lower")
    with pytest.raises(ValueError, match="direction 'lower'.*direction 'higher'"):
        scalar("bytes_per_token", 2048, "B", "higher")


def test_declarations_are_validated_and_declared_once(scratch):
    with pytest.raises(ValueError, match="direction must be one of"):
        MetricSpec("m", "s", "down", "timing")
    with pytest.raises(ValueError, match="kind must be one of"):
        MetricSpec("m", "s", "lower", "noisy")
    first = metrics.declare("kernel", MetricSpec("probe_ms", "ms", "lower", "timing"))
    assert metrics.declare("kernel", MetricSpec("probe_ms", "ms", "lower", "timing")) == first
    with pytest.raises(ValueError, match="'probe_ms' is declared twice.*kernel: ms.*engine: s"):
        metrics.declare("engine", MetricSpec("probe_ms", "s", "lower", "timing"))
    assert metrics.get("probe_ms").source == "kernel"


def test_every_level_metric_is_declared_with_a_kind():
    levels = {s.source for s in metrics.declared()}
    assert {"kernel", "engine", "serving", "profiler", "runner"} <= levels
    for s in metrics.declared():
        assert s.kind in metrics.KINDS and s.direction in metrics.DIRECTIONS, s


def test_gate_classes_come_from_the_declarations(scratch):
    expected = {"latency": "timing", "speedup": "timing", "ttft": "timing",
                "bytes_per_token": "count", "exact_match": "count",
                "acceptance_rate": "count", "perplexity": "numeric",
                "key_rel_error": "numeric", "energy.run.gpu_J": "timing"}
    assert {m: gate.metric_class(m) for m in expected} == expected
    assert gate.metric_class("some_other_tools_metric") == "timing"
    metrics.declare("kernel", MetricSpec("probe_rel_error", "rel", "lower", "count"))
    assert gate.metric_class("probe_rel_error") == "count"  # the declaration, not the name
    assert gate.DETERMINISTIC_CLASSES == ("count", "numeric")


def test_placeholders_match_run_time_names_most_specific_first():
    assert metrics.spec("energy.tech/decode.gpu_J").name == "energy.<path>.gpu_J"
    assert metrics.spec("energy.run.gpu1_net_J").name == "energy.<path>.gpu<N>_net_J"
    assert metrics.spec("energy.run.cpu.package-0/dram_net_J").name == (
        "energy.<path>.cpu.<zone>_net_J")
    assert metrics.spec("energy.idle.s").name == "energy.idle.s"
    assert metrics.spec("energy.gpu_J") is None  # a placeholder stands for something


def test_profiler_readings_take_the_declared_direction():
    assert profiler_reading("bandwidth.decode.pct_peak_bw", 40.0, "%").direction == "higher"
    assert profiler_reading("energy.run.gpu_J", 3.0, "J").direction == "lower"
    assert profiler_reading("host.native_share", 0.2, "fraction").direction == "higher"
    # an undeclared reading (a third-party profiler) is kept: rates higher, the rest lower
    assert profiler_reading("mine.rate", 1.0, "req/s").direction == "higher"
    assert profiler_reading("mine.calls", 1.0, "count").direction == "lower"


def _assert_declared(produced: dict[str, str]) -> None:
    wrong = {}
    for name, unit in produced.items():
        spec = metrics.spec(name)
        if spec is None or spec.unit != unit:
            wrong[name] = (unit, spec and spec.unit)
    assert not wrong, f"profiler metrics not declared with their unit (reported, declared): {wrong}"


def test_tklqt_and_energy_report_the_declared_units():
    _assert_declared({f"tklqt.{k}": u for k, u in METRIC_UNITS.items()})
    windows = [
        EnergyWindow("run", "run", 1.0, gpu_j=2.0, gpu_net_j=1.0, gpu_source="counter",
                     cpu_j={"package-0": 1.0, "package-0/dram": 0.5},
                     cpu_net_j={"package-0": 0.5, "package-0/dram": 0.2},
                     gpu_j_by_device={"gpu0": 1.0, "gpu1": 1.0},
                     gpu_net_j_by_device={"gpu0": 0.5, "gpu1": 0.5}),
        EnergyWindow("decode", "run/decode", 0.5, gpu_j=1.0, gpu_net_j=0.5),
    ]
    baseline = Baseline(1.0, 100.0, {"package-0": 10.0}, {"gpu0": 50.0, "gpu1": 50.0})
    produced = window_metrics(windows, baseline)
    assert len(produced) > 15
    _assert_declared({f"energy.{k}": u for k, (_, u) in produced.items()})


def test_bandwidth_and_memory_report_the_declared_units():
    prof = BandwidthProfiler("cpu")
    prof.peak = Peak("cpu", 1.0, 100.0, "test")
    prof.record("decode", 1e6, 2e6, 1e-3)
    produced = prof.stop().metrics
    mem = MemoryProfiler("cpu").stop().metrics
    _assert_declared({f"bandwidth.{k}": u for k, (_, u) in produced.items()}
                     | {f"memory.{k}": u for k, (_, u) in mem.items()})


@pytest.mark.parametrize("module", ["bandwidth", "host", "memory"])
def test_literal_profiler_metrics_are_declared(module):
    """Metrics a profiler writes as literal ``"name": (value, "unit")`` entries, including
    those only reached on hardware this machine may lack (NVML memory-busy, CUDA peaks).
    """
    tree = ast.parse((PROFILERS_DIR / f"{module}.py").read_text())
    produced = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if (isinstance(key, ast.Constant) and isinstance(key.value, str)
                        and isinstance(value, ast.Tuple) and len(value.elts) == 2
                        and isinstance(value.elts[1], ast.Constant)
                        and isinstance(value.elts[1].value, str)):
                    produced[f"{module}.{key.value}"] = value.elts[1].value
    assert produced, f"no literal metric found in profilers/{module}.py: parser out of date?"
    _assert_declared(produced)


def test_every_declared_metric_has_a_class_a_reader_understands():
    from effbench.suite import metrics

    specs = metrics.declared()
    assert specs
    assert {s.category for s in specs} <= {"timing", "deterministic", "quality"}
    assert metrics.spec("perplexity").category == "quality"
    assert metrics.spec("exact_match").category == "deterministic"
    assert metrics.spec("latency").category == "timing"
