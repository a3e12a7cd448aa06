"""The Streamlit pages driven headless with AppTest over a store made by a real mini run."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dash_helpers import (  # noqa: E402
    add_slower_run,
    copy_store,
    empty_store,
    mini_store,
    profile_store,
)

from effbench.dashboards.data import (  # noqa: E402
    case_metrics,
    filter_cases,
    load_store,
    metric_info,
    read_store,
    results_root,
)
from effbench.dashboards.pareto import hypervolume_2d, pareto_mask, reference_point  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")
PAGES = ("runs", "techniques", "linked", "profiles")


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> Path:
    return mini_store(tmp_path_factory.mktemp("dash"))


@pytest.fixture(autouse=True)
def _fresh_cache():
    st.cache_data.clear()
    yield
    st.cache_data.clear()


def app(root: Path, page: str | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.session_state["results_root"] = str(root)
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, at.exception
    return at


def chart(at: AppTest, i: int = 0) -> dict:
    return json.loads(at.get("plotly_chart")[i].proto.spec)


def chart_frontier(spec: dict) -> set[str]:
    return {row[0] for d in spec["data"] if (d.get("meta") or {}).get("role") == "frontier"
            for row in d["customdata"]}


def chart_points(spec: dict) -> set[str]:
    return {row[0] for d in spec["data"] if "customdata" in d for row in d["customdata"]}


def expected_frontier(root: Path, x: str, y: str, x_dir: str, y_dir: str, **filters) -> set[str]:
    wide = filter_cases(case_metrics(read_store(root).records), filters).dropna(subset=[x, y])
    front = wide[pareto_mask(wide, x, y, x_dir, y_dir)]
    return set(front["run_id"] + "/" + front["case_id"])


def test_frontier_default_view_holds_exactly_the_pareto_set(store):
    at = app(store)
    assert at.title[0].value == "Frontier explorer"
    x, y = at.selectbox(key="x").value, at.selectbox(key="y").value
    assert (x, y) == ("decode_tokens_per_s", "perplexity")
    spec = chart(at)
    want = expected_frontier(store, x, y, "higher", "lower")
    assert want and chart_frontier(spec) == want
    assert "lower is better" in spec["layout"]["yaxis"]["title"]["text"]
    line = [d for d in spec["data"] if d.get("name") == "Pareto frontier"]
    assert len(want) < 2 or line[0]["line"]["shape"] == "vh"
    assert at.metric[0].value == f"{len(want)} / {len(chart_points(spec))}"


def test_changing_metrics_and_direction_changes_the_frontier(store):
    at = app(store)
    at.selectbox(key="x").set_value("latency").run()
    at.selectbox(key="y").set_value("max_abs_error").run()
    spec = chart(at)
    want = expected_frontier(store, "latency", "max_abs_error", "lower", "lower")
    assert chart_frontier(spec) == want
    assert all(k.split("/")[1] for k in chart_points(spec))
    # override: pretend higher latency is better -> a different frontier
    at.selectbox(key="dir_x_latency").set_value("higher").run()
    flipped = expected_frontier(store, "latency", "max_abs_error", "higher", "lower")
    assert chart_frontier(chart(at)) == flipped != want


def test_filters_restrict_points(store):
    at = app(store)
    at.selectbox(key="x").set_value("latency").run()
    at.selectbox(key="y").set_value("max_abs_error").run()
    before = chart_points(chart(at))
    at.multiselect(key="f_technique").set_value(["dense"]).run()
    spec = chart(at)
    wide = case_metrics(read_store(store).records)
    dense = wide[(wide["technique"] == "dense")].dropna(subset=["latency", "max_abs_error"])
    assert chart_points(spec) == set(dense["run_id"] + "/" + dense["case_id"]) < before
    assert chart_frontier(spec) == expected_frontier(
        store, "latency", "max_abs_error", "lower", "lower", technique=["dense"])
    table = at.dataframe[0].value
    assert set(table["technique"]) == {"dense"}


def test_hypervolume_third_metric_and_downloads(store):
    at = app(store)
    wide = case_metrics(read_store(store).records).dropna(
        subset=["decode_tokens_per_s", "perplexity"])
    cols = ["decode_tokens_per_s", "perplexity"]
    ref = reference_point(wide, *cols, "higher", "lower")
    hv = hypervolume_2d(wide[cols].to_numpy(), ref, "higher", "lower")
    assert at.metric[1].value == f"{hv:.4g}"
    at.selectbox(key="third").set_value("kv_bytes_per_token").run()
    spec = chart(at)
    assert spec["layout"]["coloraxis"]["colorbar"]["title"]["text"] == "kv_bytes_per_token"
    at.radio(key="encode").set_value("size").run()
    sizes = [d["marker"]["size"] for d in chart(at)["data"] if "customdata" in d]
    assert sizes and all(isinstance(s, (list, dict)) for s in sizes)  # per-point, not one size
    assert len(at.get("download_button")) == 2


def test_runs_page_compares_two_runs(store):
    from effbench.suite.gate import compare

    at = app(store, "runs")
    assert len(at.dataframe[0].value) == 2
    runs = at.dataframe[0].value["run_id"].tolist()  # newest first: B = runs[0]
    recs = read_store(store).records
    want = compare(recs[recs["run_id"] == runs[1]], recs[recs["run_id"] == runs[0]])
    shown = at.dataframe[-1].value
    assert len(shown) == len(want) > 0
    assert list(shown["verdict"]) == list(want["verdict"])
    bars = chart(at)  # candidate/baseline ratios, one bar group per verdict
    assert {d["name"] for d in bars["data"]} == set(want.dropna(subset=["ratio"])["verdict"])


def test_techniques_page_lists_registry_and_best_cases(store):
    from effbench.suite.registry import techniques

    at = app(store, "techniques")
    catalog = at.dataframe[0].value
    assert set(catalog["technique"]) == {t.name for t in techniques()}
    assert catalog.set_index("technique").at["kivi", "levels with results"] == "engine, kernel"
    at.selectbox(key="technique").set_value("kivi").run()
    best = at.dataframe[1].value
    assert {"kernel", "engine"} <= set(best["level"]) and (best["params"] != "").all()


def test_linked_levels_shows_kernel_and_engine(store):
    at = app(store, "linked")
    assert at.selectbox(key="technique").value != "dense"  # baselines come last
    at.selectbox(key="technique").set_value("streaming-llm").run()
    table = at.dataframe[-1].value
    assert {"kernel", "engine"} <= set(table["level"])
    kernel = table[(table["level"] == "kernel")]
    assert (kernel["metric"] == "speedup (unpaired)").all() and (kernel["value"] > 0).all()
    assert not kernel["paired"].any()  # the baseline kernel case lends its latency: unpaired
    engine = table[(table["level"] == "engine") & (table["metric"] == "speedup")]
    assert engine["paired"].all()
    assert table["run_id"].nunique() == 1
    at.selectbox(key="technique").set_value("kivi").run()  # kvcache: speedup on read_latency
    table = at.dataframe[-1].value
    assert {"kernel", "engine"} <= set(table["level"])
    assert len(at.get("plotly_chart")) >= 2


def test_profiles_page_names_the_command_when_no_profiles(store):
    at = app(store, "profiles")
    assert any("--profile tklqt,energy" in i.value for i in at.info)


def test_profiles_page_charts_profiler_metrics(tmp_path):
    at = app(profile_store(tmp_path), "profiles")
    assert at.selectbox(key="profile_metric").options == ["energy.joules", "tklqt.tklqt_us"]
    at.selectbox(key="profile_metric").set_value("tklqt.tklqt_us").run()
    spec = chart(at)
    assert sorted(spec["data"][0]["y"]) == ["dense", "streaming-llm"]


@pytest.mark.parametrize("page", (None,) + PAGES)
def test_empty_store_says_how_to_make_results(tmp_path, page):
    at = app(empty_store(tmp_path), page)
    assert any("effbench run smoke" in i.value for i in at.info)
    assert not at.get("plotly_chart")


def test_corrupt_parquet_is_a_named_warning_and_the_rest_works(store, tmp_path):
    root = copy_store(store, tmp_path / "store")
    bad = sorted((root / "runs").glob("*/records.parquet"))[0]
    bad.write_bytes(b"not a parquet file")
    at = app(root)
    assert any(str(bad) in w.value for w in at.warning)
    assert chart_frontier(chart(at))
    at = app(root, "runs")
    assert len(at.dataframe[0].value) == 2


def test_cache_sees_new_runs(store, tmp_path):
    root = copy_store(store, tmp_path / "store")
    n = load_store(str(root)).records["run_id"].nunique()
    add_slower_run(root, factor=2.0)
    assert load_store(str(root)).records["run_id"].nunique() == n + 1


def test_results_root_precedence():
    assert results_root(["--results", "a"], {"EFFBENCH_RESULTS": "b"}) == "a"
    assert results_root(["--other"], {"EFFBENCH_RESULTS": "b"}) == "b"
    assert results_root([], {}) == "results"


def test_metric_info_directions(store):
    info = metric_info(read_store(store).records)
    assert info.at["latency", "direction"] == "lower"
    assert info.at["decode_tokens_per_s", "direction"] == "higher"


def test_profiles_page_plots_a_tklqt_sweep_with_the_documented_transition(tmp_path):
    """A stored `profile tklqt` sweep: TKLQT vs batch size, transition from detect_transition."""
    from effbench.profilers.tklqt import detect_transition
    from effbench.suite.profiling import store_sweep

    rows = []
    for b in (1, 2, 4, 8, 16, 32):  # launch floor 5 us until batch 8, then queuing grows
        t_lq = 5.0 if b <= 8 else 5.0 * b / 4
        idle = 0.7 if b <= 8 else 0.05
        rows.append({"batch_size": b, "phase": "decode", "steps": 10, "kernels_per_step": 40,
                     "tklqt_us_per_step": 40 * t_lq, "t_lq_median_us": t_lq,
                     "gpu_idle_fraction": idle})
    store_sweep(str(tmp_path), rows, "", "tklqt-p64-n16", "cuda:test", {})
    expected = detect_transition(pd.DataFrame(rows)).batch_size
    assert expected == 16
    at = app(tmp_path, "profiles")
    spec = chart(at)
    line = spec["data"][0]
    assert line["name"] == "decode" and _values(line["x"]) == [1, 2, 4, 8, 16, 32]
    marks = [s for s in spec["layout"].get("shapes", []) if s.get("type") == "line"]
    assert [m["x0"] for m in marks] == [expected]


def _values(arr) -> list[float]:
    """A plotly array from a figure spec: a plain list, or plotly 6+'s base64 typed array."""
    if isinstance(arr, dict) and "bdata" in arr:
        import base64

        import numpy as np

        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=arr["dtype"]).tolist()
    return list(arr)
