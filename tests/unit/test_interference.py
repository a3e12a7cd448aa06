"""Interference observed per case: the /proc readers, the noisy rule, the real observer on this
machine with a real competing process, the GPU part through a fake NVML, ``--retry-noisy``'s
decision logic with a scripted observer, and the mark in the report and the dashboard.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from effbench.dashboards.charts import NOISY_SYMBOL, frontier_figure
from effbench.dashboards.data import case_metrics, metric_columns
from effbench.dashboards.pareto import pareto_mask
from effbench.profilers import interference as itf
from effbench.profilers.interference import (
    InterferenceObserver,
    NoisyRule,
    NullInterference,
    Observation,
    ProcessUtilization,
    busy_cores,
    parse_own_ticks,
    parse_proc_stat,
)
from effbench.profilers.nvml import NullNVML
from effbench.suite import metrics, presets, runner
from effbench.suite.records import Record
from effbench.suite.report import NOISY_FOOTER, render_text, summary_table
from effbench.suite.store import records_to_frame
from effbench.suite.store_files import _BATCH

MINI = Path(__file__).parents[1] / "data" / "mini.toml"
HAS_PROC = Path("/proc/stat").exists() and Path("/proc/self/stat").exists()
STAT = """cpu  300 0 100 1000 10 0 5 7 0 0
cpu0 100 0 50 500 5 0 2 3 0 0
cpu1 200 0 50 500 5 0 3 4 0 0
intr 1 2 3
"""


@pytest.fixture(autouse=True)
def _one_thread_after():
    yield
    torch.set_num_threads(1)


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


# ---------------------------------------------------------------------------------------------
# Readers and rule (pure)


def test_proc_stat_sums_the_chosen_cpus():
    both = parse_proc_stat(STAT)
    assert (both.busy, both.steal, both.total) == (405, 7, 1422)
    one = parse_proc_stat(STAT, [1])
    assert (one.busy, one.steal, one.total) == (253, 4, 762)
    assert parse_proc_stat(STAT, [5]) is None
    old_kernel = parse_proc_stat("cpu0 1 2 3 4 5 6 7\n", [0])
    assert old_kernel.steal is None and old_kernel.busy == 1 + 2 + 3 + 6 + 7


def test_own_ticks_survive_a_command_name_with_parentheses():
    fields = ["S"] + ["0"] * 10 + ["11", "12", "13", "14"] + ["0"] * 30
    assert parse_own_ticks("42 (a (b) c) " + " ".join(fields)) == 11 + 12 + 13 + 14


def test_noisy_rule():
    rule = NoisyRule()
    share = rule.share(other_cpu_s=1.0, steal_s=0.0, wall_s=1.0, usable=2, cpus=2)
    assert share == pytest.approx(0.5)
    noisy, why = rule.judge(share, 1.0, 0.0)
    assert noisy and "50%" in why
    # a quiet machine's background: a few percent
    quiet = rule.share(0.06, 0.0, 1.0, 2, 2)
    assert rule.judge(quiet, 0.06, 0.0) == (False, "")
    # steal counts as taken; tick rounding on a short case does not
    assert rule.judge(rule.share(0.0, 0.5, 1.0, 2, 2), 0.0, 0.5)[0]
    assert not rule.judge(rule.share(0.03, 0.0, 0.1, 2, 2), 0.03, 0.0)[0]
    # others on CPUs beyond a quota of 2 (affinity of 8) fit beside the run
    assert rule.share(6.0, 0.0, 1.0, usable=2, cpus=8) == 0.0
    assert rule.share(7.0, 0.0, 1.0, usable=2, cpus=8) == pytest.approx(0.5)
    # the GPU
    assert rule.judge(0.0, 0.0, 0.0, gpu_other_pct=35.0) == (
        True, "other processes used 35% of the GPU (> 10%)")
    assert not rule.judge(0.0, 0.0, 0.0, gpu_other_pct=5.0)[0]


# ---------------------------------------------------------------------------------------------
# The real observer on this machine


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
def test_a_competing_process_is_seen_and_marks_the_case_noisy():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        obs = InterferenceObserver(threads=1)
        assert obs.available() == (True, "")
        obs.start()
        _spin(1.0)  # the "case": one core busy in this process
        result = obs.stop()
    finally:
        hog.kill()
        hog.wait(timeout=10)
    seen = obs.observation
    assert result.profiler == "interference" and not result.unavailable
    other = seen.metrics["other_cpu_s"][0]
    assert other >= 0.5, seen  # the competitor's second of CPU, less what the scheduler shared
    assert seen.noisy and "CPU capacity" in seen.reason
    assert seen.metrics["noisy"] == (1.0, "flag")
    assert seen.metrics["wall_s"][0] == pytest.approx(1.0, abs=0.2)
    assert seen.score == pytest.approx(seen.metrics["other_cpu_share"][0])


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
def test_a_quiet_short_case_is_not_marked():
    """Skipped when other work already keeps this (shared) machine busy: then the quiet
    direction cannot be shown here, and the loaded direction above is what is asserted.
    """
    before = busy_cores(0.5)
    cores = len(itf.affinity())
    if before is None or before > 0.05 * cores:
        pytest.skip(f"machine not quiet: others use {before} of {cores} cores")
    obs = InterferenceObserver(threads=1)
    obs.start()
    _spin(0.5)
    obs.stop()
    if obs.observation.noisy:  # someone started work meanwhile: tell that apart from a bug
        after = busy_cores(0.5)
        if after is not None and after > 0.05 * cores:
            pytest.skip(f"machine got busy during the check: {after} cores")
    assert not obs.observation.noisy, obs.observation


class FakeNVML:
    def __init__(self, samples=None, fail: Exception | None = None) -> None:
        self.samples, self.fail = samples or [], fail

    def available(self):
        return True, ""

    def process_utilization(self, index, since_us):
        if self.fail:
            raise self.fail
        return self.samples


def _observe(gpu) -> Observation:
    obs = InterferenceObserver(threads=1, cpus=[0], usable=1, gpu=gpu)
    obs.start()
    obs.stop()
    return obs.observation


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
def test_gpu_use_by_other_processes(monkeypatch):
    me = os.getpid()
    seen = _observe(ProcessUtilization(FakeNVML([(me, 60), (12345, 30), (12345, 50)]), 0,
                                       pid_namespace=lambda: True))
    assert seen.metrics["gpu_other_util"] == (40.0, "%") and seen.noisy
    assert "GPU" in seen.reason
    assert not _observe(ProcessUtilization(FakeNVML([(me, 90)]), 0, lambda: True)).noisy
    # unavailable: said, not fatal
    # pids of one namespace: another process alone on the GPU is another process
    host = ProcessUtilization(FakeNVML([(999999, 50)]), 0, pid_namespace=lambda: True)
    assert _observe(host).metrics["gpu_other_util"] == (50.0, "%")
    # unavailable: said, not fatal
    for gpu, words in (
        (ProcessUtilization(NullNVML("no NVIDIA GPU"), 0), "no NVIDIA GPU"),
        (ProcessUtilization(FakeNVML([(me, 50)]), 0, lambda: False), "a container"),
        (ProcessUtilization(FakeNVML([(999999, 50)]), 0, lambda: None), "a container"),
        (ProcessUtilization(FakeNVML(fail=RuntimeError("boom")), 0), "RuntimeError: boom"),
    ):
        seen = _observe(gpu)
        assert "gpu_other_util" not in seen.metrics and not seen.noisy
        assert any(words in u for u in seen.unavailable), seen.unavailable


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
def test_observer_reports_the_declared_units(monkeypatch):
    monkeypatch.setattr(itf, "read_cpu_mhz", lambda cpus, pattern=itf.CPUFREQ: [2400.0])
    seen = _observe(ProcessUtilization(FakeNVML([(os.getpid(), 10)]), 0, lambda: True))
    produced = {f"interference.{k}": u for k, (_, u) in seen.metrics.items()}
    produced["interference.attempts"] = "count"  # the runner's
    assert {"interference.other_cpu_s", "interference.cpu_mhz_min",
            "interference.gpu_other_util"} <= set(produced)
    wrong = {n: u for n, u in produced.items()
             if metrics.spec(n) is None or metrics.spec(n).unit != u}
    assert not wrong
    assert all(metrics.kind_of(n) == "timing" for n in produced)


def test_null_observer_is_never_noisy_and_says_why():
    null = NullInterference("no /proc here")
    null.start()
    result = null.stop()
    assert result.unavailable == "no /proc here" and not null.observation.noisy


# ---------------------------------------------------------------------------------------------
# The runner: every case observed, --retry-noisy keeps the cleanest attempt


class Scripted:
    """Observer factory whose observers return the scripted observations in turn."""

    def __init__(self, script: list[tuple[bool, float]]) -> None:
        self.script, self.made = list(script), 0

    def __call__(self):
        noisy, score = self.script[min(self.made, len(self.script) - 1)]
        self.made += 1

        class One:
            name = "interference"

            def start(self) -> None:
                self.observation = Observation()

            def stop(self):
                self.observation = Observation(
                    {"other_cpu_share": (score, "fraction"),
                     "noisy": (1.0 if noisy else 0.0, "flag")},
                    noisy, "scripted" if noisy else "", score)
                return self.observation.result()

        return One()


def _wrap_kernel(monkeypatch, fail_on: int = 0) -> list:
    """Log every timed pass's latency samples (the attempt they came from)."""
    real = runner.LEVEL_RUNNERS["kernel"]
    passes: list = []

    def wrapped(case, ctx):
        passes.append(case.case_id)
        if fail_on and len(passes) == fail_on:
            raise RuntimeError("re-measurement broke")
        got = real(case, ctx)
        passes[-1] = (case.case_id, next(m.samples for m in got if m.metric == "latency"))
        return got

    monkeypatch.setitem(runner.LEVEL_RUNNERS, "kernel", wrapped)
    return passes


