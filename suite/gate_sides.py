"""The two sides of a comparison and the gate between them.

A ``Side`` is what the gate compares: a label for reports, a records frame and the manifest of
the machine that measured it. ``resolve_side`` finds one by baseline name or run reference;
``gate_sides`` compares two, refusing timing verdicts across machines unless forced (the
command-line handlers, ``compare`` and the A/B runner all go through it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from effbench.suite import baselines
from effbench.suite import gate as gate_mod
from effbench.suite.errors import ConfigError, StoreError
from effbench.suite.store import load_records, read_manifest, resolve_run


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
