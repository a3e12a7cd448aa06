"""The canary: its timing, its log in the manifest, a failing canary, and the gate's rule.

Synthetic canaries throughout for the gate (no timing thresholds on this machine's speed).
"""

import json
import math

import numpy as np
import pandas as pd
import pytest

from effbench.suite import canary as canary_mod
from effbench.suite import gate_ab_canary, gate_canary
from effbench.suite.gate import Thresholds, compare, passed
from effbench.suite.gate_report import render
from effbench.suite.gate_sides import Side, gate_sides

CASE = "kernel:dense[]@p32/cpu"


# ---------------------------------------------------------------------------------------------
# Synthetic records and canaries


def timing(median, n=40, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    return list(median * (1 + noise * rng.standard_normal(n)))


def rec(metric, samples, direction="lower", unit="s", case=CASE):
    samples = list(samples)
    return {"case_id": case, "metric": metric, "value": float(np.median(samples)),
            "unit": unit, "direction": direction, "samples": json.dumps(samples),
            "status": "ok", "error": "", "schema_version": 1}


def records(latency, flops=5.0, seed=1, bandwidth=None):
    rows = [rec("latency", timing(latency, seed=seed)), rec("flops", [flops], unit="FLOP")]
    if bandwidth is not None:
        rows.append(rec("bandwidth", timing(bandwidth, seed=seed + 7), "higher", "GB/s"))
    return pd.DataFrame(rows)


def entry(median, label="start", rel=0.01, threads=2):
    return {"label": label, "median": median, "ci_low": median * (1 - rel),
            "ci_high": median * (1 + rel), "n": 100, "threads": threads}


def block(*medians, rel=0.01, threads=2):
    labels = ["start", *[f"between-{i}" for i in range(1, len(medians) - 1)], "end"]
    es = [entry(m, lab, rel, threads) for m, lab in zip(medians, labels)]
    out = {"version": canary_mod.VERSION, "start": es[0], "between": es[1:-1],
           "end": es[-1] if len(es) > 1 else None}
    return out


def sentry(median, label="start", n=100, noise=0.01, seed=0, threads=2, slow_share=0.0):
    """A canary timing with raw samples (``slow_share`` of them 3x slower: contention)."""
    from effbench.suite.stats import summarize

    rng = np.random.default_rng(seed)
    samples = median * (1 + noise * rng.standard_normal(n))
    slow = rng.random(n) < slow_share
    samples[slow] *= 3.0
    st = summarize(samples)
    return {"label": label, "median": st["median"], "ci_low": st["ci_low"],
            "ci_high": st["ci_high"], "n": n, "threads": threads, "samples": list(samples)}


def sblock(*entries):
    return {"version": canary_mod.VERSION, "start": entries[0], "between": list(entries[1:-1]),
            "end": entries[-1] if len(entries) > 1 else None}


def manifest(canary=None):
    m = {"host": {"cpu_model": "X", "cpu_count": 2}, "cuda": {"devices": []}}
    if canary is not None:
        m["canary"] = canary
    return m


def side(label, df, canary=None):
    return Side(label, df, manifest(canary))


def row(result, metric):
    got = result[result["metric"] == metric]
    assert len(got) == 1, result
    return got.iloc[0]


# ---------------------------------------------------------------------------------------------
# The canary itself


def test_run_canary_returns_a_timing_with_samples(monkeypatch):
    monkeypatch.setattr(canary_mod, "workload", lambda: (lambda: sum(range(200))))
    got = canary_mod.run_canary("start", budget_s=0.05)
    assert "error" not in got
    assert got["label"] == "start" and got["n"] == len(got["samples"]) >= 1
    assert got["ci_low"] <= got["median"] <= got["ci_high"]
    assert got["threads"] >= 1


def test_run_canary_that_raises_returns_the_error(monkeypatch):
    def broken():
        raise RuntimeError("no BLAS today")

    monkeypatch.setattr(canary_mod, "workload", broken)
    got = canary_mod.run_canary("end")
    assert got["label"] == "end" and got["error"] == "RuntimeError: no BLAS today"
    assert "median" not in got


class FakeStore:
    def __init__(self, tmp_path):
        self.manifest_path = tmp_path / "manifest.json"
        self.manifest_path.write_text(json.dumps({"run_id": "r"}))

    def manifest(self):
        return json.loads(self.manifest_path.read_text())


def test_canary_log_start_between_end_and_summary(tmp_path):
    now = [0.0]
    medians = iter([1.0e-3, 1.1e-3, 1.2e-3])
    store = FakeStore(tmp_path)
    log = canary_mod.CanaryLog(store, interval_s=30, clock=lambda: now[0],
                               timer=lambda label: entry(next(medians), label))
    log.run("start")
    now[0] = 10.0
    assert log.maybe_between() is None  # 10 s < 30 s since the last canary
    now[0] = 45.0
    assert log.maybe_between()["label"] == "between-1"
    log.run("end")
    got = store.manifest()["canary"]
    assert got["start"]["median"] == 1.0e-3 and got["end"]["median"] == 1.2e-3
    assert [e["label"] for e in got["between"]] == ["between-1"]
    assert got["interval_s"] == 30 and got["version"] == canary_mod.VERSION
    assert got["summary"]["median"] == pytest.approx(1.1e-3)
    assert got["summary"]["spread"] == pytest.approx(0.2 / 1.1)
    assert got["summary"]["n_ok"] == 3 and got["summary"]["errors"] == []


def test_canary_log_records_a_failure_and_never_raises(tmp_path):
    lines = []

    def boom(label):
        raise OSError("disk on fire")

    store = FakeStore(tmp_path)
    log = canary_mod.CanaryLog(store, timer=boom, log=lines.append)
    log.run("start")
    got = store.manifest()["canary"]
    assert got["start"]["error"] == "OSError: disk on fire"
    assert got["summary"]["n_ok"] == 0 and "start: OSError: disk on fire" in got["summary"][
        "errors"]
    assert lines and "canary start failed" in lines[0]


def test_interval_from_env(monkeypatch):
    monkeypatch.setenv(canary_mod.INTERVAL_ENV, "5")
    assert canary_mod.interval_from_env() == 5.0
    monkeypatch.setenv(canary_mod.INTERVAL_ENV, "nonsense")
    assert canary_mod.interval_from_env() == canary_mod.DEFAULT_INTERVAL_S


def test_a_run_whose_canary_raises_goes_on_and_says_why(tmp_path, monkeypatch):
    """A real (tiny, kernel-level) run with the canary's workload broken."""
    from pathlib import Path

    from effbench.profilers.bandwidth import Peak
    from effbench.suite import presets, runner
    from effbench.suite.levels import kernel as kernel_level
    from effbench.suite.store import load_records, read_manifest

    def broken():
        raise RuntimeError("canary workload broken on purpose")

    monkeypatch.setattr(canary_mod, "workload", broken)
    monkeypatch.setattr(kernel_level, "device_peak", lambda device: Peak("t", 1.0, 10.0, "t"))
    mini = Path(__file__).parents[1] / "data" / "mini.toml"
    out = runner.run(presets.load(str(mini)), results=str(tmp_path), levels=["kernel"],
                     techniques=["dense"], progress=False, log=lambda m: None)
    assert out.failed == 0 and out.cases >= 1
    assert not (load_records(out.store.run_dir)["status"] == "failed").any()
    got = read_manifest(out.store.run_dir)["canary"]
    assert "canary workload broken on purpose" in got["start"]["error"]
    assert "canary workload broken on purpose" in got["end"]["error"]
    assert got["summary"]["n_ok"] == 0
    # and the gate reads such a run's timings as unverified
    check = gate_canary.check(read_manifest(out.store.run_dir), manifest(block(1e-3, 1e-3)))
    assert check.status == "unverified" and "canary workload broken" in check.message


# ---------------------------------------------------------------------------------------------
# The gate's canary rule


def test_same_machine_timings_are_gated():
    base = side("base", records(1e-3), block(1.00e-3, 1.01e-3))
    cand = side("cand", records(1.1e-3, seed=2), block(1.005e-3, 0.995e-3))
    result, _ = gate_sides(base, cand, Thresholds())
    assert result.attrs["canary"]["status"] == "same"
    assert row(result, "latency")["verdict"] == "regressed"
    assert not passed(result)


def test_machine_18_percent_slower_withholds_timings_but_not_deterministic():
    base = side("base", records(1e-3), block(1.00e-3, 1.00e-3))
    cand = side("cand", records(1.18e-3, flops=6.0, seed=2), block(1.18e-3, 1.18e-3))
    result, _ = gate_sides(base, cand, Thresholds())
    check = result.attrs["canary"]
    assert check["status"] == "changed" and check["ratio"] == pytest.approx(1.18)
    assert check["message"].startswith(
        "machine 18% slower during the candidate: timing verdicts withheld")
    lat = row(result, "latency")
    assert lat["verdict"] == "withheld" and "+18" in lat["reason"]  # measured change kept
    assert row(result, "flops")["verdict"] == "regressed"  # deterministic still gates
    assert not passed(result)
    # withheld alone never fails the gate
    cand_ok = side("cand", records(1.18e-3, seed=2), block(1.18e-3, 1.18e-3))
    result, _ = gate_sides(base, cand_ok, Thresholds())
    assert row(result, "latency")["verdict"] == "withheld" and passed(result)


def test_sample_rule_same_machine_and_slower_machine():
    quiet = sblock(sentry(1e-3, seed=1), sentry(1e-3, "end", seed=2))
    also_quiet = sblock(sentry(1.005e-3, seed=3), sentry(0.998e-3, "end", seed=4))
    same = gate_canary.check(manifest(quiet), manifest(also_quiet))
    assert same.status == "same" and "95% CI" in same.message
    slower = sblock(sentry(1.18e-3, seed=5), sentry(1.18e-3, "end", seed=6))
    changed = gate_canary.check(manifest(quiet), manifest(slower))
    assert changed.status == "changed" and changed.ratio == pytest.approx(1.18, rel=0.01)
    assert changed.message.startswith("machine 18% slower during the candidate")
    assert changed.band[0] > 1.025  # the ratio's bootstrap CI, entirely beyond the floor


def test_sample_rule_sees_contention_that_widens_the_median_ci():
    """Half the samples 3x slower (threads descheduled): the median's CI spans both modes and
    overlaps a quiet canary's, but the rank test and the ratio's CI see a slower machine."""
    quiet = sblock(sentry(1e-3, seed=1, noise=0.05), sentry(1e-3, "end", seed=2, noise=0.05))
    busy = sblock(*(sentry(1e-3, lab, n=40, seed=s, noise=0.05, slow_share=0.55)
                    for lab, s in (("start", 3), ("end", 4))))
    b, c = gate_canary.SideCanary.from_block(quiet), gate_canary.SideCanary.from_block(busy)
    assert c.low <= b.high  # the CI fallback alone would call it the same machine
    check = gate_canary.check(manifest(quiet), manifest(busy))
    assert check.status == "changed" and check.action == "withhold"


def test_a_canary_too_noisy_to_tell_withholds():
    quiet = block(1.0e-3, 1.0e-3)
    loud = block(1.0e-3, 1.02e-3, rel=0.4)  # +-40 %: nothing can be told apart
    check = gate_canary.check(manifest(quiet), manifest(loud))
    assert check.status == "unstable" and check.action == "withhold"
    assert "too noisy during the candidate run" in check.message and "+-40%" in check.message


def test_sample_rule_drift_within_a_run():
    moved = sblock(sentry(1e-3, seed=1), sentry(1.3e-3, "between-1", seed=2),
                   sentry(1.3e-3, "end", seed=3))
    check = gate_canary.check(manifest(sblock(sentry(1e-3, seed=4))), manifest(moved))
    assert check.status == "unstable" and "30% slower at" in check.message


def test_machine_faster_is_also_withheld():
    base = side("base", records(1e-3), block(1.0e-3, 1.0e-3))
    cand = side("cand", records(0.8e-3, seed=2), block(0.8e-3, 0.8e-3))
    result, _ = gate_sides(base, cand, Thresholds())
    assert "machine 25% faster during the candidate" in result.attrs["canary"]["message"]
    assert row(result, "latency")["verdict"] == "withheld"


def test_canary_shift_is_a_threshold():
    quiet = sblock(sentry(1e-3, seed=1), sentry(1e-3, "end", seed=2))
    slower = sblock(sentry(1.04e-3, seed=5), sentry(1.04e-3, "end", seed=6))
    base, cand = side("b", records(1e-3), quiet), side("c", records(1.04e-3, seed=2), slower)
    result, _ = gate_sides(base, cand, Thresholds())
    assert result.attrs["canary"]["status"] == "changed"  # 4 % > the default 2.5 %
    result, _ = gate_sides(base, cand, Thresholds.from_dict({"canary_shift": 0.1}))
    assert result.attrs["canary"]["status"] == "same"


def test_shift_within_noise_or_below_the_floor_is_same_machine():
    overlap = gate_canary.check(manifest(block(1.0e-3, 1.0e-3, rel=0.09)),
                                manifest(block(1.1e-3, 1.1e-3, rel=0.09)))
    assert overlap.status == "same"  # the bands overlap: the canaries cannot tell
    tiny = gate_canary.check(manifest(block(1.0e-3, rel=0.001)),
                             manifest(block(1.02e-3, rel=0.001)))
    assert tiny.status == "same"  # 2 % < the 2.5 % floor


def test_within_run_spread_widens_the_band():
    # one baseline canary at 1.0 ms +-9 %: a candidate at 1.15 ms is beyond its noise...
    alone = gate_canary.check(manifest(block(1.0e-3, rel=0.09)), manifest(block(1.15e-3)))
    assert alone.status == "changed"
    # ...but a baseline that drifted 1.0 -> 1.16 ms within its own CIs covers 1.15 ms
    check = gate_canary.check(manifest(block(1.0e-3, 1.08e-3, 1.16e-3, rel=0.09)),
                              manifest(block(1.15e-3, 1.15e-3)))
    assert check.status == "same"
    # ...but a step within a run, beyond its own CIs, withholds (even with normalize)
    check = gate_canary.check(manifest(block(1.0e-3, 1.0e-3)),
                              manifest(block(1.0e-3, 1.5e-3)), normalize=True)
    assert check.status == "unstable" and check.action == "withhold"
    assert "during the candidate run" in check.message and "50% slower at end" in check.message


def test_normalize_gates_normalised_timings():
    base = side("base", records(1e-3, bandwidth=10.0), block(1.0e-3, 1.0e-3))
    slow_machine = side("cand", records(1.18e-3, seed=2, bandwidth=10.0 / 1.18),
                        block(1.18e-3, 1.18e-3))
    result, _ = gate_sides(base, slow_machine, Thresholds(), normalize=True)
    assert result.attrs["canary"]["action"] == "normalize"
    lat, bw = row(result, "latency"), row(result, "bandwidth")
    assert lat["verdict"] == "unchanged" and lat["cand_median"] == pytest.approx(1e-3, rel=0.02)
    assert bw["verdict"] == "unchanged" and bw["cand_median"] == pytest.approx(10.0, rel=0.02)
    assert "normalised by the canary ratio 1.180" in lat["reason"]
    # a real 10 % regression on top of an 18 % slower machine is still caught
    regressed = side("cand", records(1.18e-3 * 1.1, seed=2), block(1.18e-3, 1.18e-3))
    result, _ = gate_sides(base, regressed, Thresholds(), normalize=True)
    assert row(result, "latency")["verdict"] == "regressed"


def test_missing_canary_is_unverified_and_gates_as_before():
    base = side("base", records(1e-3))  # an old baseline: no canary
    cand = side("cand", records(1.2e-3, seed=2), block(1.0e-3, 1.0e-3))
    result, _ = gate_sides(base, cand, Thresholds())
    check = result.attrs["canary"]
    assert check["status"] == "unverified" and "the baseline has no canary" in check["message"]
    plain = compare(base.records, cand.records, Thresholds())
    assert list(result["verdict"]) == list(plain["verdict"])
    assert row(result, "latency")["verdict"] == "regressed"


def test_other_thread_count_withholds_timings():
    check = gate_canary.check(manifest(block(1e-3, threads=2)), manifest(block(1e-3, threads=1)),
                              normalize=True)
    assert check.status == "changed" and check.action == "withhold"
    assert "different thread counts (baseline 2, candidate 1)" in check.message


def test_other_canary_version_is_unverified():
    old = {**block(1e-3), "version": canary_mod.VERSION + 1}
    check = gate_canary.check(manifest(old), manifest(block(2e-3)))
    assert check.status == "unverified" and "canary version" in check.message


def test_ignore_canary_is_exactly_the_gate_without_canaries():
    base = side("base", records(1e-3), block(1.0e-3, 1.0e-3))
    cand = side("cand", records(1.18e-3, seed=2), block(1.18e-3, 1.18e-3))
    result, notes = gate_sides(base, cand, Thresholds(), ignore_canary=True)
    plain = compare(base.records, cand.records, Thresholds())
    pd.testing.assert_frame_equal(result, plain)
    assert notes == [] and result.attrs["canary"]["status"] == "ignored"
    text = render(result, "table", "b", "c", notes)
    assert text.splitlines()[0].startswith("baseline:")  # no canary line at all
    with pytest.raises(Exception, match="--normalize needs the canary"):
        gate_sides(base, cand, Thresholds(), ignore_canary=True, normalize=True)


def test_reports_show_the_canary_line_first():
    base = side("base", records(1e-3), block(1.0e-3, 1.0e-3))
    cand = side("cand", records(1.18e-3, seed=2), block(1.18e-3, 1.18e-3))
    result, notes = gate_sides(base, cand, Thresholds())
    table = render(result, "table", "b", "c", notes)
    assert table.splitlines()[0].startswith("canary:    machine 18% slower during the candidate")
    assert "~~ withheld" in table and table.splitlines()[-1].startswith("PASS: 1 withheld")
    md = render(result, "markdown", "b", "c", notes)
    assert md.splitlines()[2].startswith("**canary:** machine 18% slower")
    data = json.loads(render(result, "json", "b", "c", notes))
    assert list(data)[0] == "canary" and data["canary"]["status"] == "changed"
    assert data["passed"] and data["counts"]["withheld"] == 1


def test_scale_for_units():
    assert gate_canary.scale_for("latency", "s", 2.0) == 0.5
    assert gate_canary.scale_for("decode_tokens_per_s", "tok/s", 2.0) == 2.0
    assert gate_canary.scale_for("pct_peak_bandwidth", "%", 2.0) == 2.0
    assert gate_canary.scale_for("speedup", "x", 2.0) is None


# ---------------------------------------------------------------------------------------------
# A/B: rounds pooled only where both runs saw the same machine


def _ab_runs(own_canaries=True):
    """3 rounds; a competing process starts between round 1's base run and its head run.

    Loaded runs are 60 % slower, canary included. Without canaries, head pools 2 loaded runs
    of 3 and base 1 of 3: a false regression.
    """
    loaded = {("base", 0): False, ("head", 0): False, ("base", 1): False, ("head", 1): True,
              ("base", 2): True, ("head", 2): True}
    runs = []
    for (name, r), busy in loaded.items():
        f = 1.6 if busy else 1.0
        canary = block(1e-3 * f, 1e-3 * f) if own_canaries else None
        harness = (entry(1e-3 * f, "before"), entry(1e-3 * f, "after"))
        runs.append(gate_ab_canary.SideRun(name, r, records(1e-3 * f, seed=r + 10 * len(runs)),
                                           manifest(canary), harness))
    return runs


def _label(name, n):
    return f"{name} ({n} runs)"


def test_ab_without_canary_false_alarms_and_drop_mode_does_not():
    base, head = gate_ab_canary.pool(_ab_runs(), 3, "ignore", _label)
    today, _ = gate_sides(base, head, Thresholds(), ignore_canary=True)
    assert row(today, "latency")["verdict"] == "regressed"  # the false alarm

    base, head = gate_ab_canary.pool(_ab_runs(), 3, "drop", _label)
    result, notes = gate_sides(base, head, Thresholds())
    # only round 1 saw a steady machine: one round cannot separate code from run-to-run noise
    assert row(result, "latency")["verdict"] == "withheld"
    assert "only 1 of 3 A/B round(s) ran on a steady machine" in result.attrs["canary"]["message"]
    assert row(result, "flops")["verdict"] == "unchanged"  # deterministic metrics still gate
    assert any("dropped round 2" in n and "head" in n for n in notes)
    assert any("dropped round 3" in n and "slower than in the fastest run" in n for n in notes)


def test_ab_two_steady_rounds_left_are_gated():
    runs = _ab_runs()
    steady = [gate_ab_canary.SideRun(n, 3, records(1e-3, seed=40 + (n == "head")),
                                     manifest(block(1e-3, 1e-3)),
                                     (entry(1e-3, "before"), entry(1e-3, "after")))
              for n in ("base", "head")]
    base, head = gate_ab_canary.pool(runs + steady, 4, "drop", _label)
    assert head.label == "head (2 runs)"  # rounds 1 and 4
    result, _ = gate_sides(base, head, Thresholds())
    assert row(result, "latency")["verdict"] == "unchanged"
    assert result.attrs["canary"]["status"] == "same"


def test_ab_steady_load_keeps_every_round():
    runs = [gate_ab_canary.SideRun(n, r, records(1.6e-3, seed=r * 2 + (n == "head")),
                                   manifest(block(1.6e-3, 1.6e-3)))
            for r in range(3) for n in ("base", "head")]
    base, head = gate_ab_canary.pool(runs, 3, "drop", _label)
    assert head.label == "head (3 runs)"


def test_ab_uses_the_runners_canaries_when_runs_have_none():
    base, head = gate_ab_canary.pool(_ab_runs(own_canaries=False), 3, "drop", _label)
    result, notes = gate_sides(base, head, Thresholds())
    assert row(result, "latency")["verdict"] == "withheld"  # one steady round left
    assert "A/B runner's canaries" in result.attrs["canary"]["message"]
    assert any("dropped round 2" in n for n in notes)


def test_ab_normalize_mode_puts_every_run_on_one_speed():
    base, head = gate_ab_canary.pool(_ab_runs(), 3, "normalize", _label)
    result, _ = gate_sides(base, head, Thresholds())
    lat = row(result, "latency")
    assert lat["verdict"] == "unchanged" and lat["ratio"] == pytest.approx(1.0, abs=0.02)


def test_ab_every_round_changed_withholds():
    runs = [gate_ab_canary.SideRun(n, 0, records(1e-3 * f, seed=i), manifest(block(1e-3 * f)))
            for i, (n, f) in enumerate((("base", 1.0), ("head", 1.6)))]
    base, head = gate_ab_canary.pool(runs, 1, "drop", _label)
    result, _ = gate_sides(base, head, Thresholds())
    assert row(result, "latency")["verdict"] == "withheld"
    assert "every A/B round" in result.attrs["canary"]["message"]
    assert row(result, "flops")["verdict"] == "unchanged"


def test_attach_harness_maps_runs_to_the_canaries_around_them():
    order = [("base", 0), ("head", 0), ("head", 1), ("base", 1)]
    gaps = [entry(float(i), f"g{i}") for i in range(5)]
    got = gate_ab_canary.attach_harness(order, gaps)
    assert [e["label"] for e in got[("head", 1)]] == ["g2", "g3"]
    assert [e["label"] for e in got[("base", 1)]] == ["g3", "g4"]


def test_summary_of_an_empty_block():
    s = canary_mod.summarize({})
    assert s["n_ok"] == 0 and s["median"] is None
    assert math.isnan(gate_canary.check(None, None).ratio)