def _run(tmp_path, observer, retry: int = 0, techniques=("dense",)):
    preset = presets.load(str(MINI))
    logged: list[str] = []
    out = runner.run(preset, results=str(tmp_path), techniques=list(techniques),
                     levels=["kernel"], progress=False, log=logged.append, threads=1,
                     retry_noisy=retry, observer=observer)
    return out, out.store.records(), logged


def _by_case(recs):
    out: dict = {}
    for r in recs:
        out.setdefault(r.case_id, {})[r.metric] = r
    return out


@pytest.mark.parametrize(("script", "kept", "noisy"), [
    ([(True, 0.5), (True, 0.3), (False, 0.0)], 2, 0.0),   # the quiet third attempt
    ([(True, 0.5), (True, 0.2), (True, 0.4)], 1, 1.0),    # the cleanest of three noisy ones
])
def test_retry_noisy_remeasures_and_keeps_the_cleanest_attempt(tmp_path, monkeypatch, script,
                                                               kept, noisy):
    passes = _wrap_kernel(monkeypatch)
    out, recs, logged = _run(tmp_path, Scripted(script * 2), retry=2)
    # "dense" has two kernel workloads in mini: two cases, each scripted the same
    by_case = _by_case(recs)
    assert out.failed == 0 and len(by_case) == 2
    per_case = {}
    for case_id, samples in passes:
        per_case.setdefault(case_id, []).append(samples)
    for case_id, mine in by_case.items():
        attempts = per_case[case_id]
        assert len(attempts) == 3
        assert mine["latency"].samples == attempts[kept]  # the cleanest attempt's numbers
        assert {r.stats["attempts"] for r in mine.values()} == {3}
        assert {r.stats["noisy"] for r in mine.values()} == {noisy}
        assert mine["interference.attempts"].value == 3
        assert mine["interference.noisy"].value == noisy
    assert sum("re-measuring" in m for m in logged) == 4
    # the journal got one batch per case, after its attempts
    lines = out.store.journal_path.read_text().splitlines()
    assert len({json.loads(line)[_BATCH] for line in lines}) == 2


