"""Measured peaks: stable maximum, never cached when busy, keyed by threads, expiry, corrupt
cache; and the roofline's >100 % flag on a record and in the report."""

import json
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

import effbench.profilers.bandwidth as bw
from effbench.profilers.bandwidth import Peak, PeakCache, PeakWarning, device_peak, stable_best

QUIET = lambda: (False, "quiet (test)")  # noqa: E731
BUSY = lambda: (True, "a competing process (test)")  # noqa: E731
DAY = 86400.0


@pytest.fixture
def measured(monkeypatch):
    """Replace the measurement: returns the calls made; each gives a new, stable peak."""
    calls = []

    def fake(device="cpu"):
        calls.append(torch.get_num_threads())
        return Peak(bw.fingerprint(device), 0.1 * len(calls), 20.0, "measured (fake)")

    monkeypatch.setattr(bw, "measure_peaks", fake)
    return calls


def scripted(times):
    it = iter(times)
    return lambda: next(it)


def test_stable_best_stops_when_the_two_fastest_agree():
    best, stable, k = stable_best(scripted([1.30, 1.10, 1.00, 1.015, 9.0]), min_rounds=3)
    assert (best, stable, k) == (1.00, True, 4)
    # the fastest two must agree: an early lucky pair is enough only after min_rounds
    best, stable, k = stable_best(scripted([1.0, 1.0, 5.0, 5.0]), min_rounds=3)
    assert (best, stable, k) == (1.0, True, 3)


def test_stable_best_is_bounded_and_says_when_unstable():
    times = [2.0 * 0.9**i for i in range(100)]  # every call 10 % faster than the last
    best, stable, k = stable_best(scripted(times), max_rounds=8)
    assert not stable and k == 8 and best == pytest.approx(times[7])


def test_measure_peaks_small_reports_its_rounds():
    p = bw.measure_peaks("cpu", copy_mib=4, matmul_n=128, repeats=2, max_rounds=6)
    assert p.gbps > 0 and p.tflops > 0 and 4 <= p.rounds <= 12
    assert p.source.startswith("measured") and "best of" in p.source


def test_quiet_machine_caches_and_reuses(tmp_path, measured):
    cache = PeakCache(tmp_path / "peaks.json")
    first = device_peak("cpu", cache, busy=QUIET, now=1000.0)
    again = device_peak("cpu", cache, busy=QUIET, now=1000.0 + DAY)
    assert first == again and len(measured) == 1
    stored = json.loads(cache.path.read_text())[bw.fingerprint("cpu")]
    assert stored["measured_at"] == 1000.0


def test_busy_machine_is_never_cached(tmp_path, measured):
    cache = PeakCache(tmp_path / "peaks.json")
    with pytest.warns(PeakWarning, match="busy.*competing process.*not cached"):
        device_peak("cpu", cache, busy=BUSY)
    assert not cache.path.exists()
    with pytest.warns(PeakWarning):
        device_peak("cpu", cache, busy=BUSY)
    assert len(measured) == 2  # measured again, every time
    device_peak("cpu", cache, busy=QUIET)
    assert cache.path.exists() and len(measured) == 3


def test_busy_only_after_measuring_is_also_not_cached(tmp_path, measured):
    answers = iter([(False, "quiet"), (True, "load started during the measurement")])
    cache = PeakCache(tmp_path / "peaks.json")
    with pytest.warns(PeakWarning, match="load started"):
        device_peak("cpu", cache, busy=lambda: next(answers))
    assert not cache.path.exists()


def test_unstable_peak_is_not_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(bw, "measure_peaks", lambda device="cpu": Peak(
        "x", 0.1, 20.0, "measured (no stable maximum)", stable=False, rounds=60))
    cache = PeakCache(tmp_path / "peaks.json")
    with pytest.warns(PeakWarning, match="stable maximum"):
        device_peak("cpu", cache, busy=QUIET)
    assert not cache.path.exists()


def test_keyed_by_thread_count(tmp_path, measured):
    cache = PeakCache(tmp_path / "peaks.json")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = device_peak("cpu", cache, busy=QUIET)
        torch.set_num_threads(2)
        two = device_peak("cpu", cache, busy=QUIET)
        torch.set_num_threads(1)
        assert device_peak("cpu", cache, busy=QUIET) == one
    finally:
        torch.set_num_threads(before)
    assert measured == [1, 2] and one != two
    keys = list(json.loads(cache.path.read_text()))
    assert any("| 1 threads" in k for k in keys) and any("| 2 threads" in k for k in keys)


