"""The mini preset's kernel cases as pytest-benchmark benchmarks (effbench.suite.pytest_plugin).

In the normal test run (``--benchmark-disable``) each case runs once, as a smoke test of the
plugin; ``pytest tests/benchmarks/test_bench_kernels.py --benchmark-enable`` times them, and
``--effbench-preset NAME`` swaps in another preset's kernel cases.
"""

from importlib.metadata import entry_points
from pathlib import Path

# Until the pytest11 entry point is installed, load the plugin from here (never twice).
_REGISTERED = any(e.value == "effbench.suite.pytest_plugin" for e in entry_points(group="pytest11"))
pytest_plugins = [] if _REGISTERED else ["effbench.suite.pytest_plugin"]

EFFBENCH_PRESET = str(Path(__file__).resolve().parents[1] / "data" / "mini.toml")


def test_kernel_case(effbench_case, benchmark):
    out = effbench_case.run()
    assert out is not None
    info = benchmark.extra_info
    assert info["effbench_case"] == effbench_case.case.case_id
    metrics = info["metrics"]
    assert metrics, "the case's own metrics belong in extra_info"
    timing = [m for m in ("latency", "append_latency_per_token") if m in metrics]
    assert timing and metrics[timing[0]]["value"] > 0
