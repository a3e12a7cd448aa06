"""False alarms of ``effbench gate`` on identical code under a competing process: today vs canary.

Run as ``python tests/benchmarks/bench_noise.py [--trials 20] [--ab-trials 20] [--rounds 2]
[--level kernel|all] [--quick] [--json out.json]`` from the repository root. Not a pytest test
(the name does not match ``test_*``; all work is under ``__main__``). Everything goes through
the command line, ``python3 -m effbench.suite.cli ...``, as a user would, with bounded timeouts.

The competing process is ``python3 -c "while True: pass"`` (one CPU-bound process, the issue's
setting), started by this script with ``subprocess.Popen`` and ended by its own pid
(``Popen.kill``), never by name.

(a) **Sequential A/A pairs.** Per trial, the smoke preset runs twice, one run after the other,
    into a fresh temporary results folder; the competing process runs during one of the two
    runs (the first on even trials, the second on odd ones). The pair is gated twice, same runs:
    ``gate --baseline RUN1 --candidate RUN2 --ignore-canary`` (today's gate) and without the
    flag (with the canary). Identical code, so every timing ``regressed`` verdict is a false
    alarm. Counted per trial: any timing regressed today; any with the canary; whether the
    canary said the machine changed (``changed``/``unstable``), and how many of today's false
    alarms it flagged. Goal: no timing ``regressed`` without the canary saying the machine
    changed, and <= 5 % false alarms with the canary.
(b) **A/B on one machine.** Per trial ``gate --ab HEAD --run smoke --level kernel --rounds R``
    (same code both sides when the working tree is committed; the A/B runner's stand-in
    canaries are used when HEAD predates the canary), with the competing process started
    half-way through (half of the previous trial's duration; the first trial estimates it from
    a quiet kernel-level run) and killed when the gate ends. A trial with any timing
    ``regressed`` verdict is a false alarm. Goal: <= 5 %. ``--ab-today`` also runs each trial
    with ``--ignore-canary`` (doubles the time).

Threads: every run uses ``--threads`` (default: one per usable core, torch's own default and
what every run used before ``auto``), passed as ``EFFBENCH_THREADS``, so both runs of a pair
measure the same configuration and the two gates differ only by the canary; ``--threads auto``
lets effbench choose per run (a run beside the competing process may then use fewer threads,
which the canary reports as different thread counts).

Durations on the 2-core development machine: a kernel-level smoke run takes ~11 s quiet and
~22 s beside the competing process, a full smoke run ~40 s quiet. Defaults (20 sequential
kernel-level pairs, about 15 minutes; 20 A/B trials of 2 rounds, about 25 minutes) take about
40 minutes; ``--level all`` makes part (a) the whole preset (about 45 minutes on its own: run
it with ``--ab-trials 0``, and part (b) alone with ``--trials 0``). ``--quick`` (2 pairs, 1
A/B trial of 2 rounds) takes about 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from effbench.suite.stats import wilson_interval

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "effbench.suite.cli"]
RUN_TIMEOUT_S = 900
GATE_TIMEOUT_S = 300
AB_TIMEOUT_S = 2400
WITHHOLDING = ("changed", "unstable")


class Hog:
    """One CPU-bound competing process, started and ended by its own pid (a context manager)."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if self.proc is None:
            self.proc = subprocess.Popen([sys.executable, "-c", "while True: pass"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()  # this pid only
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None

    def __enter__(self) -> Hog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


ENV = dict(os.environ)
"""The environment of every effbench subprocess (``main`` sets ``EFFBENCH_THREADS`` in it)."""


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def cli(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    """``python3 -m effbench.suite.cli ARGS`` in the repository root, output captured."""
    return subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, check=False, env=ENV)


def level_args(level: str) -> list[str]:
    return [] if level == "all" else ["--level", level]


PRESET = "smoke"
"""The preset every run uses (``--preset``; smoke, as in the issue)."""


def smoke_run(results: Path, level: str) -> tuple[str, float]:
    """Run the preset (smoke) into ``results``; (run id, seconds)."""
    before = set(os.listdir(results / "runs")) if (results / "runs").is_dir() else set()
    t0 = time.perf_counter()
    done = cli(["run", PRESET, "--results", str(results), "--no-progress",
                *level_args(level)], RUN_TIMEOUT_S)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"effbench run {PRESET} failed ({done.returncode}): {tail}")
    new = sorted(set(os.listdir(results / "runs")) - before)
    if len(new) != 1:
        raise RuntimeError(f"expected one new run under {results}, found {new}")
    return new[0], took


def gate_json(args: list[str], timeout: float = GATE_TIMEOUT_S) -> dict[str, Any]:
    """A gate command with ``--format json``: its JSON, exit code and wall time."""
    t0 = time.perf_counter()
    done = cli([*args, "--format", "json"], timeout)
    took = time.perf_counter() - t0
    if done.returncode not in (0, 1):
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"exit {done.returncode}: {tail}", "seconds": took}
    data = json.loads(done.stdout)
    data["exit"], data["seconds"] = done.returncode, took
    return data