def test_old_entries_are_measured_again(tmp_path, measured, monkeypatch):
    cache = PeakCache(tmp_path / "peaks.json")
    device_peak("cpu", cache, busy=QUIET, now=0.0)
    device_peak("cpu", cache, busy=QUIET, now=6 * DAY)
    assert len(measured) == 1  # younger than the default 7 days
    device_peak("cpu", cache, busy=QUIET, now=8 * DAY)
    assert len(measured) == 2
    device_peak("cpu", cache, busy=QUIET, now=20 * DAY, max_age_days=30)
    assert len(measured) == 2
    monkeypatch.setenv(bw.MAX_AGE_ENV, "1")
    device_peak("cpu", cache, busy=QUIET, now=10 * DAY)
    assert len(measured) == 3


def test_entry_without_a_measurement_time_is_measured_again(tmp_path, measured):
    """Caches written before entries carried a time (the one that said 211 % of peak)."""
    path = tmp_path / "peaks.json"
    key = bw.fingerprint("cpu")
    path.write_text(json.dumps({key: {"device": key, "gbps": 5.0, "tflops": 0.05,
                                      "source": "measured"}}))
    peak = device_peak("cpu", PeakCache(path), busy=QUIET)
    assert len(measured) == 1 and peak.gbps == 20.0
    assert json.loads(path.read_text())[key]["gbps"] == 20.0


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_corrupt_cache_warns_naming_the_file_and_is_rewritten(tmp_path, measured, text):
    path = tmp_path / "peaks.json"
    path.write_text(text)
    with pytest.warns(PeakWarning, match=f"{path}.*corrupt"):
        device_peak("cpu", PeakCache(path), busy=QUIET)
    assert len(measured) == 1
    assert bw.fingerprint("cpu") in json.loads(path.read_text())


def test_corrupt_entry_warns_naming_the_file(tmp_path, measured):
    path = tmp_path / "peaks.json"
    path.write_text(json.dumps({bw.fingerprint("cpu"): {"gbps": "fast"}}))
    with pytest.warns(PeakWarning, match=f"{path}.*corrupt"):
        device_peak("cpu", PeakCache(path), busy=QUIET)
    assert len(measured) == 1


def test_machine_busy_answers_with_a_reason():
    busy, why = bw.machine_busy(window_s=0.05)
    assert isinstance(busy, bool) and why
    share = bw.others_busy(0.05)
    assert share is None or 0.0 <= share <= 1.0


# ---------------------------------------------------------------------------------------------
# >100 % of peak: a measurement problem, marked on the record, never shown as a number


def test_roofline_above_100_percent_is_flagged():
    from effbench.suite.levels.kernel import roofline_metrics

    ctx = SimpleNamespace(memo={"peak": Peak("t", tflops=1.0, gbps=10.0, source="t")},
                          device="cpu")
    over = {m.metric: m for m in roofline_metrics(ctx, nbytes=21.1e9, flops=1e9, seconds=1.0)}
    assert over["pct_peak_bandwidth"].value == pytest.approx(211.0)  # the record is kept...
    assert over["pct_peak_bandwidth"].stats["above_peak"] == 1.0  # ...and marked
    assert "above_peak" not in over["pct_peak_compute"].stats  # 0.1 % of compute
    under = {m.metric: m for m in roofline_metrics(ctx, nbytes=5e9, flops=1e9, seconds=1.0)}
    assert "above_peak" not in under["pct_peak_bandwidth"].stats


def test_report_prints_above_peak_as_a_flag():
    from effbench.suite.report import ABOVE_PEAK, summary_table

    base = {"level": "kernel", "workload": "decode-b8-1024", "technique": "dense",
            "params": "{}", "family": "attention", "status": "ok", "run_id": "r", "error": ""}
    df = pd.DataFrame([
        {**base, "metric": "pct_peak_bandwidth", "value": 211.0, "unit": "%",
         "stats": json.dumps({"n": 1, "above_peak": 1.0})},
        {**base, "metric": "pct_peak_compute", "value": 42.0, "unit": "%",
         "stats": json.dumps({"n": 1})},
    ])
    table = summary_table(df)["attention / kernel"]
    assert table["pct_peak_bandwidth"].iloc[0] == ABOVE_PEAK == "!>100%"
    assert table["pct_peak_compute"].iloc[0] == "42.0%"
