"""pytest plugin: a preset's kernel-level cases as pytest-benchmark benchmarks.

Registered through the ``pytest11`` entry point (``effbench = "effbench.suite.pytest_plugin"``). A
test
that asks for the ``effbench_case`` fixture is parametrized over the kernel cases of a preset:
the one given with ``--effbench-preset NAME_OR_PATH``, else the one named by the test's
``@pytest.mark.effbench_preset("...")`` marker or its module's ``EFFBENCH_PRESET`` variable,
else the fixture skips with the reason. So::

    def test_kernels(effbench_case):
        effbench_case.run()

times each case with ``benchmark.pedantic`` (fixed rounds, no calibration: the case's work is
already sized by the preset) under a device-synchronising timer, so CUDA work queued by the
call is finished before the clock is read, and puts the case's other metrics (FLOPs, bytes,
errors, effbench's own latency median) into ``benchmark.extra_info``. With
``--benchmark-disable`` (the test suite's default) the callable runs once, as a smoke test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest

OPTION = "--effbench-preset"
MARKER = "effbench_preset"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("effbench")
    group.addoption(OPTION, default=None, metavar="NAME",
                    help="preset (built-in name or .toml) whose kernel cases effbench_case runs")
    group.addoption("--effbench-rounds", type=int, default=20,
                    help="pedantic rounds per effbench case (default 20)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(name): preset for the effbench_case fixture")


@cache
def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover
        return False


def synchronized_timer() -> float:
    """``time.perf_counter`` after waiting for queued CUDA work (when there is CUDA)."""
    if _cuda():
        import torch

        torch.cuda.synchronize()
    return time.perf_counter()


def _preset_name(metafunc: pytest.Metafunc) -> str | None:
    given = metafunc.config.getoption(OPTION, default=None)
    if given:
        return given
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker and marker.args:
        return str(marker.args[0])
    module_default = getattr(metafunc.module, "EFFBENCH_PRESET", None)
    return str(module_default) if module_default else None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "effbench_case" not in metafunc.fixturenames:
        return
    name = _preset_name(metafunc)
    if not name:
        metafunc.parametrize("effbench_case", [None], ids=["no-preset"], indirect=True)
        return
    from effbench.suite import presets
    from effbench.suite.cases import expand

    preset = presets.load(name)
    cases = [c for c in expand(preset, preset.run.device) if c.level == "kernel"]
    params = [(preset, c) for c in cases] or [None]
    ids = [c.case_id for c in cases] or ["no-kernel-case"]
    metafunc.parametrize("effbench_case", params, ids=ids, indirect=True)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give every effbench case the synchronising timer (pytest-benchmark's marker option)."""
    for item in items:
        if "effbench_case" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.benchmark(timer=synchronized_timer))


@dataclass(frozen=True)
class KernelBenchmark:
    """One kernel case bound to the test's ``benchmark`` fixture."""

    case: Any
    ctx: Any
    benchmark: Any
    rounds: int

    def run(self) -> Any:
        """Run the case under ``benchmark.pedantic``; return the kernel's result.

        First the case runs once through effbench's own kernel level (its metrics go to
        ``extra_info``), then the same callable is timed by pytest-benchmark.
        """
        from effbench.suite.runner import run_case

        metrics = run_case(self.case, self.ctx)
        info = self.benchmark.extra_info
        info["effbench_case"] = self.case.case_id
        info["metrics"] = {m.metric: {"value": m.value, "unit": m.unit,
                                      "direction": m.direction} for m in metrics}
        fn = kernel_callable(self.case, self.ctx)
        return self.benchmark.pedantic(fn, rounds=self.rounds, warmup_rounds=1, iterations=1)


@pytest.fixture
def effbench_case(request: pytest.FixtureRequest, benchmark: Any) -> KernelBenchmark:
    """A preset's kernel case, ready to ``run()`` as a benchmark (see the module docstring)."""
    param = getattr(request, "param", None)
    if param is None:
        pytest.skip(f"no effbench preset: pass {OPTION} NAME or mark the test "
                    f"@pytest.mark.{MARKER}('NAME') (or the preset has no kernel case)")
    preset, case = param
    from effbench.suite.context import RunContext
    from effbench.suite.devices import resolve_device, resolve_dtype

    device = resolve_device(preset.run.device)
    ctx = RunContext(preset, device, resolve_dtype(preset.run.dtype, device))
    rounds = request.config.getoption("--effbench-rounds", default=20)
    return KernelBenchmark(case, ctx, benchmark, rounds)


def kernel_callable(case: Any, ctx: Any) -> Callable[[], Any]:
    """The timed work of a kernel case, as its family defines it (``Family.kernel_timed``),
    on the same inputs as the family's kernel level builds (effbench.suite.levels.kernel for
    attention: forward or decode on seeded q, k, v; for the KV cache: a whole sequence
    appended token by token to a fresh cache).
    """
    from effbench.suite import registry
    from effbench.suite.family import get_family

    timed = get_family(case.family).kernel_timed
    if timed is None:
        raise ValueError(f"family {case.family} has no timed kernel work")
    return timed(case, ctx, registry.get(case.technique).build(case.param_dict))