def summarize_gate(data: dict[str, Any]) -> dict[str, Any]:
    """What a trial keeps of a gate's JSON."""
    if "error" in data:
        return {"error": data["error"]}
    rows = data.get("rows") or []
    timing = [f"{r['case_id']} {r['metric']} ({r['reason']})" for r in rows
              if r.get("class") == "timing" and r.get("verdict") == "regressed"]
    other = [f"{r['case_id']} {r['metric']}" for r in rows
             if r.get("class") != "timing" and r.get("verdict") in ("regressed", "failed")]
    canary = data.get("canary") or {}
    return {"exit": data.get("exit"), "timing_regressed": timing, "other_regressed": other,
            "withheld": int((data.get("counts") or {}).get("withheld", 0)),
            "canary_status": canary.get("status"), "canary_ratio": canary.get("ratio"),
            "canary_message": canary.get("message"), "notes": data.get("notes") or [],
            "seconds": round(float(data.get("seconds", math.nan)), 1)}


def sequential_trial(i: int, level: str, root: Path) -> dict[str, Any]:
    """One A/A pair: two smoke runs, the competing process during one of them; gated twice."""
    results = root / f"seq-{i:03d}"
    loaded = i % 2  # which run of the pair shares the machine with the competing process
    runs, secs = [], []
    for k in (0, 1):
        with Hog() as hog:
            if k == loaded:
                hog.start()
            run_id, took = smoke_run(results, level)
        runs.append(run_id)
        secs.append(round(took, 1))
    common = ["gate", "--baseline", runs[0], "--candidate", runs[1], "--results", str(results)]
    today = summarize_gate(gate_json([*common, "--ignore-canary"]))
    canary = summarize_gate(gate_json(common))
    return {"trial": i, "loaded_run": "baseline" if loaded == 0 else "candidate",
            "runs": runs, "run_seconds": secs, "today": today, "canary": canary}


def ab_trial(i: int, level: str, rounds: int, start_after_s: float,
             ignore_canary: bool) -> dict[str, Any]:
    """One ``gate --ab HEAD`` with the competing process started ``start_after_s`` in."""
    args = [*CLI, "gate", "--ab", "HEAD", "--run", PRESET, *level_args(level), "--rounds",
            str(rounds), "--format", "json", *(["--ignore-canary"] if ignore_canary else [])]
    t0 = time.perf_counter()
    with Hog() as hog, tempfile.TemporaryFile("w+") as out, \
            tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, cwd=REPO, stdout=out, stderr=err, text=True, env=ENV)
        started_at = None
        try:
            while proc.poll() is None:
                if time.perf_counter() - t0 > AB_TIMEOUT_S:
                    raise subprocess.TimeoutExpired(args, AB_TIMEOUT_S)
                if started_at is None and time.perf_counter() - t0 >= start_after_s:
                    hog.start()
                    started_at = time.perf_counter() - t0
                time.sleep(0.2)
        finally:
            if proc.poll() is None:  # this gate process only: SIGTERM, then SIGKILL
                proc.terminate()
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        took = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode not in (0, 1):
        tail = (stderr.strip().splitlines() or ["no output"])[-1]
        got = {"error": f"exit {proc.returncode}: {tail}"}
    else:
        data = json.loads(stdout)
        data["exit"], data["seconds"] = proc.returncode, took
        got = summarize_gate(data)
    return {"trial": i, "mode": "ignore-canary" if ignore_canary else "canary",
            "hog_started_s": None if started_at is None else round(started_at, 1),
            "seconds": round(took, 1), **got}


