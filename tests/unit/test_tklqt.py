import argparse
import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from effbench.profilers.base import collect
from effbench.profilers.kineto import load_trace, parse_events
from effbench.profilers.tklqt import (
    busy_and_span_ns,
    detect_transition,
    kernel_table,
    knee_batch_size,
    summarize,
    unlinked_gpu_ops,
)
from effbench.profilers.tklqt_cli import add_parser
from effbench.profilers.tklqt_profiler import TKLQTProfiler


def launch(corr, ts, dur, name="cudaLaunchKernel", cat="cuda_runtime"):
    return {"ph": "X", "cat": cat, "name": name, "pid": 1, "tid": 1, "ts": ts, "dur": dur,
            "args": {"correlation": corr, "cbid": 211}}


def gpu(corr, ts, dur, name="k", cat="kernel", stream=7, device=0, **extra):
    return {"ph": "X", "cat": cat, "name": name, "pid": device, "tid": stream, "ts": ts,
            "dur": dur, "args": {"correlation": corr, "device": device, "stream": stream,
                                 **extra}}


def step(n, ts, dur):
    return {"ph": "X", "cat": "user_annotation", "name": f"ProfilerStep#{n}", "pid": 1,
            "tid": 1, "ts": ts, "dur": dur, "args": {}}


BASIC = [
    launch(1, 100, 10), gpu(1, 115, 30),          # t_lq 15, delay 5
    launch(2, 120, 10), gpu(2, 145, 5),           # queued behind 1: t_lq 25, short kernel
    {"ph": "s", "cat": "ac2g", "id": 1, "ts": 100, "name": "ac2g"},
]


def write(tmp_path: Path, events, gz: bool) -> Path:
    data = json.dumps({"schemaVersion": 1, "traceEvents": events}).encode()
    p = tmp_path / ("t.json.gz" if gz else "t.json")
    p.write_bytes(gzip.compress(data) if gz else data)
    return p


@pytest.mark.parametrize("gz", [False, True])
def test_plain_and_gzipped_give_exact_values(tmp_path, gz):
    t = kernel_table(load_trace(write(tmp_path, BASIC, gz)))
    assert list(t["correlation"]) == [1, 2]
    assert list(t["t_lq_us"]) == [15.0, 25.0]
    assert list(t["launch_delay_us"]) == [5.0, 15.0]
    assert list(t["launch_dur_us"]) == [10.0, 10.0]
    assert list(t["kernel_dur_us"]) == [30.0, 5.0]
    s = summarize(t).iloc[0]
    assert s["tklqt_us"] == 40.0 and s["n_kernels"] == 2 and s["n_short_kernels"] == 1
    assert s["t_lq_median_us"] == 20.0
    assert s["gpu_busy_us"] == 35.0 and s["gpu_span_us"] == 35.0 and s["gpu_idle_us"] == 0.0


def test_driver_launch_and_version_suffix_are_linked():
    ev = [launch(5, 10, 4, name="cuLaunchKernel", cat="cuda_driver"), gpu(5, 20, 1),
          launch(6, 30, 4, name="cudaLaunchKernel_v7000"), gpu(6, 40, 1),
          launch(7, 50, 4, name="cudaDeviceSynchronize")]
    t = kernel_table(parse_events(ev))
    assert list(t["launch_name"]) == ["cuLaunchKernel", "cudaLaunchKernel_v7000"]
    assert list(t["t_lq_us"]) == [10.0, 10.0]


def test_memcpy_and_memset_are_kept_but_counted_apart():
    ev = BASIC + [launch(3, 200, 8, name="cudaMemcpyAsync"), gpu(3, 210, 2, cat="gpu_memcpy"),
                  launch(4, 220, 8, name="cudaMemsetAsync"), gpu(4, 230, 2, cat="gpu_memset")]
    t = kernel_table(parse_events(ev))
    assert sorted(t["kind"]) == ["kernel", "kernel", "memcpy", "memset"]
    assert summarize(t).iloc[0]["n_kernels"] == 2
    assert summarize(t, include_memory=True).iloc[0]["n_kernels"] == 4


def test_graph_launch_kernels_reported_apart_not_dropped():
    ev = BASIC + [launch(9, 300, 20, name="cudaGraphLaunch"),
                  gpu(9, 330, 5), gpu(9, 335, 5), gpu(9, 340, 5),
                  launch(10, 400, 5), gpu(10, 410, 5, **{"graph id": 3})]
    t = kernel_table(parse_events(ev))
    assert t["in_graph"].sum() == 4
    s = summarize(t).iloc[0]
    assert s["n_kernels"] == 2 and s["tklqt_us"] == 40.0
    assert s["n_graph_kernels"] == 4 and s["n_graph_launches"] == 2
    assert s["graph_kernel_time_us"] == 20.0
    assert s["kernel_time_us"] == 55.0


def test_missing_fields_are_skipped_and_counted():
    bad = [launch(20, 1, 1), gpu(20, 5, 1)]
    del bad[0]["dur"]
    no_corr = gpu(21, 5, 1)
    del no_corr["args"]["correlation"]
    no_args = launch(22, 1, 1)
    no_args["args"] = None
    ev = BASIC + bad + [no_corr, no_args, {"cat": "kernel"}, "junk"]
    trace = parse_events(ev)
    assert trace.skipped == 4
    assert unlinked_gpu_ops(trace) == 1  # kernel 20 lost its launch call
    assert list(kernel_table(trace)["correlation"]) == [1, 2]


