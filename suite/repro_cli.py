"""``effbench repro`` and ``effbench claims``: the command-line layer over suite.repro.

``repro [CLAIM ...] [--all]`` runs the claims' presets and prints the claim-vs-measured table
(``--format table|markdown|json``); ``--save-baseline`` also commits its verdicts as the
device kind's reference (results/baselines/claims/), which docs/CLAIMS.md is generated from.
``claims`` lists the registry; ``claims --write-doc`` regenerates docs/CLAIMS.md.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from effbench.suite.errors import ConfigError


def _cmd_repro(args: argparse.Namespace) -> int:
    from effbench.suite import claims_doc, repro

    chosen = repro.select(args.claims, args.all)
    if args.device and args.device != "auto" and not args.device.startswith(("cpu", "cuda")):
        raise ConfigError(f"unknown device {args.device!r}; valid: cpu, cuda, cuda:N, auto",
                          "--device")
    t0 = time.perf_counter()
    results = repro.repro(chosen, device=args.device or "cpu", model=args.model,
                          results=args.results, resume=args.resume,
                          progress=not args.no_progress)
    wall = time.perf_counter() - t0
    df = repro.table(results)
    path = repro.save(df, args.results, wall)
    print(repro.render(df, args.format))
    if args.format != "json":
        print(f"\n{len(df)} claim(s) in {wall:.1f} s; table saved to {path}")
    if args.save_baseline:
        kind = claims_doc.device_kind(str(df["device"].iloc[0]) if len(df) else "cpu")
        target = Path(args.results) / "baselines" / "claims" / f"{kind}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text(encoding="utf-8"), encoding="utf-8")
        print(f"verdicts saved as the {kind} reference: {target}")
    return 0


def _cmd_claims(args: argparse.Namespace) -> int:
    from effbench.suite import claim, claims_doc

    regs = claim.claims()
    if args.write_doc:
        verdicts = claims_doc.load_verdicts(Path(args.results) / "baselines" / "claims")
        Path(args.write_doc).write_text(claims_doc.render(regs, verdicts), encoding="utf-8")
        print(f"wrote {args.write_doc} ({len(regs)} claims)")
        return 0
    if args.json:
        print(json.dumps([{"id": c.id, "paper": str(c.paper), "claim": c.claim,
                           "preset": c.preset, "techniques": list(c.techniques),
                           "requires": list(c.requires)} for c in regs], indent=2))
        return 0
    for c in regs:
        need = f"  (requires {', '.join(c.requires)})" if c.requires else ""
        print(f"{c.id}  [{c.paper}]{need}")
        print(f"    \"{c.claim}\"")
        print(f"    preset {c.preset}; techniques {', '.join(c.techniques)}; figure {c.figure}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("repro", help="run paper claims and print claim vs measured")
    p.add_argument("claims", nargs="*", help="claim ids (see `effbench claims`)")
    p.add_argument("--all", action="store_true", help="every registered claim")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--model", help="local Hugging Face Llama-family checkpoint dir")
    p.add_argument("--results", default="results")
    p.add_argument("--resume", action="store_true",
                   help="resume each preset's latest run instead of starting new ones")
    p.add_argument("--format", choices=("table", "markdown", "json"), default="table")
    p.add_argument("--save-baseline", action="store_true",
                   help="commit these verdicts as the reference for docs/CLAIMS.md")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_repro)

    p = sub.add_parser("claims", help="registered paper claims; --write-doc regenerates "
                       "docs/CLAIMS.md")
    p.add_argument("--write-doc", metavar="PATH", nargs="?", const="docs/CLAIMS.md")
    p.add_argument("--results", default="results")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_claims)
