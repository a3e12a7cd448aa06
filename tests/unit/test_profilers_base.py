import torch

from effbench.profilers import NullProfiler, collect
from effbench.profilers.memory import MemoryProfiler


class Unavailable:
    name = "energy"

    def available(self):
        return False, "no NVIDIA GPU"

    def start(self):
        raise AssertionError("must not start")

    def stop(self):
        raise AssertionError("must not stop")


def test_collect_skips_unavailable_with_reason_and_runs_the_rest():
    with collect([Unavailable(), MemoryProfiler("cpu"), NullProfiler()]) as got:
        x = torch.ones(1000, 1000)
        del x
    by = {r.profiler: r for r in got.results}
    assert by["energy"].unavailable == "no NVIDIA GPU"
    assert by["memory"].metrics["peak_rss_process"][0] > 1e6
    assert "memory.peak_rss_process" in got.metrics()


def test_memory_profiler_reports_missing_gpu():
    if not torch.cuda.is_available():
        assert MemoryProfiler("cuda").available() == (False, "no NVIDIA GPU")
