"""The ``effbench`` command line: a thin layer over the runner, store and report.

Every error that is the user's input (EffbenchError) prints one line and exits 2; a run
interrupted with Ctrl-C says where its finished cases are and how to resume.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from effbench.suite.errors import ConfigError, EffbenchError
from effbench.suite.family import family_names
from effbench.suite.technique import LEVELS


def _cmd_list(args: argparse.Namespace) -> int:
    from effbench.suite import registry

    for t in registry.techniques(args.family):
        flags = ", ".join(
            f for f, on in (("baseline", t.baseline), ("lossless", t.lossless)) if on
        )
        print(f"{t.name}  [{t.family}]{f'  ({flags})' if flags else ''}")
        print(f"    {t.summary}")
        if t.paper:
            print(f"    paper:  {t.paper}")
        print(f"    levels: {', '.join(t.levels)}")
        for p in t.params:
            print(f"    param   {p.describe()}{f'  - {p.help}' if p.help else ''}")
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from effbench.suite import presets

    for name in presets.builtin_presets():
        p = presets.load(name)
        print(f"{name}: {p.run.description}")
    return 0


def _print_report(run_dir: Path) -> None:
    from effbench.suite.report import render_text, summary_table
    from effbench.suite.store import load_records

    width = shutil.get_terminal_size((160, 40)).columns
    print(render_text(summary_table(load_records(run_dir)), width))


def _cmd_run(args: argparse.Namespace) -> int:
    from effbench.suite import presets, runner

    preset = runner.with_overrides(
        presets.load(args.preset),
        device=args.device,
        model=args.model,
        draft=args.draft,
        name=args.name,
        case_budget_s=args.budget,
    )
    preset = presets.with_endpoint(preset, args.endpoint, args.endpoint_name)
    preset = presets.with_compile(preset, args.compile)
    try:
        out = runner.run(
            preset,
            results=args.results,
            resume=args.resume,
            techniques=args.technique,
            levels=args.level,
            progress=not args.no_progress,
            profile=[p for p in (args.profile or "").split(",") if p] or None,
            threads=args.threads,
            retry_noisy=args.retry_noisy,
            executor=args.executor,
            ray_address=args.address,
            ray_retries=args.ray_retries,
        )
    except KeyboardInterrupt:
        print("\ninterrupted: finished cases are journaled; rerun with --resume latest",
              file=sys.stderr)
        return 130
    _print_report(out.store.run_dir)
    print(
        f"\n{out.cases} case(s), {out.failed} failed, {out.skipped} resumed, "
        f"{out.wall_s:.1f} s. Results: {out.store.run_dir}"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from effbench.suite.store import resolve_run

    run_dir = resolve_run(args.results, args.run)
    print(f"run {run_dir.name}")
    _print_report(run_dir)
    return 0


def _cmd_runs(args: argparse.Namespace) -> int:
    import pandas as pd

    from effbench.suite.store import list_runs

    df = list_runs(args.results)
    if df.empty:
        print(f"no runs under {args.results}; start one with: effbench run smoke")
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(df.to_string(index=False))
    return 0


def _cmd_query(args: argparse.Namespace) -> int:
    import pandas as pd

    from effbench.suite.store import query

    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(query(args.results, args.sql).to_string(index=False))
    return 0


def _cmd_dash(args: argparse.Namespace) -> int:
    """Start the Streamlit dashboard; suite never imports dashboards, it runs its launcher."""
    import runpy

    launch = Path(__file__).resolve().parents[1] / "dashboards" / "launch.py"
    if not launch.is_file():
        raise EffbenchError(f"the dashboard is not installed ({launch} is missing)")
    main = runpy.run_path(str(launch))["main"]
    return main(["--results", args.results, "--host", args.host, "--port", str(args.port)])


def _cmd_profile_tklqt(args: argparse.Namespace) -> int:
    import json

    from effbench.kernels_ref.compiled import check_mode
    from effbench.profilers.tklqt_sweep import sweep
    from effbench.suite.context import check_model, load_model
    from effbench.suite.devices import describe, resolve_device, resolve_dtype
    from effbench.suite.profiling import store_sweep, sweep_workload

    try:
        sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    except ValueError:
        raise ConfigError(
            f"--batch-sizes must be integers like 1,2,4, got {args.batch_sizes!r}"
        ) from None
    if not sizes or min(sizes) < 1:
        raise ConfigError("--batch-sizes needs at least one batch size >= 1")
    device = resolve_device(args.device)
    try:
        check_model(args.model)
    except ValueError as e:
        raise ConfigError(str(e), "--model") from None
    try:
        check_mode(args.compile, device)
    except ValueError as e:
        raise ConfigError(str(e), "--compile") from None
    model, _ = load_model(args.model, device, resolve_dtype("auto", device), 0)
    out = sweep(model, sorted(set(sizes)), Path(args.out), args.prompt_len, args.new_tokens,
                compile=args.compile)
    store = store_sweep(
        args.results, out.table.to_dict("records"), out.unavailable,
        sweep_workload(args.prompt_len, args.new_tokens, args.compile), describe(device),
        {"command": "profile tklqt", "model": args.model, "batch_sizes": sizes,
         "compile": args.compile},
        out.transition,
    )
    if args.json:
        print(json.dumps({
            "rows": out.table.to_dict("records"),
            "transition": None if out.transition is None else out.transition.__dict__,
            "unavailable": out.unavailable, "traces": list(out.traces)}, indent=2))
        return 0
    print(out.table.to_string(index=False))
    if out.unavailable:
        print(f"TKLQT unavailable: {out.unavailable}")
    elif out.transition is not None:
        t = out.transition
        print(f"decode turns GPU-bound at batch size: {t.batch_size} (t_lq floor "
              f"{t.floor_us:.1f} us; knee of the log-log fit: {t.knee_batch_size})")
    print(f"traces: {args.out}; records: {store.run_dir}")
    return 0


def _cmd_train_tiny(args: argparse.Namespace) -> int:
    from effbench.kernels_ref import train

    argv = ["--out", args.out, "--stage", args.stage] + (["--quick"] if args.quick else [])
    argv += ["--steps", str(args.steps)] if args.steps else []
    argv += ["--target", args.target] if args.target else []
    return int(train.main(argv) or 0)


def _threads_arg(text: str) -> int | str:
    """``--threads``: an integer or ``auto`` (its range is checked by the runner, up front)."""
    from effbench.suite.threads import parse_threads

    try:
        return parse_threads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _retry_arg(text: str) -> int:
    """``--retry-noisy N``: an integer >= 0."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer >= 0")
    return n


