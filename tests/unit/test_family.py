"""Families are declared once: a new family is one module, and nothing else changes.

The proof is a toy family written as a single module (its own protocol, its ``[kernel.toy]``
preset table, its kernel workloads and runner, the metrics it produces, two techniques with a
baseline), imported, then run from a preset TOML through the real runner at kernel level. No
other module of the project knows about it: cases, presets, the runner, the pytest plugin, the
report, the gate and ``effbench list`` all reach it through the ``Family`` object and the
declarations. Registration also refuses a technique whose class lacks a protocol method.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from effbench.suite import cli, family, gate, metrics, presets, registry, report, runner
from effbench.suite.errors import ConfigError
from effbench.suite.store import records_to_frame

TOY_MODULE = '''
"""A toy family in one module: sums 0..n-1, measured at the kernel level."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from effbench.suite import registry
from effbench.suite.family import Family, register_family
from effbench.suite.levels import scalar
from effbench.suite.metrics import MetricSpec, declare
from effbench.suite.registry import register
from effbench.suite.technique import Param


@runtime_checkable
class Summer(Protocol):
    def total(self, n: int) -> int: ...


declare(
    "kernel",
    MetricSpec("toy_total", "count", "higher", "count", "sum of 0..n-1"),
    MetricSpec("toy_error", "abs", "lower", "numeric", "|total - baseline total|"),
)


@dataclass(frozen=True)
class ToySettings:
    sizes: tuple[int, ...] = (4,)


def _section(got: Any, sec: Any) -> ToySettings:
    sec.check_keys(got, ["sizes"])
    sizes = got.get("sizes", list(ToySettings.sizes))
    for n in sizes:
        sec.typed(n, int, "sizes", 1)
    return ToySettings(tuple(sizes))


def _workloads(preset: Any) -> list[str]:
    return [f"n{n}" for n in preset.kernel["toy"].sizes]


def _run(case: Any, ctx: Any) -> list[Any]:
    n = int(case.workload[1:])
    got = registry.get(case.technique).build(case.param_dict).total(n)
    ref = registry.baseline_of(case.family).build().total(n)
    return [scalar("toy_total", got, "count", "higher"),
            scalar("toy_error", abs(got - ref), "abs", "lower")]


def _timed(case: Any, ctx: Any, impl: Any) -> Any:
    n = int(case.workload[1:])
    return lambda: impl.total(n)


FAMILY = register_family(Family(
    name="toy", summary="toy summers", protocol=Summer, levels=("kernel",),
    kernel_workloads=_workloads, kernel_run=_run, kernel_timed=_timed,
    kernel_section=_section, order=50,
))


@register(name="toy-loop", family="toy", summary="adds one by one", baseline=True,
          lossless=True, levels=("kernel",))
class LoopSum:
    def total(self, n: int) -> int:
        return sum(range(n))


@register(name="toy-formula", family="toy", summary="closed form, plus an offset",
          params=[Param("offset", "int", 0, min=0)], levels=("kernel",))
class FormulaSum:
    def __init__(self, offset: int = 0) -> None:
        self.offset = offset

    def total(self, n: int) -> int:
        return n * (n - 1) // 2 + self.offset
