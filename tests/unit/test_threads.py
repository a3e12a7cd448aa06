"""The run's thread count: the auto rule, the order of sources, validation, where it is recorded.

The rule is a pure function of (usable cores, busy cores), tested on numbers; one test measures
this real machine with a real CPU-bound competitor (a subprocess started and killed here by its
pid). Runs use tests/data/mini.toml's cheapest cases.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from effbench.suite import cli, presets, runner
from effbench.suite.errors import ConfigError
from effbench.suite.threads import (
    OMP_ENV,
    THREADS_ENV,
    auto_threads,
    choose_threads,
    usable_cores,
)

MINI = Path(__file__).parents[1] / "data" / "mini.toml"


@pytest.fixture(autouse=True)
def _one_thread_after():
    """Leave torch as conftest set it (one thread) whatever a test's run chose."""
    yield
    torch.set_num_threads(1)


def _quiet() -> tuple[float, str]:
    return 0.0, "test"


@pytest.mark.parametrize(("usable", "busy", "want"), [
    (2, 0.0, 2), (2, 0.05, 2), (2, 0.25, 2), (2, 0.26, 1), (2, 1.0, 1), (2, 2.0, 1),
    (2, 5.0, 1), (1, 0.0, 1), (8, 1.0, 7), (8, 0.2, 8), (4, 0.74, 3), (16, 3.9, 12),
])
def test_auto_rule_counts_the_cores_others_leave_free(usable, busy, want):
    assert auto_threads(usable, busy) == want


def test_sources_in_order_flag_env_preset_omp_auto():
    env = {THREADS_ENV: "2", OMP_ENV: "1"}
    pick = {"usable": 4, "measure": lambda: (1.0, "test")}
    assert choose_threads(3, 1, env=env, **pick).source == "--threads"
    got = choose_threads(None, 1, env=env, **pick)
    assert (got.threads, got.source) == (2, THREADS_ENV)
    got = choose_threads(None, 1, env={OMP_ENV: "3"}, **pick)
    assert (got.threads, got.source) == (1, "[run] threads")
    got = choose_threads(None, "auto", env={OMP_ENV: "3"}, **pick)
    assert (got.threads, got.source) == (3, OMP_ENV)
    got = choose_threads(None, "auto", env={}, **pick)
    assert (got.threads, got.source, got.busy_cores) == (3, "auto", 1.0)
    assert "floor(4 - 1.00 + 0.25) -> 3" in got.rule
    # an explicit --threads auto overrides every source below it
    assert choose_threads("auto", 1, env=env, **pick).source == "auto"
    # no measurement possible: every usable core
    got = choose_threads(None, "auto", env={}, usable=4, measure=lambda: (None, ""))
    assert got.threads == 4 and "unknown" in got.rule
    # an ambient OMP_NUM_THREADS out of range (or OpenMP's list syntax) is not an error here
    assert choose_threads(None, "auto", env={OMP_ENV: "64"}, **pick).source == "auto"
    assert choose_threads(None, "auto", env={OMP_ENV: "4,2"}, **pick).source == "auto"


@pytest.mark.parametrize(("flag", "setting", "env", "where"), [
    (0, "auto", {}, "--threads"),
    (3, "auto", {}, "--threads"),
    (None, 5, {}, "[run] threads"),
    (None, "auto", {THREADS_ENV: "0"}, THREADS_ENV),
])
def test_out_of_range_counts_are_refused_with_the_valid_range(flag, setting, env, where):
    with pytest.raises(ConfigError) as e:
        choose_threads(flag, setting, env=env, usable=2, measure=_quiet)
    msg = str(e.value)
    assert msg.startswith(f"{where}: ") and "1..2" in msg and "\n" not in msg


def test_a_bad_environment_value_is_refused():
    with pytest.raises(ConfigError, match=f"{THREADS_ENV}: 'many' is neither"):
        choose_threads(None, "auto", env={THREADS_ENV: "many"}, usable=2, measure=_quiet)


@pytest.mark.parametrize("value", ["0", "-1", "true", '"four"', "1.5"])
def test_preset_threads_must_be_auto_or_a_count(value):
    text = f'[run]\nthreads = {value}\n[[bench]]\ntechnique = "dense"\n'
    with pytest.raises(ConfigError, match=r"p\.toml:2: 'threads' must be \"auto\""):
        presets.parse(text, "p.toml")


def test_preset_threads_default_is_auto():
    base = '[[bench]]\ntechnique = "dense"\n'
    assert presets.parse(base).run.threads == "auto"
    assert presets.parse("[run]\nthreads = 1\n" + base).run.threads == 1
    assert presets.parse('[run]\nthreads = "auto"\n' + base).run.threads == "auto"


@pytest.mark.parametrize("argv", [
    ["run", str(MINI), "--threads", "0"],
    ["run", str(MINI), "--threads", "999"],
    ["gate", "--baseline", "nothing", "--run", str(MINI), "--threads", "0"],
])
def test_cli_refuses_a_bad_count_in_one_line_before_anything_runs(argv, tmp_path, capsys):
    assert cli.main([*argv, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("effbench: error: --threads: threads = ")
    assert f"valid values are 1..{usable_cores()}" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_cli_flags_parse(capsys):
    ap = cli.build_parser()
    args = ap.parse_args(["run", "smoke", "--threads", "auto", "--retry-noisy", "2"])
    assert (args.threads, args.retry_noisy) == ("auto", 2)
    assert ap.parse_args(["run", "smoke"]).retry_noisy == 0
    for bad in (["--threads", "x"], ["--retry-noisy", "-1"]):
        with pytest.raises(SystemExit):
            ap.parse_args(["run", "smoke", *bad])
    assert ap.parse_args(["gate", "--run", "smoke", "--threads", "1"]).threads == 1


def _run(tmp_path, **kw):
    preset = presets.load(str(MINI))
    return runner.run(preset, results=str(tmp_path), techniques=["dense"], levels=["kernel"],
                      progress=False, log=lambda m: None, **kw)


def test_manifest_and_every_record_carry_the_threads(tmp_path):
    out = _run(tmp_path, threads=1)
    manifest = json.loads(out.store.manifest_path.read_text())
    assert manifest["threads"]["threads"] == 1 and manifest["threads"]["source"] == "--threads"
    assert manifest["threads"]["torch"]["intra_op"] == 1
    assert manifest["config"]["threads"] == manifest["threads"]
    recs = out.store.records()
    assert recs and all(r.stats["threads"] == 1 for r in recs)
    assert torch.get_num_threads() == 1


def test_auto_is_the_default_and_is_applied(tmp_path, monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.delenv(OMP_ENV, raising=False)
    out = _run(tmp_path)
    chosen = out.store.manifest()["threads"]
    assert chosen["source"] == "auto" and 1 <= chosen["threads"] <= usable_cores()
    assert chosen["busy_cores"] is not None and chosen["measured_by"].startswith("/proc/stat")
    assert {r.stats["threads"] for r in out.store.records()} == {chosen["threads"]}
    assert torch.get_num_threads() == chosen["threads"]


@pytest.mark.skipif(not Path("/proc/stat").exists(), reason="needs /proc/stat")
def test_one_competing_process_leaves_one_core_fewer():
    """On this machine: a CPU-bound neighbour takes a core, so auto leaves it out."""
    usable = usable_cores()
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # let it get scheduled
        got = choose_threads(None, "auto", env={})
    finally:
        hog.kill()
        hog.wait(timeout=10)
    assert got.source == "auto" and got.busy_cores >= 0.7, got
    assert got.threads <= max(1, usable - 1), got
    if usable == 2:
        assert got.threads == 1