def _gate_threads(handler):
    """Wrap ``effbench gate`` so ``--run``/``--ab`` runs use one thread count, chosen here.

    The count (``--threads``, else the preset's ``[run] threads``, else ``auto``) is validated
    before anything runs and exported as ``EFFBENCH_THREADS`` (read by this effbench's runner,
    in process for ``--run`` and in the working tree's side of ``--ab``) and as
    ``OMP_NUM_THREADS`` (read by torch at start in every subprocess, so the base side of an A/B
    built from an older commit that knows no ``--threads`` gets the same count too). Both
    sides of an A/B thus measure with the same threads, chosen once.
    """

    def run(args: argparse.Namespace) -> int:
        import os

        from effbench.suite import presets
        from effbench.suite.threads import OMP_ENV, THREADS_ENV, apply_threads, choose_threads

        if not args.run:
            if args.threads is not None and not args.ab:
                raise ConfigError("--threads applies to the runs gate starts: give --run "
                                  "PRESET (or --ab BASE_REF --run PRESET)", "--threads")
            return handler(args)
        choice = choose_threads(args.threads, presets.load(args.run).run.threads)
        saved = {k: os.environ.get(k) for k in (THREADS_ENV, OMP_ENV)}
        os.environ[THREADS_ENV] = os.environ[OMP_ENV] = str(choice.threads)
        apply_threads(choice.threads)  # this process's own timing (canaries) too
        print(choice.describe(), file=sys.stderr)
        try:
            return handler(args)
        finally:  # main() may be called in process (tests): leave the environment as it was
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    return run


