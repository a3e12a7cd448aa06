"""Report: value formatting with units, failed cases with their error, one table per family."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from effbench.suite.records import Record
from effbench.suite.report import format_cell, format_value, render_text, summary_table
from effbench.suite.store import records_to_frame

RUN = "20261124-183501-smoke-abcd"


def rec(case_id: str = "c1", metric: str = "latency", value: float = 0.0012, **kw) -> Record:
    fields = dict(
        run_id=RUN,
        case_id=case_id,
        technique="dense",
        family="attention",
        level="kernel",
        params={"window": 64},
        workload="prefill-256",
        device="cpu",
        metric=metric,
        value=value,
        unit="s",
        direction="lower",
        samples=(0.0011, 0.0012, 0.0013),
        stats={"median": value, "ci_low": 0.0011, "ci_high": 0.0013, "n": 3, "rel_ci": 0.08},
    )
    fields.update(kw)
    return Record(**fields)


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [
        (0.0012, "s", "1.20 ms"),
        (2.5e-7, "s", "250 ns"),
        (3.2e-5, "s", "32.0 us"),
        (1.5, "s", "1.50 s"),
        (0.0009996, "s", "1.00 ms"),
        (12.5, "ms", "12.5 ms"),
        (1234.0, "s", "1,230 s"),
        (12345.6, "tok/s", "12,300 tok/s"),
        (2.5e6, "tok/s", "2.50M tok/s"),
        (87.25, "tok/s", "87.2 tok/s"),
        (2.314, "x", "2.31x"),
        (12.34, "%", "12.3%"),
        (512, "B", "512 B"),
        (2048, "bytes", "2.00 KiB"),
        (3.5e9, "B", "3.26 GiB"),
        (0.5, "", "0.500"),
        (7, "items", "7.00 items"),
        (math.nan, "s", "n/a"),
    ],
)
def test_format_value(value: float, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_format_cell_with_relative_ci() -> None:
    assert format_cell(0.0123, "s", 0.012) == "12.3 ms ±1.2%"
    assert format_cell(0.0123, "s", 0.25) == "12.3 ms ±25%"
    assert format_cell(0.0123, "s", None) == "12.3 ms"


def test_one_row_per_configuration_with_metric_columns() -> None:
    df = records_to_frame(
        [
            rec("c1"),
            rec("c1", "throughput", 12345.6, unit="tok/s", direction="higher"),
            rec("c1", "peak_memory", 3.5e9, unit="B"),
            rec("c2", params={"window": 128}, value=0.002),
        ]
    )
    before = df.copy()
    tables = summary_table(df)
    pd.testing.assert_frame_equal(df, before)  # pure: input untouched
    table = tables["attention / kernel"]
    keys = ["workload", "technique", "params"]
    assert list(table.columns) == [*keys, "latency", "throughput", "peak_memory"]
    assert list(table["params"]) == ["window=128", "window=64"]
    row = table.set_index("params").loc["window=64"]
    assert row["latency"] == "1.20 ms ±8.0%"  # median, and rel_ci 0.08 as a percentage
    assert row["throughput"].startswith("12,300 tok/s")
    assert row["peak_memory"].startswith("3.26 GiB")
    assert "error" not in table.columns


def test_failed_case_shows_its_error() -> None:
    df = records_to_frame(
        [
            rec("c1"),
            rec(
                "c2",
                technique="flash",
                value=math.nan,
                status="failed",
                error="RuntimeError: CUDA out of memory\nTraceback ...",
            ),
        ]
    )
    table = summary_table(df)["attention / kernel"].set_index("technique")
    assert table.loc["flash", "error"] == "failed: RuntimeError: CUDA out of memory"
    assert table.loc["flash", "latency"] == ""
    assert table.loc["dense", "error"] == ""
    text = render_text({"attention": table.reset_index()}, width=120)
    assert "failed: RuntimeError: CUDA out of memory" in text


def test_split_per_family() -> None:
    df = records_to_frame(
        [
            rec("c1"),
            rec("c2", family="kvcache", technique="paged", metric="kv_bytes", value=4096, unit="B"),
            rec("c3", family="zzz-custom", metric="score", value=0.9, unit=""),
        ]
    )
    tables = summary_table(df)
    assert list(tables) == ["attention / kernel", "kvcache / kernel", "zzz-custom / kernel"]
    assert "kv_bytes" not in tables["attention / kernel"].columns
    assert list(tables["kvcache / kernel"]["kv_bytes"]) == ["4.00 KiB ±8.0%"]
    assert list(tables["kvcache / kernel"]["technique"]) == ["paged"]


def test_several_runs_get_a_run_column() -> None:
    df = records_to_frame([rec("c1"), rec("c1", run_id="20261125-000000-smoke-beef")])
    table = summary_table(df)["attention / kernel"]
    assert table.columns[0] == "run" and len(table) == 2


def test_empty_frame() -> None:
    assert summary_table(records_to_frame([])) == {}
    assert render_text({}, 80) == "no records\n"


@pytest.mark.parametrize("plain", [True, False])
def test_render_text(plain: bool) -> None:
    df = records_to_frame(
        [rec("c1"), rec("c2", family="kvcache", metric="kv_bytes", value=2048, unit="B")]
    )
    text = render_text(summary_table(df), width=100, plain=plain)
    assert "attention" in text and "kvcache" in text
    assert "1.20 ms ±8.0%" in text and "2.00 KiB ±8.0%" in text
    assert max(len(line) for line in text.splitlines()) <= 100