def test_per_step_split():
    ev = [step(7, 0, 100), step(8, 100, 100),
          launch(1, 10, 5), gpu(1, 20, 10), launch(2, 50, 5), gpu(2, 60, 10),
          launch(3, 110, 5), gpu(3, 150, 10), launch(4, 500, 5), gpu(4, 510, 1)]
    t = kernel_table(parse_events(ev))
    assert list(t["step"]) == [7, 7, 8, -1]
    s = summarize(t).set_index("scope")
    assert list(s.index) == ["all", "step 7", "step 8"]
    assert s.loc["step 7", "tklqt_us"] == 20.0 and s.loc["step 8", "tklqt_us"] == 40.0
    assert s.loc["step 7", "gpu_busy_us"] == 20.0 and s.loc["step 7", "gpu_idle_us"] == 30.0
    assert s.loc["all", "tklqt_us"] == 70.0


def test_busy_is_union_over_streams_per_device():
    t = pd.DataFrame({"device": [0, 0, 0, 1], "kernel_start_ns": [0, 5, 20, 0],
                      "kernel_end_ns": [10, 12, 30, 4]})
    assert busy_and_span_ns(t) == (12 + 10 + 4, 30 + 4)


def test_nanosecond_fraction_of_epoch_microseconds_is_exact(tmp_path):
    ev = [launch(1, "X", 1), gpu(1, 1, 1)]
    raw = json.dumps({"traceEvents": ev}).replace('"ts": "X"', '"ts": 1712195495519689.047')
    raw = raw.replace('"ts": 1,', '"ts": 1712195495519700.123,')
    p = tmp_path / "ns.json"
    p.write_text(raw)
    t = kernel_table(load_trace(p))
    assert t["launch_start_ns"][0] == 1712195495519689047
    assert t["t_lq_us"][0] == pytest.approx(11.076, abs=1e-9)


@pytest.mark.parametrize("content", [None, b"not json", b'{"x": 1}'])
def test_bad_input_raises_one_line_value_error(tmp_path, content):
    p = tmp_path / "t.json"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ValueError) as err:
        load_trace(p)
    assert "\n" not in str(err.value)


def simulate(batch, n=40, gap=10.0, latency=5.0, call=4.0, per_batch_us=1.0):
    """Launch loop: a call every ``gap`` µs; kernel starts at max(call + latency, prev end)."""
    ev, free = [], 0.0
    for i in range(n):
        ts = i * gap
        start = max(ts + latency, free)
        dur = per_batch_us * batch
        free = start + dur
        ev += [launch(i, ts, call), gpu(i, start, dur)]
    return summarize(kernel_table(parse_events(ev))).iloc[0]


def test_transition_found_where_kernels_outlast_launch_interval():
    # Kernel time = batch µs, launch interval 10 µs: GPU-bound once batch > 10.
    batches = [1, 2, 4, 8, 16, 32, 64]
    rows = [dict(batch_size=b, **simulate(b)[["t_lq_median_us", "gpu_idle_fraction"]])
            for b in batches]
    sweep = pd.DataFrame(rows)
    tr = detect_transition(sweep)
    assert tr.batch_size == 16 and tr.floor_us == 5.0
    assert tr.knee_batch_size in (8, 16)
    assert (sweep.loc[sweep.batch_size <= 8, "t_lq_median_us"] == 5.0).all()


def test_transition_none_when_always_cpu_bound():
    sweep = pd.DataFrame({"batch_size": [1, 2, 4, 8], "t_lq_median_us": [5.0, 5.1, 5.0, 5.2],
                          "gpu_idle_fraction": [0.9, 0.8, 0.6, 0.3]})
    assert detect_transition(sweep).batch_size is None
    with pytest.raises(ValueError):
        detect_transition(sweep.drop(columns="gpu_idle_fraction"))


def test_knee_fit_recovers_breakpoint():
    b = 2.0 ** np.arange(8)
    y = np.where(b <= 16, 5.0, 5.0 * (b / 16) ** 1.5)
    assert knee_batch_size(b, y) == 16
    assert knee_batch_size(b[:3], y[:3]) is None


def test_profiler_on_cpu_keeps_trace_and_says_why(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CPU-only behaviour")
    prof = TKLQTProfiler(tmp_path)
    assert prof.available() == (True, "")
    with collect([prof]) as got:
        torch.relu(torch.ones(8)).sum()
    (res,) = got.results
    assert res.unavailable == "no CUDA kernels in trace: no NVIDIA GPU"
    (art,) = res.artifacts
    assert art.endswith(".json.gz")
    assert "traceEvents" in json.loads(gzip.open(art).read())


def test_cli_json_and_csv(tmp_path, capsys):
    ap = argparse.ArgumentParser()
    add_parser(ap.add_subparsers())
    csv = tmp_path / "k.csv"
    args = ap.parse_args(["tklqt", str(write(tmp_path, BASIC, True)), "--json",
                          "--per-kernel", str(csv)])
    assert args.func(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["scopes"][0]["tklqt_us"] == 40.0
    assert len(pd.read_csv(csv)) == 2
    args = ap.parse_args(["tklqt", str(tmp_path / "missing.json")])
    with pytest.raises(ValueError, match="not found"):
        args.func(args)
