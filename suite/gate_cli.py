"""CLI of the regression gate: ``compare``, ``gate``, ``baseline``, ``export`` and ``import``.

``add_parsers(subparsers)`` registers the subcommands on the ``effbench`` parser; each handler
returns the process exit code: 0 nothing regressed, 1 a regression (0 with ``--report-only``),
2 bad usage or input (an ``EffbenchError``, printed as one line by ``effbench.suite.cli.main``).

Also here, as pure functions, the conversion between effbench records and pytest-benchmark's
saved-run JSON (``to_pytest_benchmark`` / ``from_pytest_benchmark``), so a run can be read by
``pytest-benchmark compare`` and a pytest-benchmark run can be gated like any other.

``gate --ab BASE_REF --run PRESET`` measures both sides on this machine now: it checks out
BASE_REF in a temporary git worktree and runs ``python -m effbench.suite.cli run`` for base and head
alternately (A B A B ...), each side importing its own code, then gates the pooled samples.
Interleaving spreads slow machine drift (thermals, neighbours) over both sides alike.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from effbench.suite import baselines
from effbench.suite import gate as gate_mod
from effbench.suite.errors import ConfigError, StoreError
from effbench.suite.records import SCHEMA_VERSION, Record
from effbench.suite.store import RunStore, load_records, read_manifest, resolve_run

FORMATS = ("table", "markdown", "json")
_SYMBOL = {"regressed": "!!", "failed": "XX", "missing": "??", "improved": "++", "new": "+",
           "skipped": "--", "unchanged": ""}


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a label for reports, its records and its manifest."""

    label: str
    records: pd.DataFrame
    manifest: dict[str, Any]


def resolve_side(ref: str, root: Path | str) -> Side:
    """A baseline name, or a run id / prefix / ``latest`` / run folder, as a ``Side``."""
    if _safe_name(ref) and baselines.exists(ref, root):
        b = baselines.load(ref, root)
        return Side(f"baseline {ref}", b.records, b.manifest)
    try:
        run_dir = resolve_run(root, ref)
    except StoreError as e:
        raise StoreError(f"'{ref}' is neither a baseline under {root}/baselines nor a run: "
                         f"{e}") from None
    return Side(f"run {run_dir.name}", load_records(run_dir), read_manifest(run_dir))


def _safe_name(ref: str) -> bool:
    try:
        baselines.baseline_dir(ref)
    except ConfigError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Rendering


def _num(x: Any, unit: str = "") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.4g}{' ' + unit if unit else ''}"


def _change(row: pd.Series) -> str:
    r = row["ratio"]
    return "-" if pd.isna(r) else f"{(r - 1) * 100:+.1f}%"


def _ci(row: pd.Series) -> str:
    if pd.isna(row["ci_low"]):
        return "-"
    return f"[{(row['ci_low'] - 1) * 100:+.1f}%, {(row['ci_high'] - 1) * 100:+.1f}%]"


def _display(result: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "verdict": [f"{_SYMBOL[v]} {v}".strip() for v in result["verdict"]],
            "case": result["case_id"],
            "metric": result["metric"],
            "base": [_num(b, u) for b, u in zip(result["base_median"], result["unit"])],
            "candidate": [_num(c, u) for c, u in zip(result["cand_median"], result["unit"])],
            "change": [_change(r) for _, r in result.iterrows()],
            "95% CI": [_ci(r) for _, r in result.iterrows()],
            "p": [_num(p) for p in result["p_value"]],
            "reason": result["reason"],
        }
    )


def summary_line(result: pd.DataFrame) -> str:
    c = gate_mod.counts(result)
    parts = [f"{n} {v}" for v, n in c.items() if n]
    status = "PASS" if gate_mod.passed(result) else "FAIL"
    return f"{status}: " + (", ".join(parts) if parts else "nothing compared")


