"""The gate's verdicts as text: a terminal table, a Markdown CI comment, or JSON.

Pure: a result frame of ``effbench.suite.gate.compare`` in, a string out. Rows are listed in
the order the gate sorts them (what changed first); Markdown folds unchanged metrics away.
The canary comparison (effbench.suite.gate_canary, carried in ``result.attrs["canary"]``) comes
first in every format: whether the machine ran at the same speed for both sides decides how far
the timing verdicts below it can be trusted.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from effbench.suite import gate as gate_mod

FORMATS = ("table", "markdown", "json")
_SYMBOL = {"regressed": "!!", "failed": "XX", "missing": "??", "improved": "++", "new": "+",
           "withheld": "~~", "skipped": "--", "unchanged": ""}


def canary_line(result: pd.DataFrame) -> str | None:
    """The canary comparison line of a gate result; None without one or when ignored."""
    check = result.attrs.get("canary") if hasattr(result, "attrs") else None
    if not isinstance(check, dict) or check.get("status") in (None, "ignored"):
        return None
    return f"canary:    {check.get('message') or ''}"


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
    canary = canary_line(result)
    if fmt == "json":
        rows = json.loads(result.to_json(orient="records"))  # NaN -> null
        return json.dumps({"canary": result.attrs.get("canary"), "baseline": base,
                           "candidate": cand, "passed": gate_mod.passed(result),
                           "counts": gate_mod.counts(result), "notes": list(notes),
                           "rows": rows}, indent=2)
    shown = _display(result)
    changed = result["verdict"] != "unchanged"
    if fmt == "markdown":
        lines = [f"### effbench gate: {summary_line(result)}", ""]
        lines += [f"**canary:** {canary.removeprefix('canary:').strip()}", ""] if canary else []
        lines += [f"Baseline: `{base}`, candidate: `{cand}`", ""]
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
    head = [*([canary] if canary else []), f"baseline:  {base}", f"candidate: {cand}",
            *[f"note: {n}" for n in notes]]
    return "\n".join([*head, "", body, "", summary_line(result)])


def _markdown_table(df: pd.DataFrame) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|")

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
