"""Engine-level speed rounds: when they stop, and what the speedup's stats say.

``generate`` is replaced by a script of wall times, so the stopping rule is tested on its own:
a paired case stops on the speedup's CI (not the technique's batch latency), a case whose ratios
stay noisy runs to max_repeats and is marked not converged with every round kept, and the
baseline case still stops on its own batch latency.
"""

import dataclasses
from pathlib import Path

import pytest
import torch

from effbench.kernels_ref.engine import EngineResult, StepRecord
from effbench.kernels_ref.requests import Request
from effbench.suite import presets
from effbench.suite.cases import expand
from effbench.suite.context import RunContext
from effbench.suite.levels import engine

MINI = Path(__file__).parents[1] / "data" / "mini.toml"
TECH = "technique-components"


def _ctx(min_repeats=3, max_repeats=8, target=0.05, budget=1000.0):
    p = presets.load(str(MINI))
    p = dataclasses.replace(
        p,
        engine=dataclasses.replace(p.engine, min_repeats=min_repeats, max_repeats=max_repeats),
        run=dataclasses.replace(p.run, target_rel_ci=target, case_budget_s=budget),
    )
    return RunContext(p, torch.device("cpu"), torch.float32)


def _case(ctx, technique):
    return next(c for c in expand(ctx.preset, "cpu")
                if c.level == "engine" and c.technique == technique)


def _result(wall_s):
    steps = [StepRecord(0, 1000, 3, 0, 1), StepRecord(1000, 3000, 0, 1, 1)]
    return EngineResult([Request(0, [1, 2, 3], 2)], steps, 0, round(wall_s * 1e9), {})


def _script(monkeypatch, tech_walls, base_walls):
    """Fake generate: the technique's and the baseline's timed runs take these wall times in
    turn (warm-up runs, without a window, take 1 s and are not counted)."""
    walls = {"tech": list(tech_walls), "base": list(base_walls)}
    calls = []

    def fake(ctx, comp, max_batch, window=None):
        if window is None:
            return _result(1.0)
        who = "tech" if comp == TECH else "base"
        assert window == who
        calls.append(who)
        return _result(walls[who].pop(0))

    monkeypatch.setattr(engine, "generate", fake)
    return calls


def _by_name(metrics):
    return {m.metric: m for m in metrics}


def test_paired_case_stops_on_the_speedups_ci_not_the_technique_latency(monkeypatch):
    ctx = _ctx()
    # the machine drifts: both sides slow down alike, so latency is noisy and the ratio exact
    drift = [1.0, 1.5, 0.7, 1.3, 0.9, 1.6, 1.1, 0.8]
    calls = _script(monkeypatch, [d for d in drift], [2 * d for d in drift])
    got = _by_name(engine.speed(ctx, _case(ctx, "kivi"), TECH)[0])
    sp, lat = got["speedup"], got["batch_latency"]
    assert sp.samples == (2.0, 2.0, 2.0)  # stopped at min_repeats: the ratio's CI is 0
    assert sp.stats["converged"] == 1.0 and sp.stats["rounds"] == 3.0
    assert sp.stats["target_rel_ci"] == 0.05
    assert lat.samples == (1.0, 1.5, 0.7)  # the technique's runs of those same rounds
    assert lat.stats["rounds"] == 3.0 and "converged" not in lat.stats
    assert lat.stats["rel_ci"] > 0.05  # the old rule (latency CI) would have kept going
    assert calls == ["tech", "base", "base", "tech", "tech", "base"]  # T B, B T, T B


def test_noisy_speedup_runs_to_max_repeats_and_is_marked_not_converged(monkeypatch):
    ctx = _ctx(max_repeats=6)
    base = [0.043, 1.17, 0.725, 1.0, 0.5, 1.4]
    _script(monkeypatch, [1.0] * 6, base)  # the technique itself is perfectly steady
    got = _by_name(engine.speed(ctx, _case(ctx, "kivi"), TECH)[0])
    sp = got["speedup"]
    assert sp.samples == tuple(base)  # every round's ratio kept
    assert sp.stats["converged"] == 0.0 and sp.stats["rounds"] == 6.0
    assert sp.stats["rel_ci"] > 0.05
    assert got["batch_latency"].stats["rel_ci"] == 0.0  # what used to stop it at round 3


def test_budget_stops_a_paired_case_after_min_repeats(monkeypatch):
    ctx = _ctx(budget=0.0)
    _script(monkeypatch, [1.0] * 8, [0.5, 1.5, 1.0, 2.0, 0.7, 1.2, 0.9, 1.1])
    sp = _by_name(engine.speed(ctx, _case(ctx, "kivi"), TECH)[0])["speedup"]
    assert sp.stats["rounds"] == 3.0 and sp.stats["converged"] == 0.0


def test_baseline_case_stops_on_its_batch_latency(monkeypatch):
    ctx = _ctx()
    calls = _script(monkeypatch, [1.0, 1.0, 1.0, 9.0], [])
    got = _by_name(engine.speed(ctx, _case(ctx, "full-cache"), TECH)[0])
    assert "speedup" not in got and calls == ["tech"] * 3
    lat = got["batch_latency"]
    assert lat.stats["converged"] == 1.0 and lat.stats["rounds"] == 3.0


@pytest.mark.parametrize("samples,target,want", [([1.0, 1.0, 1.0], 0.01, True),
                                                 ([1.0, 2.0, 3.0], 0.05, False),
                                                 ([], 0.05, False)])
def test_converged(samples, target, want):
    assert engine.converged(samples, target) is want