def render(result: pd.DataFrame, fmt: str, base: str, cand: str, notes: Sequence[str] = ()) -> str:
    """The comparison as text: ``table`` (terminal), ``markdown`` (CI comment) or ``json``."""
    if fmt == "json":
        rows = json.loads(result.to_json(orient="records"))  # NaN -> null
        return json.dumps({"baseline": base, "candidate": cand, "passed": gate_mod.passed(result),
                           "counts": gate_mod.counts(result), "notes": list(notes),
                           "rows": rows}, indent=2)
    shown = _display(result)
    changed = result["verdict"] != "unchanged"
    if fmt == "markdown":
        lines = [f"### effbench gate: {summary_line(result)}", "",
                 f"Baseline: `{base}`, candidate: `{cand}`", ""]
        lines += [f"> {n}" for n in notes] + ([""] if notes else [])
        if changed.any():
            lines += [_markdown_table(shown[changed]), ""]
        if (~changed).any():
            lines += ["<details><summary>unchanged metrics "
                      f"({int((~changed).sum())})</summary>", "",
                      _markdown_table(shown[~changed]), "", "</details>"]
        return "\n".join(lines)
    with pd.option_context("display.width", 250, "display.max_colwidth", 90,
                           "display.max_rows", None):
        body = shown.to_string(index=False) if len(shown) else "(no rows)"
    head = [f"baseline:  {base}", f"candidate: {cand}", *[f"note: {n}" for n in notes]]
    return "\n".join([*head, "", body, "", summary_line(result)])


def _markdown_table(df: pd.DataFrame) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# compare / gate


def _thresholds(args: argparse.Namespace) -> gate_mod.Thresholds:
    """Defaults, overridden by the preset's ``[gate]`` table (with --run), then by flags."""
    from_preset: dict = {}
    if getattr(args, "run", None):
        from effbench.suite import presets

        from_preset = dict(presets.load(args.run).gate)
    given = {"timing_effect": getattr(args, "timing_threshold", None),
             "alpha": getattr(args, "alpha", None)}
    flags = {k: v for k, v in given.items() if v is not None}
    return gate_mod.Thresholds.from_dict({**from_preset, **flags}, "command line")


