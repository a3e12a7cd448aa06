"""Pure chart and analysis functions of the dashboard (no Streamlit)."""

import numpy as np
import pandas as pd

from effbench.dashboards.analysis import profile_metrics
from effbench.dashboards.charts import (
    better_corner,
    comparison_bar,
    frontier_figure,
    frontier_keys,
    roofline_figure,
    tklqt_figure,
)
from effbench.dashboards.data import decades, filter_cases
from effbench.dashboards.pareto import pareto_mask


def cases(n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "run_id": "r", "case_id": [f"c{i}" for i in range(n)],
        "technique": [("a", "b", "c")[i % 3] for i in range(n)],
        "label": "t", "workload": "w", "level": "kernel",
        "lat": rng.random(n), "err": rng.random(n), "mem": rng.random(n),
    })


def test_frontier_figure_marks_exactly_the_mask():
    df = cases()
    mask = pareto_mask(df, "lat", "err", "lower", "lower")
    fig = frontier_figure(df, mask, "lat", "err", "lower", "lower", units={"lat": "s"})
    assert frontier_keys(fig) == {f"r/{c}" for c in df.loc[mask, "case_id"]}
    n_points = sum(len(t.customdata) for t in fig.data if t.customdata is not None)
    assert n_points == len(df)
    line = [t for t in fig.data if t.name == "Pareto frontier"][0]
    assert line.line.shape == "hv" and list(line.x) == sorted(df.loc[mask, "lat"])
    assert fig.layout.xaxis.title.text == "lat (s) · lower is better ↓"
    assert "lower-left" in fig.layout.title.text
    fig = frontier_figure(df, mask, "lat", "err", "lower", "lower", color="mem", log_x=True)
    assert fig.layout.xaxis.type == "log" and fig.layout.coloraxis.colorbar.title.text == "mem"


def test_better_corner():
    assert better_corner("higher", "higher") == "better: upper-right ↗"
    assert better_corner("lower", "higher") == "better: upper-left ↖"


def test_tklqt_figure_marks_only_the_given_transitions():
    batch = [1, 2, 4, 8, 16, 32]
    tklqt = [1e-4, 1.1e-4, 1.2e-4, 5e-3, 6e-3, 7e-3]
    df = pd.DataFrame({"batch_size": batch * 2, "tklqt": tklqt * 2,
                       "technique": ["x"] * 6 + ["y"] * 6})
    fig = tklqt_figure(df, marks={"x": 8.0})
    assert len(fig.data) == 2
    assert [a.text for a in fig.layout.annotations] == ["x: CPU→GPU bound at 8"]


def test_roofline_and_bar():
    df = pd.DataFrame({"ai": [0.5, 50.0], "perf": [1e9, 5e11], "label": ["a", "b"]})
    fig = roofline_figure(df, "ai", "perf", peak_flops=1e12, peak_bandwidth=1e11)
    roof = np.asarray(fig.data[0].y)
    assert roof.max() == 1e12 and roof.min() < 1e12
    bar = comparison_bar(df, "label", "perf", reference=1.0)
    assert list(bar.data[0].y) == ["a", "b"]


def test_small_helpers():
    assert decades(pd.Series([1e-3, 1.0, np.nan, -1])) == 3.0
    assert decades(pd.Series([5.0])) == 0.0
    df = pd.DataFrame({"technique": ["a", "b"], "level": ["k", "e"]})
    assert filter_cases(df, {"technique": ["a"], "level": None})["technique"].tolist() == ["a"]
    assert profile_metrics(["latency", "tklqt.tklqt_us", "host.top1_share", "energy_x"]) == [
        "tklqt.tklqt_us", "host.top1_share"]