def rate(k: int, n: int) -> str:
    if n == 0:
        return "-"
    lo, hi = wilson_interval(k, n)
    return f"{k}/{n} = {k / n:.0%} [{lo:.0%}, {hi:.0%}]"


def table(seq: list[dict[str, Any]], ab: list[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    """The summary table (text) and its figures (JSON)."""
    figures: dict[str, Any] = {}
    lines = [f"{'condition':<47} {'timing false alarms':<24} canary"]
    ok = [t for t in seq if "error" not in t["today"] and "error" not in t["canary"]]
    if seq:
        n = len(ok)
        today = [t for t in ok if t["today"]["timing_regressed"]]
        with_c = [t for t in ok if t["canary"]["timing_regressed"]]
        flagged = [t for t in ok if t["canary"]["canary_status"] in WITHHOLDING]
        today_flagged = [t for t in today if t["canary"]["canary_status"] in WITHHOLDING]
        unflagged = [t for t in with_c if t["canary"]["canary_status"] not in WITHHOLDING]
        figures["sequential"] = {
            "trials": n, "errors": len(seq) - n, "false_alarms_today": len(today),
            "false_alarms_canary": len(with_c), "canary_flagged": len(flagged),
            "today_alarms_flagged_by_canary": len(today_flagged),
            "canary_regressed_without_flag": len(unflagged),
            "deterministic_regressions": sum(bool(t["canary"]["other_regressed"]) for t in ok)}
        lines.append(f"{'(a) sequential pairs, today (--ignore-canary)':<47} "
                     f"{rate(len(today), n):<24} -")
        lines.append(f"{'(a) sequential pairs, with the canary':<47} "
                     f"{rate(len(with_c), n):<24} flagged the machine in {len(flagged)}/{n} "
                     f"trials; {len(today_flagged)}/{len(today)} of today's alarms; "
                     f"{len(unflagged)} regressed unflagged")
    for mode in ("ignore-canary", "canary"):
        trials = [t for t in ab if t["mode"] == mode]
        if not trials:
            continue
        good = [t for t in trials if "error" not in t]
        alarms = [t for t in good if t["timing_regressed"]]
        withheld = [t for t in good if t["canary_status"] in WITHHOLDING]
        dropped = sum(sum("dropped" in n for n in t["notes"]) for t in good)
        figures[f"ab_{mode}"] = {"trials": len(good), "errors": len(trials) - len(good),
                                 "false_alarms": len(alarms), "withheld_trials": len(withheld),
                                 "rounds_dropped": dropped}
        name = "(b) --ab HEAD, today (--ignore-canary)" if mode == "ignore-canary" else \
            "(b) --ab HEAD, with the canary"
        extra = "-" if mode == "ignore-canary" else (
            f"{dropped} round(s) dropped; timings withheld in {len(withheld)} trial(s)")
        lines.append(f"{name:<47} {rate(len(alarms), len(good)):<24} {extra}")
    return "\n".join(lines), figures


def main(argv: list[str] | None = None) -> int:
    global PRESET
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=20, help="sequential A/A pairs (default 20)")
    ap.add_argument("--ab-trials", type=int, default=20, help="A/B trials (default 20)")
    ap.add_argument("--rounds", type=int, default=2, help="A/B rounds per trial (default 2)")
    ap.add_argument("--level", default="kernel", choices=("kernel", "engine", "serving", "all"),
                    help="smoke levels of the sequential pairs (default kernel; 'all' is the "
                         "whole preset, about twice as long); A/B always runs kernel")
    ap.add_argument("--ab-today", action="store_true",
                    help="also run each A/B trial with --ignore-canary (doubles part b)")
    ap.add_argument("--threads", default=str(usable_cores()),
                    help="torch threads of every run, or 'auto' (default: one per usable core)")
    ap.add_argument("--quick", action="store_true",
                    help="2 pairs and 1 A/B trial of 2 rounds: checks the script works")
    ap.add_argument("--json", metavar="PATH", help="write every trial and the figures here")
    ap.add_argument("--preset", default=PRESET,
                    help="preset name or TOML path (default smoke; a tiny one checks the script)")
    args = ap.parse_args(argv)
    PRESET = str(Path(args.preset).resolve()) if Path(args.preset).exists() else args.preset
    if args.quick:
        args.trials, args.ab_trials, args.rounds = min(args.trials, 2), min(args.ab_trials, 1), 2
    if args.threads != "auto":
        ENV["EFFBENCH_THREADS"] = ENV["OMP_NUM_THREADS"] = str(int(args.threads))
    t_start = time.perf_counter()
    seq: list[dict[str, Any]] = []
    ab: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="effbench-noise-") as tmp:
        root = Path(tmp)
        for i in range(args.trials):
            try:
                t = sequential_trial(i, args.level, root)
            except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
                t = {"trial": i, "today": {"error": str(e)}, "canary": {"error": str(e)}}
            seq.append(t)
            today, can = t["today"], t["canary"]
            print(f"(a) {i + 1}/{args.trials}: competing process during the "
                  f"{t.get('loaded_run', '?')}; today {len(today.get('timing_regressed', []))} "
                  f"timing regressed; canary {can.get('canary_status')} "
                  f"(ratio {can.get('canary_ratio')}), "
                  f"{len(can.get('timing_regressed', []))} regressed, "
                  f"{can.get('withheld', 0)} withheld {can.get('error', '')}", flush=True)
        estimate = None
        if args.ab_trials:
            _, quiet_s = smoke_run(root / "calibration", "kernel")
            estimate = 2 * args.rounds * quiet_s + 10
        for i in range(args.ab_trials):
            for ignore in ((True, False) if args.ab_today else (False,)):
                try:
                    t = ab_trial(i, "kernel", args.rounds, estimate / 2, ignore)
                except (subprocess.TimeoutExpired, ValueError) as e:
                    t = {"trial": i, "mode": "ignore-canary" if ignore else "canary",
                         "error": str(e)}
                ab.append(t)
                if "error" not in t:
                    estimate = t["seconds"]
                print(f"(b) {i + 1}/{args.ab_trials} {t['mode']}: competing process from "
                      f"{t.get('hog_started_s')} s of {t.get('seconds')} s; "
                      f"{len(t.get('timing_regressed', []))} timing regressed; canary "
                      f"{t.get('canary_status')}; {t.get('error', '')}", flush=True)
    text, figures = table(seq, ab)
    wall = time.perf_counter() - t_start
    load = os.getloadavg()[1] if hasattr(os, "getloadavg") else math.nan
    print(f"\n{len(seq)} sequential pairs ({args.level}), {len(ab)} A/B gates "
          f"({args.rounds} rounds) in {wall / 60:.1f} min; 5-min load average at the end "
          f"{load:.1f} on {os.cpu_count()} cores\n")
    print(text)
    print("\nGoals: no timing 'regressed' verdict without the canary saying the machine changed; "
          "<= 5 % false alarms with the canary, sequential and A/B.")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "wall_s": wall, "figures": figures, "sequential": seq,
             "ab": ab}, indent=2, default=str) + "\n")
        print(f"trials and figures: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