def gate_sides(
    base: Side,
    cand: Side,
    thresholds: gate_mod.Thresholds,
    *,
    metrics: Sequence[str] | None = None,
    deterministic_only: bool = False,
    force: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Compare two sides; timings are skipped across machines unless ``force``. Returns notes."""
    notes: list[str] = []
    same, why = baselines.same_machine(base.manifest, cand.manifest)
    skip = None
    if not same and not force:
        skip = f"other machine ({why}); --force to compare timings anyway"
        notes.append(f"timing metrics skipped: baseline is from another machine: {why}")
    elif not same:
        notes.append(f"--force: comparing timings across machines ({why})")
    classes = gate_mod.DETERMINISTIC_CLASSES if deterministic_only else gate_mod.CLASSES
    result = gate_mod.compare(base.records, cand.records, thresholds, metrics=metrics,
                              classes=classes, skip_timing=skip)
    return result, notes


def cmd_compare(args: argparse.Namespace) -> int:
    base, cand = resolve_side(args.base, args.results), resolve_side(args.candidate, args.results)
    result, notes = gate_sides(base, cand, _thresholds(args), metrics=args.metric,
                               force=args.force)
    print(render(result, args.format, base.label, cand.label, notes))
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    th = _thresholds(args)
    if args.ab:
        if not args.run:
            raise ConfigError("--ab needs --run PRESET: the preset both sides run", "--ab")
        if args.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {args.rounds}", "--rounds")
        base, cand = ab_sides(args.ab, args.run, args.rounds, args.level, args.technique)
    else:
        if not args.baseline:
            raise ConfigError("give --baseline NAME (or --ab BASE_REF --run PRESET)", "gate")
        if args.run and args.candidate:
            raise ConfigError("give either --candidate RUN or --run PRESET, not both", "gate")
        base = resolve_side(args.baseline, args.results)
        if args.run:
            cand = _run_preset(args)
        else:
            cand = resolve_side(args.candidate or "latest", args.results)
    result, notes = gate_sides(base, cand, th, metrics=args.metric,
                               deterministic_only=args.deterministic_only, force=args.force)
    print(render(result, args.format, base.label, cand.label, notes))
    if gate_mod.passed(result) or args.report_only:
        return 0
    return 1


def _run_preset(args: argparse.Namespace) -> Side:
    from effbench.suite import presets, runner

    out = runner.run(presets.load(args.run), results=args.results, progress=False,
                     levels=args.level, techniques=args.technique,
                     log=lambda m: print(m, file=sys.stderr))
    run_dir = out.store.run_dir
    return Side(f"run {run_dir.name}", load_records(run_dir), read_manifest(run_dir))


# ---------------------------------------------------------------------------------------------
# A/B on this machine


def _git(repo: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                             check=False, timeout=120)
    except (OSError, subprocess.SubprocessError) as e:
        raise ConfigError(f"git {args[0]} failed: {e}", "--ab") from e
    if out.returncode != 0:
        msg = (out.stderr.strip().splitlines() or ["failed"])[-1]
        raise ConfigError(f"git {' '.join(args[:2])}: {msg}", "--ab")
    return out.stdout.strip()


def side_command(preset: str, results: Path, levels: Sequence[str] | None,
                 techniques: Sequence[str] | None) -> list[str]:
    """The ``effbench run`` subprocess of one A/B round (the side is chosen by its cwd)."""
    cmd = [sys.executable, "-m", "effbench.suite.cli", "run", preset, "--results", str(results),
           "--no-progress"]
    for level in levels or ():
        cmd += ["--level", level]
    for tech in techniques or ():
        cmd += ["--technique", tech]
    return cmd


def namespace_shim(folder: Path, root: Path) -> Path:
    """A folder whose ``effbench`` entry is ``root``: put first on PYTHONPATH, it makes
    ``effbench.suite`` etc. import from ``root`` (a worktree) instead of the installed tree.

    ``effbench`` is a namespace package, so the path entry found first supplies its portion;
    ``root`` itself also goes on the path for bases older than the namespace (top-level
    ``suite``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    link = folder / "effbench"
    if not link.exists():
        link.symlink_to(root, target_is_directory=True)
    return folder


def interleave(
    sides: dict[str, Path],
    rounds: int,
    run_side: Callable[[str, Path, int], None],
) -> list[tuple[str, int]]:
    """Call ``run_side(name, root, round)`` for every side each round, alternating who goes
    first (A B, B A, ...) so neither side always runs on a cooler or warmer machine.
    Returns the order the calls were made in.
    """
    names = list(sides)
    order = []
    for r in range(rounds):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            run_side(name, sides[name], r)
            order.append((name, r))
    return order


def ab_sides(base_ref: str, preset: str, rounds: int, levels: Sequence[str] | None = None,
             techniques: Sequence[str] | None = None) -> tuple[Side, Side]:
    """Run ``preset`` with BASE_REF's code and with the working tree's, interleaved."""
    repo = Path(_git(Path.cwd(), "rev-parse", "--show-toplevel"))
    sha = _git(repo, "rev-parse", "--verify", f"{base_ref}^{{commit}}")
    preset_arg = str(Path(preset).resolve()) if Path(preset).exists() else preset
    tmp = Path(tempfile.mkdtemp(prefix="effbench-ab-"))
    worktree = tmp / "base"
    _git(repo, "worktree", "add", "--detach", str(worktree), sha)
    try:
        sides = {"base": worktree, "head": repo}

        def run_side(name: str, root: Path, r: int) -> None:
            results = tmp / f"results-{name}"
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(
                (str(namespace_shim(tmp / f"shim-{name}", root)), str(root)))}
            print(f"ab round {r + 1}/{rounds}: {name}", file=sys.stderr)
            done = subprocess.run(side_command(preset_arg, results, levels, techniques),
                                  cwd=root, env=env, capture_output=True, text=True,
                                  check=False)
            if done.returncode != 0:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                raise StoreError(f"{name} side ({root}) run failed: {tail}")

        interleave(sides, rounds, run_side)
        out = []
        for name in sides:
            results = tmp / f"results-{name}"
            dirs = sorted((results / "runs").iterdir())
            frames = [load_records(d) for d in dirs]
            label = f"{name} ({sha[:10] if name == 'base' else 'working tree'}, {rounds} runs)"
            out.append(Side(label, gate_mod.pool_runs(frames), read_manifest(dirs[-1])))
        return out[0], out[1]
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(worktree)],
                       capture_output=True, check=False)
        subprocess.run(["git", "-C", str(repo), "worktree", "prune"], capture_output=True,
                       check=False)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# baselines


