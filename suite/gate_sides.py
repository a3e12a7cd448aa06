"""The two sides of a comparison and the gate between them.

A ``Side`` is what the gate compares: a label for reports, a records frame and the manifest of
the machine that measured it. ``resolve_side`` finds one by baseline name or run reference;
``gate_sides`` compares two, refusing timing verdicts across machines unless forced, and
checking first that the machine ran at the same speed for both (their canaries,
effbench.suite.gate_canary): when it did not, timing verdicts are withheld, or normalised on
request (the command-line handlers, ``compare`` and the A/B runner all go through it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from effbench.suite import baselines, gate_canary
from effbench.suite import gate as gate_mod
from effbench.suite.errors import ConfigError, StoreError
from effbench.suite.store import load_records, read_manifest, resolve_run


@dataclass(frozen=True)
class Side:
    """One side of a comparison: a label for reports, its records and its manifest.

    ``notes`` are lines the reports show about how the side was assembled (the A/B runner's
    canary rounds); ``canary_check``, when set (a ``gate_canary.CanaryCheck``), is the canary
    comparison already decided by whoever assembled the sides (the A/B runner checks each
    round's two runs, which pooled canaries no longer can), used instead of comparing the
    manifests' canaries.
    """

    label: str
    records: pd.DataFrame
    manifest: dict[str, Any]
    notes: tuple[str, ...] = ()
    canary_check: Any = None


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
    ignore_canary: bool = False,
    normalize: bool = False,
) -> tuple[pd.DataFrame, list[str]]:
    """Compare two sides; timings are skipped across machines unless ``force``. Returns notes.

    Before any timing verdict the sides' canaries are compared (``gate_canary.check``): when
    the machine's speed differed, timing rows become ``withheld`` (or, with ``normalize``, the
    candidate's timings are put on the baseline's machine speed first); deterministic metrics
    gate regardless. ``result.attrs["canary"]`` holds the comparison (``CanaryCheck.to_json``;
    its ``message`` is the line every report shows first). ``ignore_canary`` gives exactly the
    verdicts of a gate without canaries.
    """
    if ignore_canary and normalize:
        raise ConfigError("--normalize needs the canary: drop --ignore-canary", "--normalize")
    if ignore_canary:
        check = gate_canary.ignored()
    elif base.canary_check is not None or cand.canary_check is not None:
        check = cand.canary_check if cand.canary_check is not None else base.canary_check
    else:
        check = gate_canary.check(base.manifest, cand.manifest, normalize=normalize,
                                  min_shift=thresholds.canary_shift)
    notes: list[str] = [*base.notes, *cand.notes]
    same, why = baselines.same_machine(base.manifest, cand.manifest)
    skip = None
    if not same and not force:
        skip = f"other machine ({why}); --force to compare timings anyway"
        notes.append(f"timing metrics skipped: baseline is from another machine: {why}")
    elif not same:
        notes.append(f"--force: comparing timings across machines ({why})")
    classes = gate_mod.DETERMINISTIC_CLASSES if deterministic_only else gate_mod.CLASSES
    cand_records, scaled = cand.records, set()
    if check.action == "normalize":
        cand_records, scaled = gate_canary.normalize_frame(cand.records, check.ratio)
    result = gate_mod.compare(base.records, cand_records, thresholds, metrics=metrics,
                              classes=classes, skip_timing=skip)
    if check.action == "withhold":
        result = gate_canary.withhold(result, check.short)
    elif check.action == "normalize":
        result = gate_canary.mark_normalized(result, scaled, check.short)
    result.attrs["canary"] = check.to_json()
    return result, notes
