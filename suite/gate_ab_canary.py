"""The A/B gate's use of canaries: which rounds' runs may be pooled, or how to normalise them.

``gate --ab`` runs the preset for base and head in turns (A B, B A, ...), one ``effbench run``
process per side and round, and pools each side's samples. Interleaving shares *slow* drift
between the sides, but not a step: a competing process that starts half-way through the rounds
slows, say, two of base's three runs and one of head's, and the pooled medians then differ by
the load, not by the code (the issue's "streaming-llm decode latency +72.7%" on identical
code).

Every side run has canaries of its own (effbench.suite.canary, in its manifest: start, end,
between cases on long runs). When a run has none (a base commit older than the canary), the A/B
runner's own canaries stand in: it times one before each side run and one after the last, so a
run's stand-in canaries are the ones just before and just after it. Then, per round (its base
run and its head run):

* **drop** (the default): a round is kept only when its two runs saw the same machine speed
  as each other *and* as the fastest steady run of the whole A/B
  (``gate_canary.compare_canaries``: the canaries do not differ beyond ``min_shift`` by the
  rank test and the trimmed-mean ratio, and neither run's canaries moved during the run).
  Kept rounds are pooled exactly as before. On a machine under a steady load every round
  agrees and every round is kept; when a load starts (or stops) part-way, the rounds it
  slowed are dropped, the one it started in included. Loaded rounds are dropped even when both
  of their runs are equally loaded, because contention makes timings erratic (a descheduled
  thread stalls a parallel op) and two equally loaded runs can still differ by tens of percent.
  Chosen as the default because it needs no assumption about how much a given case slows
  down under a given load (a multi-threaded matmul and a single-threaded Python loop do not
  slow alike, so one canary factor cannot correct every case). No round left: timing verdicts
  withheld.
* **normalize** (``--normalize``): every round is kept unless a run's canaries moved during
  it; each run's timings are divided by its canary speed (the trimmed mean of its canary
  samples) over the median canary speed of all runs (rates multiplied), so each run is put on
  the same reference machine speed before pooling.

Pure but for the frames it is given; no processes are started here.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from effbench.suite import canary as canary_mod
from effbench.suite import gate as gate_mod
from effbench.suite import gate_canary
from effbench.suite.gate_canary import CanaryCheck, SideCanary
from effbench.suite.gate_sides import Side

MODES = ("drop", "normalize", "ignore")


@dataclass(frozen=True)
class SideRun:
    """One side run of an A/B gate: its records, its manifest and the runner's stand-in
    canaries (timed just before and just after it, in the gate process).
    """

    side: str
    round: int
    records: pd.DataFrame
    manifest: Mapping[str, Any]
    harness: tuple[dict[str, Any], ...] = ()


MIN_POOLED_ROUNDS = 2
"""When the canaries drop rounds, at least this many must remain for timing verdicts: with one
steady round left, the gate compares two single runs, whose within-run samples understate the
run-to-run variation (bench_noise.py: all 4 A/B false alarms of 20 trials with a competing
process had exactly one round left after the drop)."""


def attach_harness(order: Sequence[tuple[str, int]], gaps: Sequence[dict[str, Any]],
                   ) -> dict[tuple[str, int], tuple[dict[str, Any], ...]]:
    """(side, round) -> the runner's canaries just before and just after that run.

    ``order`` is the order the runs were made in (``gate_ab.interleave``); ``gaps`` the
    canaries timed before each run and after the last one (``len(order) + 1`` of them; fewer
    when a canary could not be timed, then runs past the end get what there is).
    """
    out = {}
    for k, key in enumerate(order):
        out[tuple(key)] = tuple(g for g in gaps[k:k + 2] if isinstance(g, dict))
    return out


def _canary_of(run: SideRun, use_harness: bool) -> SideCanary:
    if use_harness:
        return SideCanary.from_block({"version": canary_mod.VERSION, "between": list(run.harness)})
    return SideCanary.from_block(run.manifest.get("canary"))


def _scaled_block(c: SideCanary, factor: float) -> dict[str, Any]:
    """The canary entries of a run divided by ``factor`` (a normalised run's canaries)."""
    scaled = [{**e, **{k: float(e[k]) / factor for k in ("median", "ci_low", "ci_high")}}
              for e in c.entries]
    return {"version": canary_mod.VERSION, "between": scaled}


def pool(runs: Sequence[SideRun], rounds: int, mode: str,
         label: Callable[[str, int], str],
         min_shift: float = gate_canary.DEFAULT_MIN_SHIFT) -> tuple[Side, Side]:
    """The two pooled sides (``base``, ``head``) of an A/B gate, canary rules applied.

    ``mode``: ``drop``, ``normalize`` or ``ignore`` (all rounds pooled as without canaries).
    ``label(side, n_runs)`` names a side for reports. Each returned side carries the decided
    ``canary_check`` (and notes naming any dropped round), so ``gate_sides`` does not compare
    the pooled canaries again: pooled over rounds, they would mix loads on purpose.
    """
    if mode not in MODES:
        raise ValueError(f"unknown A/B canary mode {mode!r}; valid: {MODES}")
    by_key = {(r.side, r.round): r for r in runs}
    sides = ("base", "head")

    def side(name: str, keep: Sequence[int], frames: Mapping[tuple[str, int], pd.DataFrame],
             check: CanaryCheck | None, notes: tuple[str, ...] = (),
             block: dict[str, Any] | None = None) -> Side:
        chosen = [by_key[(name, r)] for r in keep if (name, r) in by_key]
        pooled = gate_mod.pool_runs([frames[(name, r)] for r in keep if (name, r) in frames])
        manifest = dict(chosen[-1].manifest) if chosen else {}
        if block is not None:
            manifest["canary"] = block
        return Side(label(name, len(chosen)), pooled, manifest, notes, check)

    raw = {k: r.records for k, r in by_key.items()}
    every = list(range(rounds))
    if mode == "ignore":
        return side("base", every, raw, None), side("head", every, raw, None)

    use_harness = any(not SideCanary.from_block(r.manifest.get("canary")).usable for r in runs)
    canaries = {k: _canary_of(r, use_harness) for k, r in by_key.items()}
    source = ("the A/B runner's canaries before and after each run (a side run recorded none)"
              if use_harness else "each run's own canaries")
    if not any(c.usable for c in canaries.values()):
        errors = sorted({e for c in canaries.values() for e in c.errors})
        why = f" (failed: {'; '.join(errors)})" if errors else ""
        check = CanaryCheck("unverified", "gate",
                            f"timing verdicts unverified: no A/B run has a usable canary{why}")
        return side("base", every, raw, check), side("head", every, raw, check)

    steady = [k for k, c in canaries.items() if c.usable and c.steady(min_shift)]
    fastest = min(steady, key=lambda k: canaries[k].speed, default=None)
    kept, dropped = [], []
    for r in every:
        b, h = canaries.get(("base", r)), canaries.get(("head", r))
        if b is None or h is None or not (b.usable and h.usable):
            dropped.append(f"round {r + 1}: a run has no usable canary")
            continue
        c = gate_canary.compare_canaries(b, h, min_shift=min_shift)
        if c.status == "unstable" or (mode == "drop" and c.status == "changed"):
            what = (c.short.replace("candidate", "head").replace("baseline", "base")
                    if c.status == "unstable" or not np.isfinite(c.band[0]) else
                    f"head's canary {c.ratio - 1:+.0%} against base's, beyond their noise")
            dropped.append(f"round {r + 1}: {what}")
            continue
        if mode == "drop" and fastest is not None:
            slower = [gate_canary.compare_canaries(canaries[fastest], x, min_shift=min_shift)
                      for x in (b, h)]
            worst = max((x for x in slower if x.status == "changed"), default=None,
                        key=lambda x: x.ratio)
            if worst is not None:
                dropped.append(f"round {r + 1}: the machine was {worst.ratio - 1:+.0%} slower "
                               f"than in the fastest run (round {fastest[1] + 1}, "
                               f"{fastest[0]})")
                continue
        kept.append(r)
    notes = tuple(f"A/B canary: dropped {d}" for d in dropped)
    if dropped and kept and len(kept) < MIN_POOLED_ROUNDS:
        msg = (f"only {len(kept)} of {rounds} A/B round(s) ran on a steady machine ({source}); "
               f"one round cannot separate the code from run-to-run variation")
        check = CanaryCheck("unstable", "withhold", f"{msg}: timing verdicts withheld",
                            "too few steady A/B rounds (canary)")
        return side("base", every, raw, check, notes), side("head", every, raw, check)
    if not kept:
        msg = (f"machine speed changed in every A/B round ({len(dropped)} of {rounds}; "
               f"{source})")
        check = CanaryCheck("unstable", "withhold", f"{msg}: timing verdicts withheld",
                            "machine speed changed in every A/B round (canary)")
        return side("base", every, raw, check, notes), side("head", every, raw, check)

    if mode == "normalize":
        ref = float(np.median([canaries[(s, r)].speed for s in sides for r in kept]))
        frames, blocks, ratios = {}, {}, []
        for s in sides:
            for r in kept:
                ratio = canaries[(s, r)].speed / ref
                ratios.append(ratio)
                frames[(s, r)] = gate_canary.normalize_frame(by_key[(s, r)].records, ratio)[0]
                blocks[(s, r)] = _scaled_block(canaries[(s, r)], ratio)
        msg = (f"A/B: each run's timings normalised by its canary (ratios to the median run "
               f"{min(ratios):.3f}..{max(ratios):.3f}; {source}); {len(kept)} of {rounds} "
               f"round(s) pooled: timing verdicts stand")
        check = CanaryCheck("changed" if max(ratios) / min(ratios) - 1 > min_shift else "same",
                            "gate", msg)
        out = []
        for s in sides:
            merged = {"version": canary_mod.VERSION,
                      "between": [e for r in kept for e in blocks[(s, r)]["between"]]}
            out.append(side(s, kept, frames, check, notes if s == "base" else (), merged))
        return out[0], out[1]

    medians = [canaries[(s, r)].speed for s in sides for r in kept]
    spread = max(medians) / min(medians) - 1
    msg = (f"A/B: the two runs of each pooled round saw the same machine speed ({len(kept)} "
           f"of {rounds} round(s) pooled, canary spread across them {spread:.0%}; {source}): "
           f"timing verdicts stand")
    check = CanaryCheck("same", "gate", msg)
    return (side("base", kept, raw, check, notes), side("head", kept, raw, check))
