"""``effbench tklqt TRACE``: launch/queue aggregates of a Kineto trace, as a table or JSON.

Errors (missing file, not a trace) are raised as one-line ``ValueError``s; the suite's CLI
maps them to its own error type (profilers do not import ``suite``).
"""

from __future__ import annotations

import argparse
import json
import math

import pandas as pd

from effbench.profilers.kineto import load_trace
from effbench.profilers.tklqt import kernel_table, summarize, unlinked_gpu_ops


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``tklqt`` subcommand; its handler is stored as ``func``."""
    p = subparsers.add_parser(
        "tklqt", help="kernel launch and queuing time (TKLQT) of a PyTorch profiler trace"
    )
    p.add_argument("trace", help="Kineto Chrome trace (.json or .json.gz)")
    p.add_argument("--per-kernel", metavar="CSV", help="write the per-kernel table here")
    p.add_argument("--json", action="store_true", help="print aggregates as JSON")
    p.add_argument("--include-memory", action="store_true",
                   help="count memcpy/memset with kernels in the aggregates")
    p.set_defaults(func=run)
    return p


def _clean(v: object) -> object:
    return None if isinstance(v, float) and math.isnan(v) else v


def run(args: argparse.Namespace) -> int:
    """Parse, analyse, print; return the exit code (raises ValueError on a bad trace)."""
    trace = load_trace(args.trace)
    table = kernel_table(trace)
    summary = summarize(table, include_memory=args.include_memory)
    if args.per_kernel:
        table.to_csv(args.per_kernel, index=False)
    if args.json:
        doc = {
            "trace": str(args.trace),
            "skipped_events": trace.skipped,
            "unlinked_gpu_ops": unlinked_gpu_ops(trace),
            "scopes": [{k: _clean(v) for k, v in r.items()}
                       for r in summary.to_dict(orient="records")],
        }
        print(json.dumps(doc, indent=2))
        return 0
    with pd.option_context("display.width", 200, "display.max_columns", None,
                           "display.float_format", "{:,.3f}".format):
        print(summary.set_index("scope").T.to_string())
    print(f"skipped events: {trace.skipped}; GPU ops with no launch call: "
          f"{unlinked_gpu_ops(trace)}")
    return 0
