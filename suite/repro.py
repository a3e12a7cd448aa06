"""``effbench repro``: run paper claims through the normal runner and decide each one.

Claims are grouped by the preset they run; each preset runs once as a normal, resumable run
(``results/runs/<id>/``), then every claim of the group is decided on that run's records by its
rule (effbench.suite.rules). A claim whose requirements the device lacks (``cuda`` on a CPU
machine) is not run and is reported "not measurable here" with the reason, never as failed
and never dropped. The table (claim, paper, the paper's figure, what was measured with its
CI, the verdict, the scale note) is also saved under ``results/repro/`` as JSON, which the
dashboard's Papers page and ``effbench claims --write-doc`` read.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from effbench.suite import claim as claim_mod
from effbench.suite.claim import Claim
from effbench.suite.errors import ConfigError
from effbench.suite.rules import NOT_MEASURABLE, Outcome, evaluate

REPRO_DIR = "repro"
COLUMNS = ["claim", "paper", "figure", "measured", "ci", "verdict", "detail", "scale", "run_id"]


@dataclass(frozen=True)
class ClaimResult:
    """One decided claim: the claim, its outcome, and the run it was decided on."""

    claim: Claim
    outcome: Outcome
    run_id: str = ""
    device: str = ""

    def row(self) -> dict[str, Any]:
        o, c = self.outcome, self.claim
        return {
            "claim": c.id,
            "paper": f"{c.paper.title} ({c.paper.arxiv})" if c.paper.arxiv else c.paper.title,
            "figure": c.figure,
            "measured": o.measured,
            "ci": list(o.ci) if o.ci else None,
            "verdict": o.verdict,
            "detail": o.detail,
            "scale": c.scale,
            "run_id": self.run_id,
            "device": self.device,
        }


def select(ids: Sequence[str], all_claims: bool) -> list[Claim]:
    """Claims by id (unknown ids refused with the closest names), or every claim."""
    if all_claims:
        return claim_mod.claims()
    if not ids:
        raise ConfigError("name at least one claim, or --all; valid claims: "
                          f"{sorted(c.id for c in claim_mod.claims())}")
    return [claim_mod.get_claim(i, "repro") for i in ids]


def missing_requirement(claim: Claim, device: str) -> str:
    """Why the machine cannot measure ``claim`` ("" when it can)."""
    if "cuda" in claim.requires and not device.startswith("cuda"):
        return "needs CUDA (this run is on " + device + ")"
    return ""


def _latest_of(results: Path, name: str) -> str | None:
    from effbench.suite.store import list_runs

    runs = list_runs(results)
    if runs.empty:
        return None
    mine = runs[runs["name"] == name]
    return None if mine.empty else str(mine.sort_values("started").iloc[-1]["run_id"])


def repro(
    claims: Sequence[Claim], *, device: str = "cpu", model: str | None = None,
    results: str = "results", resume: bool = False, progress: bool = False,
    log: Callable[[str], None] = print,
) -> list[ClaimResult]:
    """Run the claims' presets (each once) and decide every claim; results in claim order."""
    from effbench.suite import presets, runner
    from effbench.suite.devices import resolve_device
    from effbench.suite.store import frame_to_records, load_records

    label = str(resolve_device(device))
    decided: dict[str, ClaimResult] = {}
    groups: dict[str, list[Claim]] = {}
    for c in claims:
        why = missing_requirement(c, label)
        if why:
            decided[c.id] = ClaimResult(c, Outcome(NOT_MEASURABLE, detail=f"not measurable "
                                                   f"here: {why}"), "", label)
        else:
            groups.setdefault(c.preset, []).append(c)
    for preset_name, group in groups.items():
        preset = runner.with_overrides(presets.load(preset_name), device=device, model=model)
        prior = _latest_of(Path(results), preset.run.name) if resume else None
        log(f"repro: running preset {preset_name} for {', '.join(c.id for c in group)}"
            + (f" (resuming {prior})" if prior else ""))
        out = runner.run(preset, results=results, resume=prior, progress=progress, log=log)
        records = frame_to_records(load_records(out.store.run_dir))
        for c in group:
            decided[c.id] = ClaimResult(c, evaluate(c.rule, records), out.store.run_id, label)
    return [decided[c.id] for c in claims]


def table(results: Sequence[ClaimResult]) -> pd.DataFrame:
    return pd.DataFrame([r.row() for r in results], columns=[*COLUMNS, "device"])


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _ci(ci: Any) -> str:
    return "-" if not ci else f"[{ci[0]:.4g}, {ci[1]:.4g}]"


def render(df: pd.DataFrame, fmt: str = "table") -> str:
    """The claim table as plain text, markdown or JSON."""
    if fmt == "json":
        return json.dumps({"claims": df.to_dict("records")}, indent=2, default=str)
    cols = ["claim", "paper", "figure", "measured", "ci", "verdict", "scale"]
    rows = [[_fmt(r["claim"]), _fmt(r["paper"]), _fmt(r["figure"]), _fmt(r["measured"]),
             _ci(r["ci"]), _fmt(r["verdict"]), _fmt(r["scale"])] for r in df.to_dict("records")]
    if fmt == "markdown":
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
        details = [f"- **{r['claim']}**: {r['detail']}" for r in df.to_dict("records")]
        return "\n".join(lines + ["", *details])
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(cols)]
    widths = [min(w, 48) for w in widths]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c[:w].ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out += [""] + [f"{r['claim']}: {r['detail']}" for r in df.to_dict("records")]
    return "\n".join(out)


def save(df: pd.DataFrame, results: str, wall_s: float) -> Path:
    """Write the claim table to ``results/repro/<time>-<device>.json`` and return the path."""
    folder = Path(results) / REPRO_DIR
    folder.mkdir(parents=True, exist_ok=True)
    device = str(df["device"].iloc[0]) if len(df) else "none"
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{device.replace(':', '')}"
    path, n = folder / f"{stem}.json", 1
    while path.exists():  # two tables in one second keep both
        n += 1
        path = folder / f"{stem}-{n}.json"
    payload = {"created": time.strftime("%Y-%m-%dT%H:%M:%S"), "wall_s": wall_s,
               "claims": df.to_dict("records")}
    path.write_text(json.dumps(payload, indent=2, default=str), encoding="utf-8")
    return path


def load_saved(path: Path | str) -> pd.DataFrame:
    """A saved claim table (``save``'s JSON) as a frame."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    return pd.DataFrame(data["claims"])


def saved_tables(results: str) -> list[Path]:
    """Saved claim tables under ``results/repro/``, newest first."""
    folder = Path(results) / REPRO_DIR
    if not folder.exists():
        return []
    return sorted(folder.glob("*.json"), key=lambda p: (p.stat().st_mtime_ns, p.name),
                  reverse=True)