def test_without_retry_a_noisy_case_is_kept_and_marked(tmp_path, monkeypatch):
    passes = _wrap_kernel(monkeypatch)
    out, recs, logged = _run(tmp_path, Scripted([(True, 0.6)]))
    assert len(passes) == 2 and out.failed == 0
    assert all(r.stats["noisy"] == 1.0 and r.stats["attempts"] == 1 for r in recs)
    assert any("--retry-noisy N re-measures" in m for m in logged)
    text = render_text(summary_table(records_to_frame(recs)), 200, plain=True)
    assert "~" in text and NOISY_FOOTER in text
    assert "interference.noisy" not in text and "other_cpu_share" not in text  # no columns


def test_a_remeasurement_that_raises_keeps_the_earlier_attempt(tmp_path, monkeypatch):
    passes = _wrap_kernel(monkeypatch, fail_on=2)
    out, recs, logged = _run(tmp_path, Scripted([(True, 0.6)]), retry=1)
    assert out.failed == 0
    first = _by_case(recs)[passes[0][0]]
    assert first["latency"].samples == passes[0][1] and first["latency"].stats["attempts"] == 2
    assert any("raised RuntimeError: re-measurement broke" in m for m in logged)


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
def test_the_real_observer_is_attached_by_default(tmp_path):
    out, recs, _ = _run(tmp_path, None)
    for mine in _by_case(recs).values():
        assert "interference.other_cpu_s" in mine and "interference.wall_s" in mine
        assert mine["latency"].stats["noisy"] in (0.0, 1.0)
        assert mine["interference.wall_s"].value > 0


