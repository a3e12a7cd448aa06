"""The Ray executor end to end on a real Ray cluster on this machine (issue 15).

The module's cluster is started in this process (``ray.init(num_cpus=2)`` through
``ray_cluster.start_local``, what ``--executor ray`` starts without an address) bound to
loopback (Ray otherwise binds the first non-loopback interface), with the dashboard, usage
stats and token authentication off. The driver-kill test's driver is a subprocess that joins it
with ``--address``, so killing the driver cannot take the cluster down. Every process a test
kills is one it started (a worker of this cluster, found among this process's descendants by
its title; the driver subprocess), killed by pid: never ``ray stop``, which stops every Ray
process on the machine. Without Ray the tests that need it skip with the reason; the message
for a missing Ray is tested without it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from effbench.suite import metrics, presets, ray_cluster, ray_executor, ray_task, runner
from effbench.suite.cli import main
from effbench.suite.errors import ConfigError
from effbench.suite.store import load_records

RAY8 = str(Path(__file__).parents[1] / "data" / "ray8.toml")
HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(not HAVE_RAY, reason="ray not installed: pip install effbench[ray]")
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
TASK_TITLE = "ray::effbench "  # a Ray worker's process title while it runs one of our tasks


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return {**env, **RAY_ENV, "PYTHONUNBUFFERED": "1"}


# -- /proc helpers: processes this test started (descendants of a pid) ---------------------
def _stat(pid: int) -> tuple[str, int] | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            st = _stat(int(entry.name))
            if st is not None:
                parents[int(entry.name)] = st[1]
    out, frontier = [], {root}
    while frontier:
        kids = {p for p, pp in parents.items() if pp in frontier and p not in out}
        out += sorted(kids)
        frontier = kids
    return out


def _until(cond, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return bool(cond())


# -- the cluster -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster():
    if not HAVE_RAY:
        pytest.skip("ray not installed: pip install effbench[ray]")
    import ray

    saved = {k: os.environ.get(k) for k in [*RAY_ENV, "RAY_ADDRESS"]}
    os.environ.update(RAY_ENV)
    os.environ.pop("RAY_ADDRESS", None)
    # ray.init(num_cpus=2) on loopback, no dashboard, usage stats off: what the executor
    # starts when given no address
    bound = ray_cluster.start_local(2)
    try:
        yield {"bound": bound, "gcs": ray.get_runtime_context().gcs_address}
    finally:
        ray.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(results: Path, **kw):
    return runner.run(
        presets.load(RAY8),
        results=str(results),
        progress=False,
        log=lambda _m: None,
        threads=1,
        **kw,
    )


def _deterministic(df) -> dict[tuple[str, str], float]:
    ok = df[df.status == "ok"]
    out = {}
    for row in ok.itertuples():
        spec = metrics.spec(row.metric)
        if spec is not None and spec.deterministic:
            out[(row.case_id, row.metric)] = row.value
    return out


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


# -- bad input, no cluster needed ------------------------------------------------------------
def test_missing_ray_is_one_line_naming_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    with pytest.raises(ConfigError) as err:
        ray_cluster.require_ray()
    text = str(err.value)
    assert "\n" not in text and "pip install 'effbench[ray]'" in text
    with pytest.raises(ConfigError, match=r"effbench\[ray\]"):
        _run(tmp_path / "r", executor="ray")
    assert not (tmp_path / "r").exists(), "nothing may run before the check"


def test_address_without_the_ray_executor_is_refused(tmp_path, capsys):
    assert main(["run", RAY8, "--address", "127.0.0.1:1", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--executor ray" in err[0]


@pytest.mark.parametrize("text", ["nohost", "host:notaport", "host:0", ":6379"])
def test_a_malformed_address_is_refused(text):
    with pytest.raises(ConfigError, match="not host:port"):
        ray_cluster.split_address(text)
    assert ray_cluster.split_address("ray://head:10001") == ("head", 10001)
    assert ray_cluster.split_address("auto") is None


def test_shipped_artifacts_stay_inside_the_run_folder(tmp_path):
    ray_executor.write_artifacts(tmp_path, {"artifacts/0001/t.parquet": b"x"})
    assert (tmp_path / "artifacts/0001/t.parquet").read_bytes() == b"x"
    with pytest.raises(ValueError, match="outside"):
        ray_executor.write_artifacts(tmp_path, {"artifacts/../../evil": b"x"})


def test_artifacts_over_the_limit_stay_on_the_worker(tmp_path):
    folder = tmp_path / "artifacts" / "0003"
    folder.mkdir(parents=True)
    (folder / "small.bin").write_bytes(b"a" * 10)
    (folder / "big.bin").write_bytes(b"b" * 100)
    shipped, left = ray_task.collect_artifacts(tmp_path, limit=50)
    assert shipped == {"artifacts/0003/small.bin": b"a" * 10}
    assert left == ["artifacts/0003/big.bin"]


@needs_ray
def test_resources_per_case(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ex = ray_executor.RayExecutor(None, 2)
    assert ex.resources(3) == {"num_gpus": 0, "num_cpus": 3}
    ex.device = "cuda"
    assert ex.resources(3) == {"num_gpus": 1, "num_cpus": 1, "max_calls": 1}
    with pytest.raises(ConfigError, match="ray-retries"):
        ray_executor.RayExecutor(None, -1)


@needs_ray
def test_an_address_that_does_not_answer_is_one_line(tmp_path, capsys):
    t0 = time.monotonic()
    code = main(
        ["run", RAY8, "--executor", "ray", "--address", "127.0.0.1:1", "--results", str(tmp_path)]
    )
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert "127.0.0.1:1" in lines[0] and "does not answer" in lines[0]
    assert time.monotonic() - t0 < 10
    assert not (tmp_path / "runs").exists()


# -- on the cluster --------------------------------------------------------------------------
@pytest.mark.slow
def test_the_local_cluster_listens_on_loopback_only(cluster):
    import ray

    assert cluster["bound"] == "127.0.0.1"
    assert cluster["gcs"].startswith("127.0.0.1:")
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}


@pytest.mark.slow
def test_eight_cases_match_the_local_executor(cluster, tmp_path):
    local = _run(tmp_path / "local")
    remote = _run(tmp_path / "ray", executor="ray")
    assert (local.cases, local.failed, remote.cases, remote.failed) == (8, 0, 8, 0)
    a, b = load_records(local.store.run_dir), load_records(remote.store.run_dir)
    assert set(a.case_id) == set(b.case_id) and b.case_id.nunique() == 8
    da, db = _deterministic(a), _deterministic(b)
    assert da and set(da) == set(db)
    assert {m for _, m in da} >= {"max_abs_error", "exact_match", "acceptance_rate"}
    differ = {k: (da[k], db[k]) for k in da if not _same(da[k], db[k])}
    assert not differ, differ
    # every Ray record says where it ran; one store and one manifest for the run
    stats = [s if isinstance(s, dict) else json.loads(s) for s in b.stats]
    assert {s["host"] for s in stats} == {socket.gethostname()}
    assert all(s["ray_node_id"] and s["worker_pid"] != os.getpid() for s in stats)
    manifest = remote.store.manifest()
    assert manifest["config"]["executor"]["kind"] == "ray"
    assert manifest["counts"]["cases"] == 8
    # the serving case's timelines came back from the worker into the run folder
    serving = [s for s, lv in zip(stats, b.level) if lv == "serving" and "timelines" in s]
    assert serving and (remote.store.run_dir / serving[0]["timelines"]).is_file()


@pytest.mark.slow
@pytest.mark.parametrize("retries", [2, 0])
def test_a_worker_killed_mid_case_is_retried(cluster, tmp_path, retries):
    """With retries the killed case is run again and the run completes with every case ok;
    without, the case is recorded as failed with Ray's error and the other case still runs."""
    box: dict = {}

    def drive() -> None:
        try:
            box["out"] = _run(
                tmp_path, executor="ray", levels=["engine", "serving"], ray_retries=retries
            )
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            box["error"] = e

    thread = threading.Thread(target=drive)
    thread.start()
    victim: dict = {}

    def running_a_case() -> bool:  # the same worker on the same case for 0.2 s: mid-case
        seen = [(p, _cmdline(p)) for p in _descendants(os.getpid())]
        seen = [(p, c) for p, c in seen if c.startswith(TASK_TITLE + "engine:")]
        if not seen:
            return False
        pid, title = seen[0]
        if victim.get("pid") != pid:
            victim.update(pid=pid, title=title, since=time.monotonic())
            return False
        return time.monotonic() - victim["since"] >= 0.2 and _cmdline(pid) == title

    try:
        assert _until(running_a_case, 60), "no worker ran the engine case"
        os.kill(victim["pid"], signal.SIGKILL)
    finally:
        thread.join(120)
    assert not thread.is_alive() and "error" not in box, box.get("error")
    out = box["out"]
    df = load_records(out.store.run_dir)
    assert df.case_id.nunique() == 2
    assert not df.groupby(["case_id", "metric"]).size().gt(1).any(), "a case journaled twice"
    if retries:
        assert out.failed == 0 and (df.status == "ok").all()
        pids = {(s if isinstance(s, dict) else json.loads(s))["worker_pid"] for s in df.stats}
        assert victim["pid"] not in pids, "the killed worker's case must come from its retry"
    else:
        failed = df[df.status == "failed"]
        assert out.failed == 1 and list(failed.metric) == ["error"]
        assert failed.case_id.iloc[0].startswith("engine:")
        assert "Ray task" in failed.error.iloc[0] and "Error" in failed.error.iloc[0]
        assert (df[df.level == "serving"].status == "ok").all()


