import math

import numpy as np
import pytest

from effbench.suite.records import DIRECTIONS
from effbench.suite.serving_metrics import (
    LATENCY_METRICS,
    METRICS,
    SLO,
    RequestTimeline,
    duration,
    e2e,
    icl,
    itl,
    meets_slo,
    serving_summary,
    tpot,
    ttft,
)

# A: ordinary streaming plus one 3-token (speculative) step.
A = RequestTimeline(0.0, ((0.5, 1), (0.7, 1), (1.0, 3), (1.1, 1)), prompt_tokens=10)
# B: a single output token -> TPOT undefined.
B = RequestTimeline(0.2, ((0.4, 1),), prompt_tokens=5)
# C: the first emission already carries 2 tokens (its extra token gets no ITL).
C = RequestTimeline(0.3, ((0.6, 2), (1.2, 2)), prompt_tokens=7)
# D: did not finish; only spans the run and counts as missing every SLO.
D = RequestTimeline(0.5, ((0.9, 1),), prompt_tokens=4, finished=False)
RUN = [A, B, C, D]


def test_per_request_latencies_by_hand():
    assert A.output_tokens == 6
    assert ttft(A) == pytest.approx(0.5)
    assert e2e(A) == pytest.approx(1.1)
    assert tpot(A) == pytest.approx((1.1 - 0.5) / 5)
    assert itl(A) == pytest.approx([0.2, 0.1, 0.1, 0.1, 0.1])
    assert icl(A) == pytest.approx([0.2, 0.3, 0.1])
    assert sum(itl(A)) == pytest.approx(e2e(A) - ttft(A))

    assert ttft(B) == pytest.approx(0.2) and e2e(B) == pytest.approx(0.2)
    assert math.isnan(tpot(B)) and itl(B) == [] and icl(B) == []

    assert C.output_tokens == 4
    assert ttft(C) == pytest.approx(0.3) and e2e(C) == pytest.approx(0.9)
    assert tpot(C) == pytest.approx(0.6 / 3)
    assert itl(C) == pytest.approx([0.3, 0.3])  # sum = E2E - TTFT, not over 3 tokens
    assert icl(C) == pytest.approx([0.6])


def test_summary_throughput_counts_finished_requests_over_run_span():
    s = serving_summary(RUN)
    tp = s["throughput"]
    assert duration(RUN) == pytest.approx(1.2)  # C's last emission - A's arrival
    assert tp["duration_s"] == pytest.approx(1.2)
    assert tp["n_requests"] == 4 and tp["n_finished"] == 3
    assert tp["output_tokens"] == 11 and tp["prompt_tokens"] == 22
    assert tp["output_tokens_per_s"] == pytest.approx(11 / 1.2)
    assert tp["total_tokens_per_s"] == pytest.approx(33 / 1.2)
    assert tp["requests_per_s"] == pytest.approx(3 / 1.2)


def test_summary_distributions():
    s = serving_summary(RUN)
    assert s["ttft"]["values"] == pytest.approx([0.5, 0.2, 0.3])
    assert s["ttft"]["mean"] == pytest.approx(1.0 / 3)
    assert s["ttft"]["median"] == pytest.approx(0.3)
    assert s["ttft"]["p90"] == pytest.approx(np.percentile([0.5, 0.2, 0.3], 90))
    assert s["ttft"]["p99"] == pytest.approx(np.percentile([0.5, 0.2, 0.3], 99))
    # TPOT keeps B's NaN in the raw list (aligned with requests) but excludes it from stats.
    assert s["tpot"]["n"] == 2 and math.isnan(s["tpot"]["values"][1])
    assert s["tpot"]["mean"] == pytest.approx((0.12 + 0.2) / 2)
    assert s["itl"]["values"] == pytest.approx([0.2, 0.1, 0.1, 0.1, 0.1, 0.3, 0.3])
    assert s["itl"]["n"] == 7
    assert s["icl"]["values"] == pytest.approx([0.2, 0.3, 0.1, 0.6])
    assert s["e2e"]["median"] == pytest.approx(0.9)
    for name in LATENCY_METRICS:
        assert {"mean", "median", "p90", "p99", "values"} <= set(s[name])


@pytest.mark.parametrize(
    ("slos", "n_good"),
    [
        (None, 3),  # no objective: every finished request is good, D never is
        ({"ttft_s": 0.4, "tpot_s": 0.15}, 1),  # A fails TTFT, C fails TPOT, B's TPOT is NaN
        (SLO(tpot_s=0.15), 2),  # A (0.12) and B (undefined) pass, C (0.2) fails
        (SLO(e2e_s=1.0), 2),  # A (1.1) fails
        (SLO(ttft_s=0.25, e2e_s=0.25), 1),  # only B
        (SLO(ttft_s=0.01), 0),
    ],
)
def test_goodput_with_mixed_slos(slos, n_good):
    g = serving_summary(RUN, slos)["goodput"]
    assert g["n_good"] == n_good
    assert g["requests_per_s"] == pytest.approx(n_good / 1.2)
    assert g["fraction"] == pytest.approx(n_good / 4)


def test_meets_slo_boundary_is_inclusive_and_unfinished_fails():
    assert meets_slo(A, SLO(ttft_s=0.5))
    assert not meets_slo(D, SLO())


def test_invalid_timelines_and_slos_raise():
    with pytest.raises(ValueError, match="time order"):
        RequestTimeline(0.0, ((0.5, 1), (0.4, 1)), prompt_tokens=1)
    with pytest.raises(ValueError, match="time order"):
        RequestTimeline(1.0, ((0.5, 1),), prompt_tokens=1)
    with pytest.raises(ValueError, match=">= 1 token"):
        RequestTimeline(0.0, ((0.5, 0),), prompt_tokens=1)
    with pytest.raises(ValueError, match="at least one emission"):
        RequestTimeline(0.0, (), prompt_tokens=1)
    with pytest.raises(ValueError, match="valid keys"):
        serving_summary(RUN, {"ttft": 1.0})


def test_empty_run_gives_nan_rates():
    s = serving_summary([])
    assert math.isnan(s["throughput"]["output_tokens_per_s"])
    assert math.isnan(s["goodput"]["fraction"])
    assert s["ttft"]["n"] == 0 and math.isnan(s["ttft"]["p99"])


def test_metrics_table_describes_every_metric():
    for name in (*LATENCY_METRICS, "output_throughput", "total_throughput", "goodput"):
        info = METRICS[name]
        assert info.direction in DIRECTIONS and info.unit and info.definition
    assert METRICS["ttft"].direction == "lower" and METRICS["goodput"].direction == "higher"