def test_an_observer_that_breaks_never_fails_the_case(tmp_path):
    def broken():
        raise OSError("no counters")

    out, recs, _ = _run(tmp_path, broken)
    assert out.failed == 0
    for mine in _by_case(recs).values():
        assert mine["latency"].status == "ok" and mine["latency"].stats["noisy"] == 0.0
        skip = mine["interference.unavailable"]
        assert skip.status == "skipped" and "OSError: no counters" in skip.error


# ---------------------------------------------------------------------------------------------
# The mark in the report and the dashboard


def _rec(case_id: str, metric: str, value: float, unit: str, noisy: float, **kw) -> Record:
    return Record(run_id="r1", case_id=case_id, technique="dense", family="attention",
                  level="kernel", params={"w": case_id}, workload="p32", device="cpu",
                  metric=metric, value=value, unit=unit, direction="lower",
                  samples=(value,), stats={"n": 1, "threads": 1, "noisy": noisy}, **kw)


def _records() -> list[Record]:
    out = []
    for case_id, noisy in (("quiet", 0.0), ("loud", 1.0)):
        out += [_rec(case_id, "latency", 0.001, "s", noisy),
                _rec(case_id, "flops", 1e6, "FLOP", noisy),
                _rec(case_id, "max_abs_error", 0.5, "abs", noisy),
                _rec(case_id, "interference.other_cpu_share", noisy / 2, "fraction", noisy)]
    return out


def test_report_marks_the_timing_cells_of_noisy_cases():
    tables = summary_table(records_to_frame(_records()))
    table = tables["attention / kernel"].set_index("params")
    assert "interference.other_cpu_share" not in table.columns
    assert table.loc["w=loud", "latency"].endswith("~")
    assert not table.loc["w=quiet", "latency"].endswith("~")
    # deterministic cells are not timings: noise cannot touch them
    assert not table.loc["w=loud", "flops"].endswith("~")
    assert not table.loc["w=loud", "max_abs_error"].endswith("~")
    for plain in (True, False):
        assert render_text(tables, 160, plain=plain).rstrip().endswith(NOISY_FOOTER)
    quiet = summary_table(records_to_frame(_records()[:4]))
    assert NOISY_FOOTER not in render_text(quiet, 160, plain=True)


def test_dashboard_case_table_and_frontier_show_the_mark():
    wide = case_metrics(records_to_frame(_records()))
    assert dict(zip(wide["case_id"], wide["noisy"])) == {"quiet": False, "loud": True}
    assert "noisy" not in metric_columns(wide)
    mask = pareto_mask(wide, "latency", "max_abs_error", "lower", "lower")
    fig = frontier_figure(wide, mask, "latency", "max_abs_error", "lower", "lower")
    symbols = {}
    for trace in fig.data:
        if trace.customdata is None:
            continue
        marks = trace.marker.symbol
        marks = [marks] * len(trace.customdata) if isinstance(marks, str) else list(marks)
        symbols.update({str(row[0]): m for row, m in zip(trace.customdata, marks)})
    assert symbols == {"r1/quiet": "circle", "r1/loud": NOISY_SYMBOL}
    # runs from before the mark: no stats flag, no column trouble
    old = records_to_frame([_rec("c", "latency", 0.001, "s", 0.0)]).assign(stats="{}")
    assert list(case_metrics(old)["noisy"]) == [False]
