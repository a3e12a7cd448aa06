"""CLI of the regression gate: ``compare``, ``gate``, ``baseline``, ``export`` and ``import``.

``add_parsers(subparsers)`` registers the subcommands on the ``effbench`` parser; each handler
returns the process exit code: 0 nothing regressed, 1 a regression (0 with ``--report-only``),
2 bad usage or input (an ``EffbenchError``, printed as one line by ``effbench.suite.cli.main``).

Only the command-line layer is here; the work is in modules of one job each, whose names are
re-exported so ``effbench.suite.gate_cli.X`` keeps working:

- ``gate_sides``: ``Side``, ``resolve_side``, ``gate_sides`` (what is compared, and the gate);
- ``gate_report``: ``render``, ``summary_line`` (verdicts as a table, Markdown or JSON);
- ``gate_ab``: ``ab_sides`` and its helpers (``gate --ab``: base and head measured in turns);
- ``pytest_benchmark_json``: ``to_pytest_benchmark``, ``from_pytest_benchmark``,
  ``imported_host`` (``export`` and ``import``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from effbench.suite import baselines
from effbench.suite import gate as gate_mod
from effbench.suite.errors import ConfigError, StoreError
from effbench.suite.gate_ab import ab_sides, interleave, namespace_shim, side_command
from effbench.suite.gate_report import FORMATS, render, summary_line
from effbench.suite.gate_sides import Side, gate_sides, resolve_side
from effbench.suite.pytest_benchmark_json import (
    from_pytest_benchmark,
    imported_host,
    to_pytest_benchmark,
)
from effbench.suite.store import RunStore, load_records, read_manifest, resolve_run

__all__ = [
    "FORMATS",
    "Side",
    "ab_sides",
    "add_parsers",
    "cmd_baseline",
    "cmd_compare",
    "cmd_export",
    "cmd_gate",
    "cmd_import",
    "from_pytest_benchmark",
    "gate_sides",
    "imported_host",
    "interleave",
    "namespace_shim",
    "render",
    "resolve_side",
    "side_command",
    "summary_line",
    "to_pytest_benchmark",
]


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


def cmd_compare(args: argparse.Namespace) -> int:
    base, cand = resolve_side(args.base, args.results), resolve_side(args.candidate, args.results)
    result, notes = gate_sides(base, cand, _thresholds(args), metrics=args.metric,
                               force=args.force, ignore_canary=args.ignore_canary,
                               normalize=args.normalize)
    print(render(result, args.format, base.label, cand.label, notes))
    return 0


def cmd_gate(args: argparse.Namespace) -> int:
    th = _thresholds(args)
    if args.ab:
        if not args.run:
            raise ConfigError("--ab needs --run PRESET: the preset both sides run", "--ab")
        if args.rounds < 1:
            raise ConfigError(f"--rounds must be >= 1, got {args.rounds}", "--rounds")
        if args.ignore_canary and args.normalize:
            raise ConfigError("--normalize needs the canary: drop --ignore-canary", "--normalize")
        mode = "ignore" if args.ignore_canary else "normalize" if args.normalize else "drop"
        base, cand = ab_sides(args.ab, args.run, args.rounds, args.level, args.technique,
                              canary=mode, canary_shift=th.canary_shift)
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
                               deterministic_only=args.deterministic_only, force=args.force,
                               ignore_canary=args.ignore_canary, normalize=args.normalize)
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


def _gate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--metric", action="append", help="only this metric (repeatable)")
    p.add_argument("--timing-threshold", type=float, metavar="T",
                   help="minimum relative change of a timing median (default 0.05)")
    p.add_argument("--alpha", type=float, help="rank-test significance level (default 0.01)")
    p.add_argument("--force", action="store_true",
                   help="compare timings even against a baseline from another machine")
    p.add_argument("--ignore-canary", action="store_true",
                   help="gate timings without looking at the runs' canaries (as before they "
                        "existed)")
    p.add_argument("--normalize", action="store_true",
                   help="when the canaries say the machine's speed differed, divide candidate "
                        "timings by the speed ratio instead of withholding their verdicts")
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
