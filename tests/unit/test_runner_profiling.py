"""Profilers attach in a second pass, after the timed one, and never fail or distort a case.

The runner is real (``runner.run`` on tests/data/mini.toml, cheapest cases); the profilers are
test doubles registered under a name, since what they stand for (NVML, py-spy) is hardware or
an external process. The level runner is wrapped, not replaced, to log when each pass runs and
what it measured.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from effbench.profilers import ProfileResult, collect
from effbench.profilers.registry import PROFILERS
from effbench.suite import presets, runner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fake_nvml import RealtimeNVML  # noqa: E402

MINI = Path(__file__).parents[1] / "data" / "mini.toml"


class Logged:
    """A profiler double that logs its calls into ``log`` and sleeps ``pause`` s in each."""

    def __init__(self, name: str, log: list, pause: float = 0.0, fail: str = "") -> None:
        self.name, self.log, self.pause, self.fail = name, log, pause, fail

    def available(self) -> tuple[bool, str]:
        return True, ""

    def start(self) -> None:
        self.log.append((f"{self.name}.start", time.perf_counter_ns()))
        time.sleep(self.pause)
        if self.fail == "start":
            raise RuntimeError("cannot open the counter")

    def stop(self) -> ProfileResult:
        time.sleep(self.pause)
        self.log.append((f"{self.name}.stop", time.perf_counter_ns()))
        if self.fail == "stop":
            raise RuntimeError("counter vanished")
        return ProfileResult(self.name, {"calls": (1.0, "count")})


def _wrap_level(monkeypatch, level: str, log: list, calls: list, fail_on: int = 0) -> None:
    """Wrap the real level runner: log each pass's start/end, keep what it returned."""
    real = runner.LEVEL_RUNNERS[level]

    def wrapped(case, ctx):
        calls.append({"energy": ctx.memo.get("energy")})
        log.append(("case.start", time.perf_counter_ns()))
        if fail_on and len(calls) % 2 == 0:
            raise RuntimeError("profiled pass broke")
        metrics = real(case, ctx)
        log.append(("case.end", time.perf_counter_ns()))
        calls[-1]["metrics"] = {m.metric: m for m in metrics}
        return metrics

    monkeypatch.setitem(runner.LEVEL_RUNNERS, level, wrapped)


def _run(tmp_path: Path, profile: list[str], level: str = "kernel"):
    preset = presets.load(str(MINI))
    out = runner.run(preset, results=str(tmp_path), techniques=["dense"], levels=[level],
                     progress=False, profile=profile, log=lambda m: None)
    return out, out.store.records()


def test_profiler_starts_after_the_timed_pass_and_timings_are_the_unprofiled_ones(
    tmp_path, monkeypatch
):
    log: list = []
    calls: list = []
    monkeypatch.setitem(PROFILERS, "slow", lambda device, art: Logged("slow", log, pause=0.05))
    _wrap_level(monkeypatch, "kernel", log, calls)
    out, recs = _run(tmp_path, ["slow"])
    assert out.failed == 0 and out.cases == 2
    # per case: the timed pass runs alone, then the profiler wraps a second pass
    events = [e for e, _ in log]
    assert events == ["case.start", "case.end", "slow.start", "case.start", "case.end",
                      "slow.stop"] * 2
    times = [t for _, t in log]
    assert times == sorted(times)
    assert len(calls) == 4
    case_ids = list(dict.fromkeys(r.case_id for r in recs))  # in the order they ran
    for case_id, timed in zip(case_ids, calls[::2]):
        mine = {r.metric: r for r in recs if r.case_id == case_id}
        for name, m in timed["metrics"].items():  # every measured metric, from the timed pass
            assert mine[name].status == "ok" and mine[name].samples == m.samples, name
        assert mine["slow.calls"].value == 1.0
    profiled = [c["metrics"]["latency"].samples for c in calls[1::2]]
    assert not any(r.samples in profiled for r in recs if r.metric == "latency")