@pytest.mark.slow
def test_driver_killed_loses_no_finished_case_and_resume_completes(cluster, tmp_path):
    """The driver is ``effbench run`` in a subprocess joining the module's cluster by
    ``--address``, so SIGKILL to it cannot take the cluster down (Ray ends a dead driver's
    tasks itself); the resume runs in this process on the same cluster."""
    args = [
        "run",
        RAY8,
        "--executor",
        "ray",
        "--address",
        cluster["gcs"],
        "--results",
        str(tmp_path),
        "--no-progress",
        "--threads",
        "1",
        "--level",
        "kernel",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "effbench.suite.cli", *args],
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def journaled() -> set[str]:
        journals = list((tmp_path / "runs").glob("*/journal.jsonl"))
        if not journals:
            return set()
        out = set()
        for line in journals[0].read_text().splitlines():
            try:
                out.add(json.loads(line)["case_id"])
            except ValueError:
                pass  # a line being written as we read
        return out

    try:
        assert _until(lambda: journaled() or proc.poll() is not None, 90, 0.02)
        assert proc.poll() is None, proc.stderr.read().decode()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    done_before = journaled()
    assert 1 <= len(done_before) < 6
    lines: list[str] = []
    out = runner.run(
        presets.load(RAY8),
        results=str(tmp_path),
        progress=False,
        log=lines.append,
        threads=1,
        levels=["kernel"],
        executor="ray",
        resume="latest",
    )
    assert out.skipped == len(done_before) and out.failed == 0
    assert any(f"{len(done_before)} case(s) already done" in line for line in lines)
    df = load_records(out.store.run_dir)
    assert df.case_id.nunique() == 6 and done_before <= set(df.case_id)
    assert not df.groupby(["case_id", "metric"]).size().gt(1).any()
    assert (df.status == "ok").all()