def _user_errors(handler):
    """Wrap a handler whose ValueErrors are the user's input (a bad file), not bugs."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except ValueError as e:
            raise ConfigError(str(e)) from None

    return run


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="effbench",
        description="Benchmark and profile LLM efficiency techniques on one common runner.",
    )
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="registered techniques with their parameters and levels")
    p.add_argument("--family", choices=family_names())
    p.set_defaults(func=_cmd_list)

    p = sub.add_parser("presets", help="built-in presets")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("run", help="run a preset (built-in name or TOML path)")
    p.add_argument("preset", help="smoke, cpu-default, or a path to a preset .toml")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (overrides the preset)")
    p.add_argument("--model", help="local Hugging Face Llama-family checkpoint dir, or "
                   "tiny / llama-3.2-1b (random weights)")
    p.add_argument("--draft", help="draft model for speculative decoding (default tiny-draft)")
    p.add_argument("--name", help="run name (default: the preset's)")
    p.add_argument("--budget", type=float, help="time budget per case in seconds")
    p.add_argument("--results", default="results", help="results folder (default results/)")
    p.add_argument("--resume", metavar="RUN", help="resume RUN (id, prefix or 'latest')")
    p.add_argument("--technique", action="append", help="only this technique (repeatable)")
    p.add_argument("--level", action="append", choices=LEVELS, help="only this level")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--profile", metavar="P1,P2", help="attach profilers to every case "
                   "(tklqt, energy, bandwidth, host, memory)")
    p.add_argument("--threads", type=_threads_arg, metavar="N|auto",
                   help="torch intra-op threads, 1..usable cores (default: the preset's, else "
                   "auto: the cores other processes leave free)")
    p.add_argument("--retry-noisy", type=_retry_arg, default=0, metavar="N",
                   help="re-measure a case measured under interference up to N times and "
                   "keep the cleanest attempt (default 0)")
    p.add_argument("--endpoint", metavar="URL", help="serving level against this "
                   "OpenAI-compatible server (http://host:port/v1) instead of the in-process "
                   "engine; overrides [serving] endpoint (docs/SERVING.md)")
    p.add_argument("--endpoint-name", metavar="NAME", help="the technique label of the "
                   "endpoint's records: the server and its configuration (default: the "
                   "preset's [serving] endpoint_name)")
    p.add_argument("--compile", metavar="MODE", help="engine level: run the decode and verify "
                   "steps compiled: off, default (torch.compile) or reduce-overhead (CUDA graphs, "
                   "CUDA only); overrides [engine] compile (docs/ENGINE.md)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: every case in this process (default); ray: one Ray task per "
                   "case (pip install 'effbench[ray]'; docs/SCALE.md)")
    p.add_argument("--address", metavar="ADDR",
                   help="with --executor ray: the cluster's head, host:port or ray://host:port "
                   "(default: RAY_ADDRESS, else a local cluster on 127.0.0.1)")
    p.add_argument("--ray-retries", type=_retry_arg, default=2, metavar="N",
                   help="with --executor ray: retry a case whose worker was lost up to N "
                   "times, then record it as failed (default 2)")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("report", help="summary tables of a run")
    p.add_argument("run", nargs="?", default="latest", help="run id, prefix or 'latest'")
    p.add_argument("--results", default="results")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("runs", help="list stored runs")
    p.add_argument("--results", default="results")
    p.set_defaults(func=_cmd_runs)

    p = sub.add_parser("query", help="SQL over every stored record (DuckDB view 'records')")
    p.add_argument("sql")
    p.add_argument("--results", default="results")
    p.set_defaults(func=_cmd_query)

    p = sub.add_parser("dash", help="open the results dashboard (Streamlit, 127.0.0.1 by default)")
    p.add_argument("--results", default="results")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8501)
    p.set_defaults(func=_cmd_dash)

    from effbench.suite.serve import main as serve_main

    serve_main.add_parser(sub, _threads_arg).set_defaults(func=serve_main.main)

    p = sub.add_parser("profile", help="profiling sweeps (tklqt: batch-size sweep of TKLQT)")
    psub = p.add_subparsers(dest="what", required=True)
    p = psub.add_parser("tklqt", help="TKLQT per prefill/decode step across batch sizes, and "
                        "the batch size where the engine turns GPU-bound")
    p.add_argument("--model", default="tiny", help="checkpoint dir, tiny, or llama-3.2-1b")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-sizes", default="1,2,4,8,16,32")
    p.add_argument("--prompt-len", type=int, default=64)
    p.add_argument("--new-tokens", type=int, default=16)
    p.add_argument("--out", default="results/profiles/tklqt", help="folder for the traces")
    p.add_argument("--results", default="results", help="store the sweep as a run here")
    p.add_argument("--compile", default="off", metavar="MODE",
                   help="decode step: off, default (torch.compile) or reduce-overhead (CUDA "
                   "graphs, CUDA only); the TKLQT of graph replays against eager launches")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_profile_tklqt)

    from effbench.profilers import tklqt_cli

    p = tklqt_cli.add_parser(sub)
    p.set_defaults(func=_user_errors(tklqt_cli.run))

    p = sub.add_parser("train-tiny", help="retrain the embedded tiny models from their recipe")
    p.add_argument("--out", default="tiny-models",
                   help="output folder: OUT/checkpoints/tiny-{target,draft,long,draft-1l}/ and "
                   "OUT/data/{eval,long_eval}.jsonl (--out kernels_ref replaces the shipped ones)")
    p.add_argument("--steps", type=int, help="override the target's training steps")
    p.add_argument("--quick", action="store_true", help="a few steps on a small slice (tests)")
    p.add_argument("--stage", choices=("all", "base", "long", "draft-1l"), default="all",
                   help="base: tokenizer, eval set, tiny-target, tiny-draft; long: tiny-long "
                   "and the long eval set; draft-1l: the distilled one-layer draft")
    p.add_argument("--target", help="target checkpoint the long and draft-1l stages start "
                   "from (default: OUT/checkpoints/tiny-target, else the shipped one)")
    p.set_defaults(func=_cmd_train_tiny)

    from effbench.suite import gate_cli, repro_cli

    gate_cli.add_parsers(sub)
    gate = sub.choices["gate"]  # --threads for the runs gate starts (gate_cli knows none)
    gate.add_argument("--threads", type=_threads_arg, metavar="N|auto",
                      help="torch threads of the --run/--ab runs (both A/B sides get the same)")
    gate.set_defaults(func=_gate_threads(gate.get_default("func")))
    repro_cli.add_parsers(sub)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except EffbenchError as e:
        print(f"effbench: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
