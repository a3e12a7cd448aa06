"""The effbench command line end to end, on the shipped tiny models (real runs, small)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from effbench.suite.cli import main
from effbench.suite.store import load_records

MINI = str(Path(__file__).parents[1] / "data" / "mini.toml")


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "effbench.suite.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def mini_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    out = _run("run", MINI, "--results", str(root), "--no-progress")
    assert out.returncode == 0, out.stderr
    run_dir = next((root / "runs").iterdir())
    return root, run_dir, out.stdout


def test_mini_run_covers_every_family_and_level(mini_run):
    root, run_dir, stdout = mini_run
    df = load_records(run_dir)
    assert set(df.family) == {"attention", "kvcache", "scheduling", "decoding"}
    assert set(df.level) == {"kernel", "engine", "serving"}
    assert (df.status == "ok").all(), df[df.status != "ok"][["case_id", "error"]]
    metrics = set(df.metric)
    for m in ["latency", "max_abs_error", "bytes_per_token", "compression_ratio", "perplexity",
              "top1_agreement", "ttft", "tpot", "itl", "goodput", "acceptance_rate",
              "exact_match", "speedup", "decode_tokens_per_s"]:
        assert m in metrics, m
    spec = df[(df.technique == "speculative") & (df.metric == "exact_match")]
    assert spec.value.iloc[0] == 1.0, "greedy speculative decoding must equal the baseline"
    dense_top1 = df[(df.technique == "dense") & (df.metric == "top1_agreement")]
    assert dense_top1.value.iloc[0] == 1.0
    assert (run_dir / "records.parquet").exists()
    assert "Results:" in stdout and str(run_dir) in stdout
    for fam in ("attention", "kvcache", "scheduling", "decoding"):
        assert fam in stdout


def test_samples_are_kept(mini_run):
    _, run_dir, _ = mini_run
    df = load_records(run_dir)
    lat = df[(df.metric == "latency")].iloc[0]
    samples = lat.samples if isinstance(lat.samples, list) else json.loads(lat.samples)
    assert len(samples) >= 2


def test_report_runs_and_query(mini_run):
    root, run_dir, _ = mini_run
    assert main(["report", "--results", str(root)]) == 0
    assert main(["runs", "--results", str(root)]) == 0
    out = _run("query", "SELECT count(DISTINCT technique) AS n FROM records", "--results",
               str(root))
    assert out.returncode == 0 and " 8" in out.stdout, out.stdout + out.stderr


def test_kill_and_resume_loses_nothing(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "effbench.suite.cli", "run", MINI, "--results",
                             str(tmp_path), "--no-progress"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal = None
    deadline = time.time() + 300
    while time.time() < deadline:
        runs = list((tmp_path / "runs").glob("*/journal.jsonl"))
        if runs and len({json.loads(x)["case_id"] for x in runs[0].read_text().splitlines()
                         if x.strip()}) >= 3:
            journal = runs[0]
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert journal is not None, "the run journaled no case in time"
    done_before = {json.loads(x)["case_id"] for x in journal.read_text().splitlines() if x}
    out = _run("run", MINI, "--results", str(tmp_path), "--resume", "latest", "--no-progress")
    assert out.returncode == 0, out.stderr
    assert f"{len(done_before)} case(s) already done" in out.stdout
    df = load_records(journal.parent)
    assert done_before <= set(df.case_id)
    assert df.groupby("case_id").metric.apply(lambda s: s.duplicated().sum()).sum() == 0


@pytest.mark.parametrize(
    "args, words",
    [
        (["run", "nosuch"], ["no preset 'nosuch'", "smoke"]),
        (["run", MINI, "--device", "cuda"], ["no CUDA GPU"]),
        (["run", MINI, "--model", "/nonexistent/ckpt"], ["not a checkpoint"]),
        (["run", MINI, "--technique", "flashh"], ["unknown technique", "valid techniques"]),
    ],
)
def test_bad_input_is_one_clear_line(args, words, tmp_path):
    out = _run(*args, "--results", str(tmp_path))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    for w in words:
        assert w in lines[0]


def test_unwritable_results_folder(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    out = _run("run", MINI, "--results", str(blocker / "results"), "--level", "kernel")
    assert out.returncode == 2
    assert "not writable" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_failing_case_is_recorded_and_sweep_goes_on(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(Path(MINI).read_text().replace(
        'shapes = [{ name = "p32"', 'shapes = [{ name = "huge", batch = 1, q_len = 1, '
        'kv_len = 10, kv_heads = 3 }, { name = "p32"'))
    out = _run("run", str(bad), "--results", str(tmp_path / "r"), "--level", "kernel",
               "--no-progress")
    assert out.returncode == 0, out.stderr
    df = load_records(next((tmp_path / "r" / "runs").iterdir()))
    failed = df[df.status == "failed"]
    assert len(failed) >= 1 and failed.error.str.len().min() > 0
    assert (df.status == "ok").any()
    assert isinstance(df, pd.DataFrame)