def cmd_baseline(args: argparse.Namespace) -> int:
    if args.action == "list":
        df = baselines.list_baselines(args.results)
        if df.empty:
            print(f"no baselines under {args.results}/baselines; save one with: "
                  "effbench baseline save NAME RUN")
        else:
            with pd.option_context("display.width", 200, "display.max_colwidth", 60):
                print(df.to_string(index=False))
        return 0
    run_dir = resolve_run(args.results, args.run)
    fn = baselines.save if args.action == "save" else baselines.update
    path = fn(args.name, run_dir, args.results, note=args.note or "")
    print(f"baseline {args.name} <- run {run_dir.name}: {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# pytest-benchmark JSON


def _pb_stats(samples: np.ndarray) -> dict[str, Any]:
    """pytest-benchmark's ``stats`` block for per-call times in seconds."""
    x = np.sort(samples)
    n = x.size
    mean, median = float(x.mean()), float(np.median(x))
    std = float(x.std(ddof=1)) if n > 1 else 0.0
    q1, q3 = (float(v) for v in np.percentile(x, [25, 75]))
    iqr = q3 - q1
    lo, hi = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    inside = x[(x >= lo) & (x <= hi)]
    iqr_out = int(n - inside.size)
    std_out = int(((x < mean - std) | (x > mean + std)).sum())
    return {
        "min": float(x[0]), "max": float(x[-1]), "mean": mean, "stddev": std, "rounds": int(n),
        "median": median, "iqr": iqr, "q1": q1, "q3": q3, "iqr_outliers": iqr_out,
        "stddev_outliers": std_out, "outliers": f"{std_out};{iqr_out}",
        "ld15iqr": float(inside[0]) if inside.size else float(x[0]),
        "hd15iqr": float(inside[-1]) if inside.size else float(x[-1]),
        "ops": 1.0 / mean if mean > 0 else 0.0, "total": float(x.sum()), "iterations": 1,
        "data": [float(v) for v in samples],
    }


def to_pytest_benchmark(df: pd.DataFrame, manifest: dict[str, Any]) -> dict[str, Any]:
    """A run as pytest-benchmark saved-run JSON: one benchmark per (case, time metric in s).

    Only metrics in seconds with samples become benchmarks (pytest-benchmark stats are
    times); every other ok metric of the case goes into ``extra_info["metrics"]``, and
    ``extra_info["effbench"]`` keeps the identity needed to import the file back losslessly.
    """
    ok = df[df["status"] == "ok"]
    benches = []
    for case_id, case in ok.groupby("case_id", sort=True):
        metrics = {r["metric"]: {"value": None if pd.isna(r["value"]) else float(r["value"]),
                                 "unit": r["unit"], "direction": r["direction"]}
                   for r in case.to_dict("records")}
        for r in case.to_dict("records"):
            samples = gate_mod._samples(r["samples"])
            if r["unit"] != "s" or samples.size == 0:
                continue
            ident = {k: r.get(k) for k in ("case_id", "technique", "family", "level",
                                            "workload", "device", "metric")}
            ident["params"] = r.get("params")
            benches.append({
                "group": r["metric"], "name": f"{r['metric']}[{case_id}]",
                "fullname": f"effbench::{case_id}::{r['metric']}",
                "params": None, "param": None,
                "extra_info": {"effbench": ident, "metrics": metrics},
                "options": {"disable_gc": True, "timer": "effbench.timing",
                            "min_rounds": 1, "max_time": 0.0, "min_time": 0.0, "warmup": True},
                "stats": _pb_stats(samples),
            })
    host, git = manifest.get("host") or {}, manifest.get("git") or {}
    python = manifest.get("python") or {}
    return {
        "machine_info": {
            "node": host.get("hostname"), "processor": host.get("cpu_model"),
            "machine": host.get("machine"), "python_compiler": "",
            "python_implementation": python.get("implementation"),
            "python_implementation_version": python.get("version"),
            "python_version": python.get("version"), "python_build": [],
            "release": "", "system": host.get("platform"),
            "cpu": {"brand_raw": host.get("cpu_model"), "count": host.get("cpu_count")},
            "effbench_manifest": {k: manifest.get(k) for k in ("run_id", "device", "cuda")},
        },
        "commit_info": {"id": git.get("sha") or "unversioned", "time": None,
                        "author_time": None, "dirty": bool(git.get("dirty")),
                        "project": "effbench", "branch": git.get("branch") or "(unknown)"},
        "benchmarks": benches,
        "datetime": manifest.get("finished") or manifest.get("started"),
        "version": _pytest_benchmark_version(),
    }


def _pytest_benchmark_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("pytest-benchmark")
    except metadata.PackageNotFoundError:
        return "5.2.3"


def imported_host(manifest: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with the host (and CUDA devices) of the machine that ran the benchmarks,
    as far as pytest-benchmark's ``machine_info`` tells, so the same-machine check holds.
    """
    info = data.get("machine_info") if isinstance(data.get("machine_info"), dict) else {}
    cpu = info.get("cpu") if isinstance(info.get("cpu"), dict) else {}
    out = {**manifest, "host": dict(manifest.get("host") or {})}
    if cpu.get("brand_raw"):
        out["host"].update(cpu_model=cpu["brand_raw"], cpu_count=cpu.get("count"),
                           hostname=info.get("node"))
    ours = info.get("effbench_manifest") if isinstance(info.get("effbench_manifest"), dict) else {}
    if isinstance(ours.get("cuda"), dict):
        out["cuda"] = ours["cuda"]
    return out


def from_pytest_benchmark(data: Any, run_id: str, source: str) -> list[Record]:
    """Records from pytest-benchmark JSON: one ``latency`` per benchmark (+ effbench metrics).

    Samples are ``stats.data`` when the file has them (``--benchmark-save-data`` or
    ``--benchmark-json``), else empty with the summary in ``stats``. StoreError when the file
    is not pytest-benchmark JSON.
    """
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise StoreError(f"{source} is not pytest-benchmark JSON (no 'benchmarks' list)")
    records: list[Record] = []
    seen_extra: set[tuple[str, str]] = set()
    for i, b in enumerate(data["benchmarks"]):
        if not isinstance(b, dict) or not isinstance(b.get("stats"), dict) or "name" not in b:
            raise StoreError(f"{source}: benchmarks[{i}] has no name or stats")
        st, extra = b["stats"], b.get("extra_info") or {}
        ident = extra.get("effbench") if isinstance(extra.get("effbench"), dict) else {}
        case_id = ident.get("case_id") or f"pytest:{b.get('fullname') or b['name']}"
        base = {
            "run_id": run_id, "case_id": case_id,
            "technique": ident.get("technique") or str(b["name"]).split("[")[0],
            "family": ident.get("family") or "pytest-benchmark",
            "level": ident.get("level") or "kernel",
            "params": _params(ident.get("params"), b.get("params")),
            "workload": ident.get("workload") or str(b.get("group") or ""),
            "device": ident.get("device") or "cpu", "created_ns": 0,
            "schema_version": SCHEMA_VERSION,
        }
        data_ = [float(x) for x in st.get("data") or []]
        summary = {"median": st.get("median"), "mean": st.get("mean"), "min": st.get("min"),
                   "max": st.get("max"), "std": st.get("stddev"), "q1": st.get("q1"),
                   "q3": st.get("q3"), "iqr": st.get("iqr"), "n": st.get("rounds")}
        try:
            value = float(st["median"])
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(f"{source}: benchmarks[{i}] stats have no numeric median") from e
        stats = {k: float(v) for k, v in summary.items() if isinstance(v, (int, float))}
        records.append(Record(**base, metric=ident.get("metric") or "latency", value=value,
                              unit="s", direction="lower", samples=tuple(data_), stats=stats))
        for name, m in (extra.get("metrics") or {}).items():
            if (case_id, name) in seen_extra or not isinstance(m, dict) or m.get("unit") == "s":
                continue
            if name == ident.get("metric") or m.get("value") is None:
                continue
            seen_extra.add((case_id, name))
            v = float(m["value"])
            records.append(Record(**base, metric=name, value=v, unit=str(m.get("unit", "")),
                                  direction=str(m.get("direction", "lower")), samples=(v,),
                                  stats={"n": 1.0}))
    if not records:
        raise StoreError(f"{source} holds no benchmarks")
    return records


def _params(effbench_params: Any, pytest_params: Any) -> dict[str, Any]:
    if isinstance(effbench_params, str):
        try:
            return json.loads(effbench_params)
        except ValueError:
            return {}
    if isinstance(effbench_params, dict):
        return effbench_params
    return pytest_params if isinstance(pytest_params, dict) else {}


def cmd_export(args: argparse.Namespace) -> int:
    run_dir = resolve_run(args.results, args.run)
    data = to_pytest_benchmark(load_records(run_dir), read_manifest(run_dir))
    try:
        Path(args.output).write_text(json.dumps(data, indent=2, default=str) + "\n")
    except OSError as e:
        raise StoreError(f"cannot write {args.output}: {e.strerror or e}") from e
    print(f"{len(data['benchmarks'])} benchmark(s) of run {run_dir.name} -> {args.output}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as e:
        raise StoreError(f"{path} does not exist") from e
    except (OSError, ValueError) as e:
        raise StoreError(f"{path} is not readable JSON: {e}") from e
    config = {"imported_from": str(path.resolve()),
              "pytest_benchmark": {k: data.get(k) for k in ("version", "datetime",
                                                            "commit_info")}
              if isinstance(data, dict) else {}}
    store = RunStore.create(args.results, args.name or f"import-{path.stem}", config)
    try:
        records = from_pytest_benchmark(data, store.run_id, str(path))
    except StoreError:
        shutil.rmtree(store.run_dir, ignore_errors=True)
        raise
    manifest = imported_host(store.manifest(), data)
    store.manifest_path.write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    for case_id in dict.fromkeys(r.case_id for r in records):
        store.append([r for r in records if r.case_id == case_id])
    store.finalize()
    print(f"imported {len(records)} record(s) from {path} as run {store.run_id}")
    return 0


# ---------------------------------------------------------------------------------------------
# Parsers


def _gate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", action="append", help="only this metric (repeatable)")
    p.add_argument("--timing-threshold", type=float, metavar="T",
                   help="minimum relative change of a timing median (default 0.05)")
    p.add_argument("--alpha", type=float, help="rank-test significance level (default 0.01)")
    p.add_argument("--force", action="store_true",
                   help="compare timings even against a baseline from another machine")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("--results", default="results", help="results folder (default results/)")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Register compare, gate, baseline, export and import on the ``effbench`` subparsers."""
    from effbench.suite.technique import LEVELS

    p = sub.add_parser("compare", help="compare two runs or baselines metric by metric")
    p.add_argument("base", help="baseline name, run id, prefix or 'latest'")
    p.add_argument("candidate", help="baseline name, run id, prefix or 'latest'")
    _gate_options(p)
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("gate", help="fail (exit 1) when a candidate regressed against a baseline")
    p.add_argument("--baseline", metavar="NAME", help="baseline name (or run ref)")
    p.add_argument("--candidate", metavar="RUN", help="candidate run (default: latest)")
    p.add_argument("--run", metavar="PRESET", help="run this preset now as the candidate")
    p.add_argument("--ab", metavar="BASE_REF",
                   help="A/B on this machine: git ref of the base code; needs --run")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds per side (default 3)")
    p.add_argument("--level", action="append", choices=LEVELS, help="only this level (--run)")
    p.add_argument("--technique", action="append", help="only this technique (--run)")
    p.add_argument("--report-only", action="store_true", help="always exit 0 unless bad input")
    p.add_argument("--deterministic-only", action="store_true",
                   help="gate only deterministic metrics (counts, bytes, quality)")
    _gate_options(p)
    p.set_defaults(func=cmd_gate)

    p = sub.add_parser("baseline", help="save, update or list named baselines")
    bsub = p.add_subparsers(dest="action", required=True)
    for action, text in (("save", "save RUN as a new baseline NAME"),
                         ("update", "replace baseline NAME with RUN, on purpose")):
        q = bsub.add_parser(action, help=text)
        q.add_argument("name")
        q.add_argument("run", nargs="?", default="latest", help="run id, prefix or 'latest'")
        q.add_argument("--note", help="why (kept in the baseline's history)")
        q.add_argument("--results", default="results")
        q.set_defaults(func=cmd_baseline)
    q = bsub.add_parser("list", help="stored baselines")
    q.add_argument("--results", default="results")
    q.set_defaults(func=cmd_baseline)

    p = sub.add_parser("export", help="write a run in another tool's format")
    p.add_argument("run", nargs="?", default="latest", help="run id, prefix or 'latest'")
    p.add_argument("--format", choices=("pytest-benchmark",), default="pytest-benchmark")
    p.add_argument("-o", "--output", required=True, help="output file")
    p.add_argument("--results", default="results")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("import", help="pytest-benchmark JSON -> a new run in the store")
    p.add_argument("file")
    p.add_argument("--name", help="run name (default import-<file stem>)")
    p.add_argument("--results", default="results")
    p.set_defaults(func=cmd_import)