'''

PRESET = """
[run]
name = "toy"
case_budget_s = 0.05

[kernel.toy]
sizes = [4, 8]

[[bench]]
technique = "toy-loop"

[[bench]]
technique = "toy-formula"
params = { offset = [0, 1] }
"""


@pytest.fixture
def toy(tmp_path: Path) -> Iterator[str]:
    """Import the toy family module; afterwards forget it (family, techniques, metrics)."""
    registry.load_all()
    metrics.load()  # every built-in declaration is in before the snapshot
    tables = (family._FAMILIES, registry._REGISTRY, metrics._EXACT, metrics._ORDER)
    saved = [dict(t) for t in tables]
    patterns = list(metrics._PATTERNS)
    (tmp_path / "effbench_toy_family.py").write_text(TOY_MODULE)
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("effbench_toy_family")
        yield "toy"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("effbench_toy_family", None)
        for table, old in zip(tables, saved):
            table.clear()
            table.update(old)
        metrics._PATTERNS[:] = patterns


def _preset(tmp_path: Path, text: str = PRESET) -> presets.Preset:
    path = tmp_path / "toy.toml"
    path.write_text(text)
    return presets.load(str(path))


def test_a_family_declared_in_one_module_runs_through_the_real_runner(toy, tmp_path):
    out = runner.run(_preset(tmp_path), results=str(tmp_path / "results"), progress=False,
                     log=lambda m: None)
    assert (out.cases, out.failed) == (6, 0)  # 3 parameter sets x 2 sizes
    recs = out.store.records()
    assert {r.family for r in recs} == {"toy"} and {r.level for r in recs} == {"kernel"}
    totals = {(r.technique, r.params.get("offset"), r.workload): r.value
              for r in recs if r.metric == "toy_total"}
    assert totals == {("toy-loop", None, "n4"): 6, ("toy-loop", None, "n8"): 28,
                      ("toy-formula", 0, "n4"): 6, ("toy-formula", 0, "n8"): 28,
                      ("toy-formula", 1, "n4"): 7, ("toy-formula", 1, "n8"): 29}
    errors = {r.params.get("offset"): r.value for r in recs if r.metric == "toy_error"}
    assert errors == {None: 0, 0: 0, 1: 1}  # against the registered baseline
    assert all(r.unit and r.direction for r in recs)
    # the report, the gate and the CLI know it without being told
    tables = report.summary_table(records_to_frame(recs))
    assert list(tables) == ["toy / kernel"]
    assert list(tables["toy / kernel"].columns[-2:]) == ["toy_total", "toy_error"]
    assert gate.metric_class("toy_total") == "count"
    assert gate.metric_class("toy_error") == "numeric"


def test_the_family_brings_its_preset_table_and_timed_work(toy, tmp_path, capsys):
    from effbench.suite.cases import expand
    from effbench.suite.context import RunContext
    from effbench.suite.pytest_plugin import kernel_callable

    preset = _preset(tmp_path)
    assert preset.kernel["toy"].sizes == (4, 8)
    case = next(c for c in expand(preset, "cpu") if c.technique == "toy-formula")
    assert kernel_callable(case, RunContext(preset, None, None))() == 6 + case.param_dict[
        "offset"]
    bad = PRESET.replace("sizes = [4, 8]", "sizes = [4, 0]")
    with pytest.raises(ConfigError) as e:
        _preset(tmp_path, bad)
    assert str(e.value).startswith(f"{tmp_path / 'toy.toml'}:7:")
    assert "'sizes' = 0 must be >= 1" in str(e.value)
    with pytest.raises(ConfigError, match=r"unknown key 'size' in \[kernel.toy\]"):
        _preset(tmp_path, PRESET.replace("sizes = [4, 8]", "size = [4]"))
    assert cli.main(["list", "--family", "toy"]) == 0
    listed = capsys.readouterr().out
    assert "toy-loop  [toy]  (baseline, lossless)" in listed and "toy-formula  [toy]" in listed


def test_kernel_table_of_an_undeclared_family_is_refused(tmp_path):
    text = PRESET.replace("[kernel.toy]", "[kernel.toys]")
    with pytest.raises(ConfigError, match=r"unknown key 'toys' in \[kernel\]; valid keys: "
                                          r"\['attention', 'kvcache', 'scheduling'\]") as e:
        presets.parse(text, "p.toml")
    assert str(e.value).startswith("p.toml:6:")


def test_a_class_lacking_a_protocol_method_is_refused_at_registration(toy):
    class NoDecode:  # an attention backend without decode
        def forward(self, q, k, v, meta=None): ...

        def decode_padded(self, q, k, v, lengths, meta=None): ...

        def flops(self, shape): ...

        def bytes(self, shape): ...

    with pytest.raises(ValueError, match=r"NoDecode does not satisfy the attention protocol "
                                         r"\(AttentionBackend\): missing decode$"):
        registry.register(name="no-decode", family="attention", summary="x")(NoDecode)

    class NoTotal:
        def sum(self, n: int) -> int: ...

    with pytest.raises(ValueError, match="missing total"):
        registry.register(name="no-total", family="toy", summary="x", levels=("kernel",))(
            NoTotal)
    assert "no-decode" not in registry._REGISTRY and "no-total" not in registry._REGISTRY


def test_engine_components_take_every_slot_baseline_from_the_registry(monkeypatch):
    from effbench.suite.family import Family
    from effbench.suite.levels.engine import components

    base = components("attention", None, None)
    assert type(base.attention) is type(registry.baseline_of("attention").build())
    assert type(base.cache) is type(registry.baseline_of("kvcache").build())
    assert base.decoder_name == registry.baseline_of("decoding").name
    spec = components("decoding", "speculative", {"k": 2})
    assert (spec.decoder_name, spec.decoder_params) == ("speculative", (("k", 2),))
    kivi = components("kvcache", "kivi", {"bits": 4})
    assert type(kivi.cache) is type(registry.get("kivi").build({"bits": 4}))
    slotless = Family("slotless", "no engine slot", protocol=object, levels=("serving",))
    monkeypatch.setitem(family._FAMILIES, "slotless", slotless)
    with pytest.raises(ValueError, match="family slotless has no engine slot"):
        components("slotless", "x", None)