@pytest.mark.parametrize("where", ["start", "stop"])
def test_a_profiler_that_raises_leaves_the_case_intact(tmp_path, monkeypatch, where):
    log: list = []
    monkeypatch.setitem(PROFILERS, "broken", lambda d, a: Logged("broken", log, fail=where))
    monkeypatch.setitem(PROFILERS, "fine", lambda d, a: Logged("fine", log))
    out, recs = _run(tmp_path, ["fine", "broken"])
    assert out.failed == 0
    assert out.store.finalize()["counts"]["ok"] == 2
    for case_id in {r.case_id for r in recs}:
        mine = {r.metric: r for r in recs if r.case_id == case_id}
        assert mine["latency"].status == "ok" and mine["latency"].samples
        assert mine["fine.calls"].value == 1.0  # the other profiler still ran and stopped
        err = mine["broken.error"]
        assert err.status == "skipped"
        msg = "cannot open the counter" if where == "start" else "counter vanished"
        assert err.error == f"{where}() raised RuntimeError: {msg}"
        assert not any(m.startswith("broken.") and m != "broken.error" for m in mine)
    if where == "start":  # a profiler that never started is never stopped
        assert ("broken.stop" not in [e for e, _ in log])


def test_a_failing_profiled_pass_keeps_the_measured_records(tmp_path, monkeypatch):
    log: list = []
    calls: list = []
    monkeypatch.setitem(PROFILERS, "fine", lambda d, a: Logged("fine", log))
    _wrap_level(monkeypatch, "kernel", log, calls, fail_on=2)
    out, recs = _run(tmp_path, ["fine"])
    assert out.failed == 0
    for case_id in {r.case_id for r in recs}:
        mine = {r.metric: r for r in recs if r.case_id == case_id}
        assert mine["latency"].status == "ok"
        assert mine["fine.error"].status == "skipped"
        assert mine["fine.error"].error == ("profiled pass raised RuntimeError: "
                                            "profiled pass broke")
        assert "fine.calls" not in mine  # metrics of a broken pass are not kept


def test_energy_windows_only_in_the_profiled_pass(tmp_path, monkeypatch):
    from effbench.profilers.energy import EnergyProfiler
    from effbench.profilers.rapl import NullRAPL

    made: list = []

    def energy(device, art):
        made.append(EnergyProfiler("cuda:0", art, nvml=RealtimeNVML(40.0),
                                   rapl=NullRAPL("no RAPL"), idle_s=0.0,
                                   counter_period_s=0.001))
        return made[-1]

    log: list = []
    calls: list = []
    monkeypatch.setitem(PROFILERS, "energy", energy)
    _wrap_level(monkeypatch, "engine", log, calls)
    out, recs = _run(tmp_path, ["energy"], level="engine")
    assert out.failed == 0 and len(calls) == 2
    assert calls[0]["energy"] is None  # the timed pass runs with no profiler at all
    assert calls[1]["energy"] is made[0]
    assert "energy_per_token_decode" not in calls[0]["metrics"]
    by = {r.metric: r for r in recs}
    # timings from the timed pass, energy from the profiled one
    assert by["decode_tokens_per_s"].samples == calls[0]["metrics"]["decode_tokens_per_s"].samples
    assert by["energy_per_token_decode"].value == calls[1]["metrics"][
        "energy_per_token_decode"].value > 0
    assert by["energy.run.gpu_J"].value > 0
    assert {w.path.split("/")[0] for w in made[0].windows} >= {"tech", "run"}


def test_collect_reports_a_raising_profiler_and_still_stops_the_others():
    log: list = []
    profs = [Logged("a", log), Logged("b", log, fail="start"), Logged("c", log, fail="stop")]
    with collect(profs) as got:
        assert [p.name for p in got.started] == ["a", "c"]
    by = {r.profiler: r for r in got.results}
    assert by["a"].metrics == {"calls": (1.0, "count")} and not by["a"].error
    assert by["b"].error == "start() raised RuntimeError: cannot open the counter"
    assert by["c"].error == "stop() raised RuntimeError: counter vanished"
    assert [e for e, _ in log] == ["a.start", "b.start", "c.start", "c.stop", "a.stop"]
