"""The serving level keeps each request's timeline, and vLLM's formulas reproduce its metrics.

A real mini serving run (tests/data/mini.toml, serving level only) through the runner; for each
case the Parquet file named in the records' ``stats.timelines`` is read with pyarrow alone, and
TTFT, TPOT, ITL and E2E are recomputed the way ``vllm bench serve`` defines them
(``vllm/benchmarks/lib/endpoint_request_func.py`` and ``serve.py``, as quoted in
docs/METRICS.md and the research notes), written out here independently of
``effbench.suite.serving_metrics``. They must equal the stored samples bit for bit (``==`` on
floats, no tolerance).
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from effbench.suite import presets, runner
from effbench.suite.serving_metrics import METRICS, TIMELINES_FILE, load_timelines
from effbench.suite.store import load_records

MINI = Path(__file__).parents[1] / "data" / "mini.toml"


def vllm_request(arrival: float, chunks: list[tuple[float, int]]) -> dict:
    """One request as vLLM's client sees it: ``st`` is the send time, each streamed chunk
    arrives at ``timestamp``; ``ttft = timestamp - st`` at the first chunk, then
    ``itl.append(timestamp - most_recent_timestamp)`` per later chunk, and
    ``latency = most_recent_timestamp - st`` (vLLM's E2EL)."""
    st = arrival
    ttft, itl, most_recent = 0.0, [], st
    for i, (timestamp, _) in enumerate(chunks):
        if i == 0:
            ttft = timestamp - st
        else:
            itl.append(timestamp - most_recent)
        most_recent = timestamp
    latency = most_recent - st
    output_len = sum(n for _, n in chunks)
    return {"ttft": ttft, "itl": itl, "latency": latency, "output_len": output_len}


def vllm_metrics(requests: list[dict]) -> dict[str, list[float]]:
    """vLLM's ``calculate_metrics``: per request ``tpot = (latency - ttft) / (output_len - 1)``
    when ``output_len > 1``; ``itls += itl``; ``ttfts``, ``e2els`` per request."""
    tpots, itls, ttfts, e2els = [], [], [], []
    for out in requests:
        if out["output_len"] > 1:
            tpots.append((out["latency"] - out["ttft"]) / (out["output_len"] - 1))
        itls += out["itl"]
        ttfts.append(out["ttft"])
        e2els.append(out["latency"])
    return {"ttft": ttfts, "tpot": tpots, "itl": itls, "e2e": e2els}


@pytest.fixture(scope="module")
def serving_run(tmp_path_factory):
    preset = presets.load(str(MINI))
    out = runner.run(preset, results=str(tmp_path_factory.mktemp("serving")),
                     levels=["serving"], progress=False, log=lambda _: None)
    assert out.failed == 0
    df = load_records(out.store.run_dir)
    # the serving level's own records (others, e.g. interference readings, may ride along)
    return out.store.run_dir, df[df["metric"].isin(list(METRICS))]


def test_every_serving_record_names_its_timelines_file(serving_run):
    run_dir, df = serving_run
    assert set(df["level"]) == {"serving"} and df["case_id"].nunique() >= 2
    assert set(METRICS) <= set(df["metric"])
    for case_id, rows in df.groupby("case_id"):
        names = {json.loads(s)["timelines"] for s in rows["stats"]}
        assert len(names) == 1
        (rel,) = names
        assert rel.startswith("artifacts/") and rel.endswith(".parquet")
        assert Path(rel).name.split(".")[0].startswith(TIMELINES_FILE.split(".")[0])
        path = run_dir / rel
        assert path.is_file()
        meta = pq.read_schema(path).metadata
        assert meta[b"case_id"].decode() == case_id


def test_vllm_formulas_on_the_parquet_match_the_stored_metrics_bit_for_bit(serving_run):
    run_dir, df = serving_run
    preset = presets.load(str(MINI))
    for _, rows in df.groupby("case_id"):
        rel = json.loads(rows["stats"].iloc[0])["timelines"]
        table = pq.read_table(run_dir / rel).to_pylist()
        assert [r["request"] for r in table] == list(range(preset.serving.requests))
        reqs = []
        for r in table:
            chunks = [(e["t_s"], e["n_tokens"]) for e in r["emissions"]]
            assert r["finished"] and r["output_tokens"] == preset.serving.output_tokens
            assert r["output_tokens"] == sum(n for _, n in chunks)
            # the serving level decodes autoregressively: one token per chunk, so vLLM's
            # per-chunk ITL and effbench's per-token ITL are the same list
            assert all(n == 1 for _, n in chunks)
            assert r["prompt_tokens"] > 0 and r["arrival_s"] >= 0.0
            reqs.append(vllm_request(r["arrival_s"], chunks))
        want = vllm_metrics(reqs)
        stored = {m: json.loads(rows.loc[rows["metric"] == m, "samples"].iloc[0])
                  for m in ("ttft", "tpot", "itl", "e2e")}
        for metric, values in want.items():
            assert len(values) == len(stored[metric]) > 0, metric
            assert all(a == b for a, b in zip(values, stored[metric])), metric
        assert stored["itl"] == json.loads(rows.loc[rows["metric"] == "icl", "samples"].iloc[0])
        # throughput: output tokens over effbench's duration (last emission - first arrival)
        span = (max(r["emissions"][-1]["t_s"] for r in table)
                - min(r["arrival_s"] for r in table))
        dur = rows.loc[rows["metric"] == "duration", "value"].iloc[0]
        assert dur == span
        tput = rows.loc[rows["metric"] == "output_throughput", "value"].iloc[0]
        assert tput == sum(r["output_tokens"] for r in table) / span


def test_loader_gives_back_the_same_timelines(serving_run):
    run_dir, df = serving_run
    rel = json.loads(df["stats"].iloc[0])["timelines"]
    table = pq.read_table(run_dir / rel).to_pylist()
    got = load_timelines(run_dir / rel)
    assert len(got) == len(table)
    for t, r in zip(got, table):
        assert t.arrival_s == r["arrival_s"] and t.prompt_tokens == r["prompt_tokens"]
        assert t.emissions == tuple((e["t_s"], e["n_tokens"]) for e in r["emissions"])
        assert t.output_tokens == r["output_tokens"] and t.finished
