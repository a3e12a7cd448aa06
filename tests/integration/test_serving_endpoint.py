"""The serving level against real OpenAI-compatible servers, through the normal runner.

``effbench serve`` runs as a subprocess (chunked prefill); the endpoint run's records, timeline
artifact and metric formulas are checked as for the in-process level, in rate-limited and
concurrency-limited modes, and the dashboard's case table shows the endpoint like any serving
case. Fakes (tests/serve_helpers.fake_app, uvicorn in a thread) cover the bad input: a server
that streams no usage (one line without a tokenizer, counted with one), a response that is not
valid SSE (that request fails with its first bad bytes, the run goes on), a server that refuses
a field (named before the run). ``transformers serve`` runs the same workload when it is
installed (it starts in ~10 s with bounded continuous-batching sizes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("httpx")
pytest.importorskip("fastapi")

from effbench.suite import presets, runner  # noqa: E402
from effbench.suite.errors import ConfigError  # noqa: E402
from effbench.suite.serving_metrics import METRICS, load_timelines, ttft  # noqa: E402
from effbench.suite.store import load_records  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serve_helpers import (  # noqa: E402
    EffbenchServer,
    ThreadServer,
    fake_app,
    free_port,
    wait_ready,
    write_preset,
)

pytestmark = pytest.mark.slow
TINY = Path(__file__).resolve().parents[2] / "kernels_ref" / "checkpoints" / "tiny-target"


@pytest.fixture(scope="module")
def server():
    with EffbenchServer("--technique", "chunked-prefill", "--max-queue", "32") as s:
        yield s


def _run(path: Path, results: Path):
    out = runner.run(
        presets.load(str(path)),
        results=str(results),
        levels=["serving"],
        progress=False,
        log=lambda _: None,
    )
    df = load_records(out.store.run_dir)
    return out, df[df["metric"].isin(list(METRICS))]


def _stats(df, metric="ttft") -> dict:
    return json.loads(df.loc[df["metric"] == metric, "stats"].iloc[0])


def test_endpoint_run_has_the_records_timelines_and_formulas_of_the_level(server, tmp_path):
    path = write_preset(
        tmp_path / "e.toml",
        server.url,
        endpoint_name="effbench-serve-chunked",
        requests=8,
        rate=40.0,
        output_tokens=6,
    )
    out, df = _run(path, tmp_path / "results")
    assert out.failed == 0 and set(METRICS) <= set(df["metric"])
    assert set(df["technique"]) == {"effbench-serve-chunked"}
    assert set(df["family"]) == {"scheduling"} and set(df["level"]) == {"serving"}
    st = _stats(df)
    assert st["endpoint"] == server.url and st["endpoint_model"] == "tiny"
    assert (st["output_count"], st["prompt_count"]) == ("usage", "usage")
    assert st["chunk_split"] == {"one-per-chunk": 8} and st["failed_requests"] == 0
    timelines = load_timelines(out.store.run_dir / st["timelines"])
    assert len(timelines) == 8 and all(t.finished for t in timelines)
    assert [t.output_tokens for t in timelines] == [6] * 8
    samples = json.loads(df.loc[df["metric"] == "ttft", "samples"].iloc[0])
    assert list(samples) == [ttft(t) for t in timelines]  # bit for bit, as in-process
    assert {"itl_vllm_median", "itl_guidellm_median"} <= set(_stats(df, "itl"))

    from effbench.dashboards.data import case_metrics

    wide = case_metrics(load_records(out.store.run_dir))
    row = wide[wide["technique"] == "effbench-serve-chunked"]
    assert len(row) == 1 and row[["ttft", "output_throughput"]].notna().all(axis=None)


def test_concurrency_limited_mode_keeps_at_most_n_in_flight(server, tmp_path):
    path = write_preset(
        tmp_path / "c.toml",
        server.url,
        requests=6,
        rate=float("inf"),
        output_tokens=8,
        max_concurrency=2,
    )
    out, df = _run(path, tmp_path / "results")
    assert out.failed == 0 and df["workload"].iloc[0].endswith("-c2")
    spans = [
        (t.arrival_s, t.emissions[-1][0])
        for t in load_timelines(out.store.run_dir / _stats(df)["timelines"])
    ]
    for start, _ in spans:  # at each send, how many requests were in flight (itself included)
        assert sum(1 for a, b in spans if a <= start < b) <= 2


def test_no_usage_needs_a_tokenizer_and_counts_with_it(tmp_path):
    with ThreadServer(fake_app(usage=False)) as fake:
        with pytest.raises(ConfigError) as e:
            _run(write_preset(tmp_path / "a.toml", fake.url), tmp_path / "r1")
        assert "streams no usage" in str(e.value) and "\n" not in str(e.value)
        out, df = _run(
            write_preset(tmp_path / "b.toml", fake.url, tokenizer="tiny"), tmp_path / "r2"
        )
    assert out.failed == 0 and _stats(df)["output_count"] == "tokenizer"
    assert _stats(df)["prompt_count"] == "local"


def test_invalid_sse_fails_that_request_and_the_run_goes_on(tmp_path):
    with ThreadServer(fake_app(bad_every=3)) as fake:
        out, df = _run(write_preset(tmp_path / "s.toml", fake.url, requests=6), tmp_path / "r")
    st = _stats(df)
    assert out.failed == 0 and st["failed_requests"] == 2
    assert (
        "not valid SSE" in st["first_error"]
        and "<html>upstream error</html>" in (st["first_error"])
    )
    timelines = load_timelines(out.store.run_dir / st["timelines"])
    assert sum(not t.finished for t in timelines) == 2


def test_a_refused_field_is_named_before_the_run(tmp_path):
    with ThreadServer(fake_app(refuse="ignore_eos")) as fake:
        with pytest.raises(ConfigError) as e:
            _run(write_preset(tmp_path / "f.toml", fake.url), tmp_path / "r1")
        assert "field 'ignore_eos'" in str(e.value) and "ignore_eos = false" in str(e.value)
        out, _ = _run(
            write_preset(tmp_path / "g.toml", fake.url, ignore_eos=False), tmp_path / "r2"
        )
    assert out.failed == 0


def test_cli_endpoint_flag_unreachable_is_one_line(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "effbench.suite.cli",
            "run",
            "smoke",
            "--level",
            "serving",
            "--endpoint",
            url,
            "--endpoint-name",
            "nobody",
            "--results",
            str(tmp_path),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "is unreachable" in line and url in line


def _transformers_serve() -> list[str] | None:
    """The ``transformers`` CLI when its ``serve`` command can run (``transformers[serving]``:
    FastAPI, uvicorn, openai, accelerate); None otherwise."""
    exe = shutil.which("transformers")
    try:
        from transformers.utils.import_utils import is_serve_available
    except ImportError:
        return None
    return [exe] if exe is not None and is_serve_available() else None


def test_transformers_serve_same_workload(tmp_path):
    """transformers' own server on the shipped checkpoint, with bounded continuous batching
    (its defaults size the cache from free RAM: ~10 GB)."""
    exe = _transformers_serve()
    if exe is None:
        pytest.skip("`transformers serve` is not installed (pip install 'transformers[serving]')")
    from effbench.suite.subprocs import ChildGuard

    port = free_port()
    cmd = [
        *exe,
        "serve",
        str(TINY),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--continuous-batching",
        "--cb-num-blocks",
        "64",
        "--cb-block-size",
        "32",
        "--cb-max-batch-tokens",
        "512",
    ]
    with ChildGuard(grace_s=5.0) as guard:
        proc = guard.popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            wait_ready(f"http://127.0.0.1:{port}/v1/models", 120, proc)
            path = write_preset(
                tmp_path / "t.toml",
                f"http://127.0.0.1:{port}/v1",
                endpoint_name="transformers-serve-cb",
                ignore_eos=False,
                endpoint_model=str(TINY),
                requests=6,
                rate=20.0,
                output_tokens=8,
            )
            refused = write_preset(
                tmp_path / "u.toml", f"http://127.0.0.1:{port}/v1", endpoint_model=str(TINY)
            )  # ignore_eos on: it says 422
            with pytest.raises(ConfigError, match="field 'ignore_eos'"):
                _run(refused, tmp_path / "r0")
            out, df = _run(path, tmp_path / "r")
        finally:
            guard.stop(proc)
    st = _stats(df)
    assert out.failed == 0 and st["failed_requests"] == 0 and st["output_count"] == "usage"
    assert st["chunk_split"] == {"one-per-text-chunk": 6}  # its closing chunk has no text
    assert set(df["technique"]) == {"transformers-serve-cb"}
