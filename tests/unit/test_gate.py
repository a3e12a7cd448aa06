"""The regression gate on synthetic records: verdicts, direction, tolerance, CLI exit codes."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from effbench.suite import baselines, gate_cli
from effbench.suite.cli import main as cli_main
from effbench.suite.errors import ConfigError, StoreError
from effbench.suite.gate import Thresholds, compare, metric_class, passed, pool_runs
from effbench.suite.records import Record
from effbench.suite.store import RunStore

CASE = "kernel:dense[]@p32/cpu"


def timing(median, n=40, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    return list(median * (1 + noise * rng.standard_normal(n)))


def rec(metric, samples, direction="lower", case=CASE, status="ok", unit="s", **kw):
    samples = list(samples)
    value = kw.pop("value", float(np.median(samples)) if samples else math.nan)
    return {"case_id": case, "metric": metric, "value": value, "unit": unit,
            "direction": direction, "samples": json.dumps(samples), "status": status,
            "error": kw.pop("error", ""), "schema_version": kw.pop("schema_version", 1)}


def frame(*rows):
    return pd.DataFrame(list(rows))


def verdict(result, metric, case=CASE):
    row = result[(result["metric"] == metric) & (result["case_id"] == case)]
    assert len(row) == 1, result
    return row.iloc[0]


def test_metric_classes():
    assert metric_class("latency") == "timing"
    assert metric_class("decode_tokens_per_s") == "timing"
    assert metric_class("energy.joules") == "timing"
    assert metric_class("bytes_per_token") == "count"
    assert metric_class("perplexity") == "numeric"
    assert metric_class("key_rel_error") == "numeric"


def test_identical_runs_are_unchanged():
    s = timing(1e-3)
    r = compare(frame(rec("latency", s)), frame(rec("latency", s)))
    row = verdict(r, "latency")
    assert row["verdict"] == "unchanged"
    assert row["ratio"] == pytest.approx(1.0)
    assert passed(r)


def test_same_distribution_is_unchanged():
    r = compare(frame(rec("latency", timing(1e-3, seed=1))),
                frame(rec("latency", timing(1e-3, seed=2))))
    assert verdict(r, "latency")["verdict"] == "unchanged"


def test_ten_percent_slower_is_regressed():
    r = compare(frame(rec("latency", timing(1e-3, seed=1))),
                frame(rec("latency", timing(1.1e-3, seed=2))))
    row = verdict(r, "latency")
    assert row["verdict"] == "regressed", row["reason"]
    assert row["ci_low"] > 1.05 and row["p_value"] < 0.01
    assert row["ratio"] == pytest.approx(1.1, abs=0.02)
    assert not passed(r)


def test_faster_is_improved():
    r = compare(frame(rec("latency", timing(1e-3, seed=1))),
                frame(rec("latency", timing(0.8e-3, seed=2))))
    assert verdict(r, "latency")["verdict"] == "improved"
    assert passed(r)


def test_small_significant_shift_is_below_the_effect_threshold():
    r = compare(frame(rec("latency", timing(1e-3, n=200, noise=0.002, seed=1))),
                frame(rec("latency", timing(1.02e-3, n=200, noise=0.002, seed=2))))
    row = verdict(r, "latency")
    assert row["verdict"] == "unchanged"
    assert row["p_value"] < 0.01 and "threshold" in row["reason"]


def test_big_but_noisy_shift_is_not_significant():
    r = compare(frame(rec("latency", timing(1e-3, n=6, noise=0.5, seed=1))),
                frame(rec("latency", timing(1.1e-3, n=6, noise=0.5, seed=2))))
    assert verdict(r, "latency")["verdict"] == "unchanged"


def test_direction_aware_for_throughput():
    base = frame(rec("decode_tokens_per_s", timing(1000, seed=1), "higher", unit="tok/s"))
    lower = frame(rec("decode_tokens_per_s", timing(880, seed=2), "higher", unit="tok/s"))
    higher = frame(rec("decode_tokens_per_s", timing(1150, seed=2), "higher", unit="tok/s"))
    assert verdict(compare(base, lower), "decode_tokens_per_s")["verdict"] == "regressed"
    assert verdict(compare(base, higher), "decode_tokens_per_s")["verdict"] == "improved"


def test_threshold_override():
    base, cand = timing(1e-3, seed=1), timing(1.1e-3, seed=2)
    r = compare(frame(rec("latency", base)), frame(rec("latency", cand)),
                Thresholds(timing_effect=0.2))
    assert verdict(r, "latency")["verdict"] == "unchanged"


def test_too_few_samples_is_unchanged_with_reason():
    r = compare(frame(rec("latency", [1.0, 1.0])), frame(rec("latency", [2.0, 2.0])))
    row = verdict(r, "latency")
    assert row["verdict"] == "unchanged" and "too few samples" in row["reason"]


@pytest.mark.parametrize(
    ("metric", "direction", "base", "cand", "expected"),
    [
        ("bytes_per_token", "lower", 704.0, 704.0, "unchanged"),
        ("bytes_per_token", "lower", 704.0, 705.0, "regressed"),
        ("bytes_per_token", "lower", 704.0, 700.0, "improved"),
        ("compression_ratio", "higher", 2.9, 2.8, "regressed"),
        ("exact_match", "higher", 1.0, 0.99, "regressed"),
        ("perplexity", "lower", 10.0, 10.005, "unchanged"),  # within 1e-3 rel
        ("perplexity", "lower", 10.0, 10.02, "regressed"),
        ("max_abs_error", "lower", 1e-7, 5e-7, "unchanged"),  # within 1e-6 abs
    ],
)
def test_deterministic_tolerance(metric, direction, base, cand, expected):
    r = compare(frame(rec(metric, [base], direction, unit="")),
                frame(rec(metric, [cand], direction, unit="")))
    assert verdict(r, metric)["verdict"] == expected


def test_new_missing_failed():
    other = "kernel:sdpa[]@p32/cpu"
    base = frame(rec("latency", timing(1e-3)), rec("flops", [5.0], unit="FLOP"),
                 rec("latency", timing(1e-3), case=other))
    cand = frame(rec("latency", timing(1e-3)), rec("tflops", timing(3.0), "higher"),
                 rec("error", [], case=other, status="failed", error="RuntimeError: boom"))
    r = compare(base, cand)
    assert verdict(r, "flops")["verdict"] == "missing"
    assert verdict(r, "tflops")["verdict"] == "new"
    failed = verdict(r, "latency", other)
    assert failed["verdict"] == "failed" and "boom" in failed["reason"]
    assert not passed(r)
    assert list(r["verdict"])[0] == "failed"  # what needs attention comes first


def test_skip_timing_still_gates_deterministic():
    base = frame(rec("latency", timing(1e-3)), rec("flops", [5.0], unit="FLOP"))
    cand = frame(rec("latency", timing(2e-3)), rec("flops", [6.0], unit="FLOP"))
    r = compare(base, cand, skip_timing="other machine")
    assert verdict(r, "latency")["verdict"] == "skipped"
    assert verdict(r, "flops")["verdict"] == "regressed"


def test_bad_inputs():
    base = frame(rec("latency", timing(1e-3)))
    with pytest.raises(ConfigError, match="no case in common"):
        compare(base, frame(rec("latency", timing(1e-3), case="other")))
    with pytest.raises(ConfigError, match="unknown metric 'nope'"):
        compare(base, base, metrics=["nope"])
    with pytest.raises(StoreError, match="schema version 99"):
        compare(base, frame(rec("latency", timing(1e-3), schema_version=99)))
    with pytest.raises(StoreError, match="missing column"):
        compare(base, base.drop(columns=["samples"]))


def test_thresholds_from_dict():
    assert Thresholds.from_dict({"alpha": 0.05, "min_samples": 8}).alpha == 0.05
    with pytest.raises(ConfigError, match="unknown threshold 'alfa'"):
        Thresholds.from_dict({"alfa": 0.05})
    with pytest.raises(ConfigError, match="alpha must be in"):
        Thresholds.from_dict({"alpha": 2})
    with pytest.raises(ConfigError, match="must be a number"):
        Thresholds.from_dict({"timing_effect": "5%"})
    with pytest.raises(ConfigError, match="must be an integer"):
        Thresholds.from_dict({"min_samples": 2.5})


def test_pool_runs_concatenates_samples():
    a = frame(rec("latency", [1.0, 2.0]), rec("flops", [5.0], unit="FLOP"))
    b = frame(rec("latency", [3.0]), rec("flops", [5.0], unit="FLOP"))
    pooled = pool_runs([a, b])
    lat = pooled[pooled["metric"] == "latency"].iloc[0]
    assert sorted(lat["samples"]) == [1.0, 2.0, 3.0] and lat["value"] == 2.0


def test_interleave_alternates_order():
    calls = []
    order = gate_cli.interleave({"base": None, "head": None}, 3,
                                lambda name, root, r: calls.append(name))
    assert calls == ["base", "head", "head", "base", "base", "head"]
    assert order[0] == ("base", 0)


# ---------------------------------------------------------------------------------------------
# Through the CLI handlers


def _store_run(root, name, metrics, host=None):
    store = RunStore.create(root, name, {"preset": name})
    if host is not None:
        manifest = store.manifest()
        manifest["host"].update(host)
        store.manifest_path.write_text(json.dumps(manifest))
    records = [Record(run_id=store.run_id, case_id=CASE, technique="dense", family="attention",
                      level="kernel", params={}, workload="p32", device="cpu", metric=m,
                      value=float(np.median(s)), unit=u, direction=d, samples=tuple(s))
               for m, s, u, d in metrics]
    store.append(records)
    store.finalize()
    return store.run_dir.name


def _metrics(latency_median, flops=5.0):
    return [("latency", timing(latency_median, seed=int(latency_median * 1e6)), "s", "lower"),
            ("flops", [flops], "FLOP", "lower")]


@pytest.fixture
def results(tmp_path):
    root = tmp_path / "results"
    base = _store_run(root, "base", _metrics(1e-3))
    baselines.save("cpu", root / "runs" / base, root)
    return root


def run_cli(capsys, *argv):
    code = cli_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_gate_exit_codes(results, capsys):
    r = str(results)
    _store_run(results, "same", _metrics(1e-3))
    code, out, _ = run_cli(capsys, "gate", "--baseline", "cpu", "--results", r)
    assert code == 0 and "PASS" in out
    _store_run(results, "slow", _metrics(1.2e-3))
    code, out, _ = run_cli(capsys, "gate", "--baseline", "cpu", "--results", r)
    lines = out.splitlines()  # the canary line first (here: none, timings unverified)
    assert code == 1 and lines[0].startswith("canary:") and "unverified" in lines[0]
    assert "regressed" in lines[5]  # changed rows first
    code, out, _ = run_cli(capsys, "gate", "--baseline", "cpu", "--results", r, "--report-only")
    assert code == 0 and "FAIL" in out
    code, out, _ = run_cli(capsys, "gate", "--baseline", "cpu", "--results", r,
                           "--deterministic-only", "--format", "json")
    data = json.loads(out)
    assert code == 0 and data["passed"] and {x["metric"] for x in data["rows"]} == {"flops"}
    code, out, _ = run_cli(capsys, "gate", "--baseline", "cpu", "--results", r,
                           "--timing-threshold", "0.5", "--format", "markdown")
    assert code == 0 and out.startswith("### effbench gate: PASS")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["gate", "--baseline", "nope"], "neither a baseline"),
        (["gate", "--baseline", "cpu", "--metric", "nope"], "unknown metric 'nope'"),
        (["gate", "--baseline", "cpu", "--alpha", "3"], "alpha must be in"),
        (["gate", "--baseline", "cpu", "--ab", "HEAD"], "--ab needs --run"),
        (["compare", "cpu", "nope"], "neither a baseline"),
        (["baseline", "save", "cpu", "latest"], "already exists"),
        (["baseline", "save", "../evil", "latest"], "invalid baseline name"),
        (["import", "missing.json"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(results, capsys, argv, message):
    code, _, err = run_cli(capsys, *argv, "--results", str(results))
    assert code == 2
    assert err.count("\n") == 1 and message in err


def test_corrupt_baseline_exits_2(results, capsys):
    (results / "baselines" / "cpu" / "records.parquet").write_bytes(b"not parquet")
    code, _, err = run_cli(capsys, "gate", "--baseline", "cpu", "--results", str(results))
    assert code == 2 and "records.parquet is unreadable" in err and err.count("\n") == 1


def test_other_machine_skips_timing_but_gates_deterministic(results, capsys):
    r = str(results)
    _store_run(results, "elsewhere", _metrics(2e-3, flops=6.0), host={"cpu_model": "Other CPU"})
    code, out, _ = run_cli(capsys, "gate", "--baseline", "cpu", "--results", r, "--format",
                           "json")
    rows = {x["metric"]: x for x in json.loads(out)["rows"]}
    assert rows["latency"]["verdict"] == "skipped" and "cpu model" in rows["latency"]["reason"]
    assert rows["flops"]["verdict"] == "regressed" and code == 1
    code, out, _ = run_cli(capsys, "gate", "--baseline", "cpu", "--results", r, "--force",
                           "--format", "json")
    rows = {x["metric"]: x for x in json.loads(out)["rows"]}
    assert rows["latency"]["verdict"] == "regressed"


def test_same_machine():
    a = {"host": {"cpu_model": "X", "cpu_count": 2}, "cuda": {"devices": ["H100"]}}
    assert baselines.same_machine(a, a) == (True, "")
    b = {"host": {"cpu_model": "X", "cpu_count": 2}, "cuda": {"devices": []}}
    ok, why = baselines.same_machine(a, b)
    assert not ok and "GPUs" in why


def test_baseline_update_keeps_history(results, capsys):
    r = str(results)
    code, out, _ = run_cli(capsys, "baseline", "update", "cpu", "latest", "--note", "new kernel",
                           "--results", r)
    assert code == 0
    meta = baselines.load("cpu", results).meta
    assert [h["note"] for h in meta["history"]] == ["created", "new kernel"]
    code, out, _ = run_cli(capsys, "baseline", "list", "--results", r)
    assert code == 0 and "new kernel" in out


def test_every_command_in_ci_doc_parses():
    import argparse
    import re
    import shlex
    from pathlib import Path

    from effbench.suite.cli import build_parser

    doc = (Path(__file__).resolve().parents[2] / "docs" / "CI.md").read_text()
    blocks = "\n".join(re.findall(r"```[a-z]*\n(.*?)```", doc, re.S))
    blocks = re.sub(r"\$\([^)]*\)", "X", blocks)  # shell substitutions -> a plain word
    commands = re.findall(r"\beffbench ((?:run|gate|compare|baseline|export|import)\b[^|&#\n]*)",
                          blocks)
    assert len(commands) >= 10
    ours = argparse.ArgumentParser(prog="effbench")
    gate_cli.add_parsers(ours.add_subparsers(dest="command", required=True))
    for cmd in commands:
        argv = shlex.split(cmd)
        parser = build_parser() if argv[0] == "run" else ours
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"docs/CI.md: 'effbench {cmd.strip()}' does not parse")


def test_import_keeps_the_benchmarked_machine():
    manifest = {"host": {"cpu_model": "This CPU", "cpu_count": 2}, "cuda": {"devices": []}}
    data = {"machine_info": {"node": "ci-7", "cpu": {"brand_raw": "Other CPU", "count": 64}}}
    got = gate_cli.imported_host(manifest, data)
    assert got["host"]["cpu_model"] == "Other CPU" and got["host"]["cpu_count"] == 64
    assert not baselines.same_machine(manifest, got)[0]
    assert gate_cli.imported_host(manifest, {}) == manifest
