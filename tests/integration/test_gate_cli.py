"""The gate end to end on a real (kernel-level) mini run: baseline, gate, export, import."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from effbench.suite.cli import main as cli_main
from effbench.suite.cli import main as effbench
from effbench.suite.store import list_runs, load_records

MINI = str(Path(__file__).parents[1] / "data" / "mini.toml")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate") / "results"
    code = effbench(["run", MINI, "--level", "kernel", "--results", str(root), "--no-progress"])
    assert code == 0
    return root


def run_cli(capsys, *argv):
    code = cli_main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_baseline_then_gate_against_itself(results, capsys):
    r = str(results)
    code, out, _ = run_cli(capsys, "baseline", "save", "cpu-mini", "latest", "--results", r)
    assert code == 0 and (results / "baselines" / "cpu-mini" / "records.parquet").exists()
    code, out, err = run_cli(capsys, "gate", "--baseline", "cpu-mini", "--candidate", "latest",
                             "--deterministic-only", "--results", r, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    verdicts = {row["verdict"] for row in data["rows"]}
    assert data["passed"] and verdicts == {"unchanged"}
    assert {row["class"] for row in data["rows"]} == {"count", "numeric"}
    assert any(row["metric"] == "bytes_per_token" for row in data["rows"])


def test_export_is_read_by_pytest_benchmark_and_imports_back(results, capsys, tmp_path):
    r = str(results)
    out_file = tmp_path / "mini.json"
    code, _, err = run_cli(capsys, "export", "latest", "--format", "pytest-benchmark", "-o",
                           str(out_file), "--results", r)
    assert code == 0, err
    data = json.loads(out_file.read_text())
    assert data["benchmarks"] and all("data" in b["stats"] for b in data["benchmarks"])
    cli = Path(sys.executable).with_name("pytest-benchmark")
    cmd = [str(cli)] if cli.exists() else [sys.executable, "-m", "pytest_benchmark.cli"]
    shown = subprocess.run([*cmd, "compare", str(out_file)], capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "latency[kernel:dense[]@p32/cpu]" in shown.stdout

    original = load_records(list_runs(r)["path"].iloc[0])
    code, out, err = run_cli(capsys, "import", str(out_file), "--results", r)
    assert code == 0, err
    imported = load_records(list_runs(r)["path"].iloc[0])
    assert set(imported["case_id"]) == set(original["case_id"])
    ok = original[original["status"] == "ok"]
    assert set(zip(imported["case_id"], imported["metric"])) == set(zip(ok["case_id"],
                                                                        ok["metric"]))
    code, out, err = run_cli(capsys, "compare", "cpu-mini", "latest", "--results", r,
                             "--format", "json")
    rows = json.loads(out)["rows"]
    assert code == 0, err
    det = [row for row in rows if row["class"] != "timing"]
    assert det and all(row["verdict"] == "unchanged" for row in det)
    lat = next(row for row in rows if row["metric"] == "latency")
    assert lat["n_cand"] == lat["n_base"] > 0  # samples survived the round trip


def _git(repo, *args):
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t",
                    *args], check=True, capture_output=True)


def test_ab_runs_each_side_with_its_own_code(tmp_path, monkeypatch, capsys):
    """A throwaway repo whose working tree doubles dense attention's bytes: only that regresses."""
    import shutil

    src = Path(__file__).resolve().parents[2]
    repo = tmp_path / "repo"
    for part in ("suite", "kernels_ref", "adapters"):
        shutil.copytree(src / part, repo / part, ignore=shutil.ignore_patterns("__pycache__"))
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "base")
    attention = repo / "kernels_ref" / "attention" / "dense.py"
    text = attention.read_text()
    old = "return attention_bytes(shape, shape.kv_len)"
    assert text.count(old) == 1
    attention.write_text(text.replace(old, "return 2 * attention_bytes(shape, shape.kv_len)"))
    monkeypatch.chdir(repo)
    code, out, err = run_cli(capsys, "gate", "--ab", "HEAD", "--run", MINI, "--level", "kernel",
                             "--technique", "dense", "--rounds", "1", "--deterministic-only",
                             "--format", "json")
    assert code == 1, err
    rows = json.loads(out)["rows"]
    regressed = {(r["case_id"], r["metric"]) for r in rows if r["verdict"] == "regressed"}
    # doubling the bytes halves the arithmetic intensity derived from them: both regress
    changed = {"bytes_moved", "arithmetic_intensity"}
    assert regressed and {m for _, m in regressed} == changed
    assert all(r["verdict"] == "unchanged" for r in rows if r["metric"] not in changed)
    worktrees = subprocess.run(["git", "-C", str(repo), "worktree", "list"],
                               capture_output=True, text=True).stdout
    assert len(worktrees.strip().splitlines()) == 1  # the temporary worktree is gone
