"""Canary comparison: whether the machine's speed changed between (or within) compared runs.

Every run times a fixed reference workload at its start, at its end and between cases on long
runs (effbench.suite.canary, stored in the manifest under ``canary`` with raw samples). Before
any timing verdict the gate compares the two sides' canaries (``check``). The rule is the gate's
own timing rule applied to the canary, with a smaller minimum effect:

* **machine changed** between the sides when the canary itself differs, by the gate's two
  kinds of evidence: pooling each side's canary samples (start, between, end, each timing
  weighing the same: so a side's own drift start -> end widens its distribution), a two-sided
  Mann-Whitney U test gives p < 0.01 *and* the bootstrap 95 % CI of the ratio of 10 %-trimmed
  means (candidate canary / baseline canary) lies entirely beyond ``min_shift`` (2.5 %, half
  the gate's default 5 % minimum effect: a smaller machine shift cannot by itself carry a
  same-code timing beyond the threshold) in either direction. That ratio (> 1: the candidate
  ran on a slower machine) is the speed ratio ``--normalize`` divides by.
* **machine changed during a run** (``unstable``): within one side, the same test between its
  fastest and its slowest canary timing says they differ (a competing process started or
  stopped mid-run). Cases before and after the change saw different machines, and no single
  factor can correct that.
* **too noisy to tell** (also ``unstable``): a canary timing whose median's 95 % CI is wider
  than +-10 % (``NOISY_REL_CI``; a quiet machine gives +-1-3 %). Under heavy contention the
  canary's samples scatter so widely that no test can tell a 2x slower machine from the same
  one, and the cases' timings are no better.
* canaries without raw samples (written by hand, or truncated) fall back to their CIs: the
  machine changed when the union of one side's canary CIs (lowest ``ci_low`` to highest
  ``ci_high``, i.e. each CI widened by the side's drift) does not overlap the other's and the
  median ratio is beyond ``min_shift``; a run drifted when its slowest canary's CI lies above
  its fastest one's by more than ``min_shift``.

Why samples and trimmed means rather than CI overlap and medians: under heavy contention a
canary's samples are bimodal (a thread descheduled or not), the order-statistic CI of its
median becomes very wide (+-40 % at two threads beside one CPU-bound process on the 2-core
machine) and would overlap a quiet canary's, and the median itself jumps between the modes;
the rank test and the trimmed mean still see a machine 3x slower.

What the gate then does with timing metrics (deterministic metrics always gate):

===============  ===============================================================================
status           timing verdicts
===============  ===============================================================================
``same``         gated as usual; the comparison line says the canaries agree
``changed``      ``withheld`` ("machine 18% slower during the candidate: timing verdicts
                 withheld"), never a failure; with ``normalize`` instead: candidate timings
                 divided by the speed ratio (rates multiplied) and then gated
``unstable``     ``withheld``, even with ``normalize``
``unverified``   a side has no usable canary (an older baseline, a canary that failed, another
                 canary version): gated as before, said in the report
``ignored``      ``--ignore-canary``: exactly the gate without canaries
===============  ===============================================================================

Canaries timed at different torch thread counts (``--threads auto`` chose differently, say,
because one run started beside a busy neighbour) mean the runs measured two configurations:
status ``changed``, timing verdicts withheld, even with ``normalize``.

Pure: manifests and frames in, a ``CanaryCheck`` and frames out.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from effbench.suite import canary as canary_mod
from effbench.suite import gate as gate_mod
from effbench.suite.stats import bootstrap_ratio_ci

DEFAULT_MIN_SHIFT = 0.025
"""Relative machine-speed change below which the canary never withholds or normalises."""
STATUSES = ("same", "changed", "unstable", "unverified", "ignored")
ALPHA = 0.01
"""Significance of the rank test between canaries (the gate's default)."""
TRIM = 0.1
"""Share of samples cut from each tail for the canaries' trimmed means."""
NOISY_REL_CI = 0.10
"""A canary timing whose median's 95 % CI is wider than +-10 % (twice the gate's default 5 %
minimum effect; a quiet machine gives +-1-3 %) says the machine was too noisy to compare."""
MIN_SAMPLES = 5
_TIME_UNITS = {"s", "ms", "us", "µs", "ns"}


def _entry_samples(entry: Mapping[str, Any]) -> np.ndarray:
    raw = entry.get("samples")
    if not isinstance(raw, (list, tuple)):
        return np.empty(0)
    arr = np.asarray([x for x in raw if isinstance(x, (int, float))], dtype=float)
    return arr[np.isfinite(arr) & (arr > 0)]


def _trimmed_mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return sps.trim_mean(x, TRIM, axis=axis)


def _differ(base: np.ndarray, cand: np.ndarray, min_shift: float
            ) -> tuple[bool, float, float, float]:
    """Whether two canary samples differ: (differ?, ratio, CI low, CI high).

    Differ = a two-sided Mann-Whitney U test gives p < ``ALPHA`` *and* the bootstrap 95 % CI
    of the ratio of ``TRIM``-trimmed means (cand / base) lies entirely beyond ``min_shift``.
    Trimmed means, not medians: under contention a canary's samples are bimodal (threads
    descheduled or not) and the median sits between the modes, where resampling makes it jump
    from one to the other; the trimmed mean moves with the share of slowed samples and still
    ignores the odd interrupt.
    """
    if min(base.size, cand.size) < MIN_SAMPLES:
        return False, float(np.median(cand) / np.median(base)), math.nan, math.nan
    ci = bootstrap_ratio_ci(cand, base, stat=_trimmed_mean, n_boot=1000)
    if np.ptp(np.concatenate([base, cand])) == 0:
        p = 1.0
    else:
        p = float(sps.mannwhitneyu(cand, base, alternative="two-sided").pvalue)
    beyond = ci.low > 1 + min_shift or ci.high < 1 / (1 + min_shift)
    return bool(p < ALPHA and beyond), ci.ratio, ci.low, ci.high


@dataclass(frozen=True)
class SideCanary:
    """The usable canary timings of one side, and why the others are unusable."""

    entries: tuple[dict[str, Any], ...]
    errors: tuple[str, ...] = ()
    version: Any = None

    @classmethod
    def from_block(cls, block: Any) -> SideCanary:
        """From a manifest's ``canary`` block (None or malformed: no entries)."""
        every = canary_mod.entries(block if isinstance(block, Mapping) else None)
        good = tuple(e for e in every if canary_mod.ok(e))
        errors = tuple(f"{e.get('label', '?')}: {e['error']}" for e in every if "error" in e)
        version = block.get("version") if isinstance(block, Mapping) else None
        return cls(good, errors, version)

    @property
    def usable(self) -> bool:
        return bool(self.entries)

    @property
    def median(self) -> float:
        """Median of the canary medians (the side's machine speed, seconds per call)."""
        return float(np.median([float(e["median"]) for e in self.entries]))

    @property
    def speed(self) -> float:
        """Seconds per canary call that stand for the side: the trimmed mean of its pooled
        samples (``samples``), else the median of its canary medians.
        """
        if self.has_samples:
            return float(_trimmed_mean(self.samples))
        return self.median

    @property
    def low(self) -> float:
        return min(float(e["ci_low"]) for e in self.entries)

    @property
    def high(self) -> float:
        return max(float(e["ci_high"]) for e in self.entries)

    @property
    def threads(self) -> set[Any]:
        return {e.get("threads") for e in self.entries}

    @property
    def has_samples(self) -> bool:
        """Every canary timing kept enough raw samples for the sample-based rule."""
        return all(len(_entry_samples(e)) >= MIN_SAMPLES for e in self.entries)

    @property
    def samples(self) -> np.ndarray:
        """The side's canary samples pooled, each canary timing weighing the same: ``k``
        evenly spaced quantiles of each (``k`` = the smallest sample count), because a slow
        canary gets fewer samples in the same budget and would otherwise be outweighed.
        """
        each = [_entry_samples(e) for e in self.entries]
        k = min(x.size for x in each)
        probs = (np.arange(k) + 0.5) / k
        return np.concatenate([np.quantile(x, probs) for x in each])

    def noisy(self, limit: float = NOISY_REL_CI) -> tuple[bool, float, str]:
        """(too noisy?, widest relative CI half-width, its label): a canary timing whose
        median's 95 % CI is wider than +-``limit`` cannot vouch for anything.
        """
        def rel(e: Mapping[str, Any]) -> float:
            return (float(e["ci_high"]) - float(e["ci_low"])) / 2 / float(e["median"])

        widest = max(self.entries, key=rel)
        return rel(widest) > limit, rel(widest), str(widest.get("label", "?"))

    def steady(self, min_shift: float) -> bool:
        """Neither drifted during the run nor too noisy to tell."""
        return not self.drift(min_shift)[0] and not self.noisy()[0]

    def drift(self, min_shift: float) -> tuple[bool, float, str, str]:
        """(changed within the run?, slowest/fastest - 1, fastest label, slowest label)."""
        fast = min(self.entries, key=lambda e: float(e["median"]))
        slow = max(self.entries, key=lambda e: float(e["median"]))
        shift = float(slow["median"]) / float(fast["median"]) - 1.0
        if fast is slow:
            return False, 0.0, str(fast.get("label", "?")), str(slow.get("label", "?"))
        if self.has_samples:
            moved = _differ(_entry_samples(fast), _entry_samples(slow), min_shift)[0]
        else:
            moved = float(slow["ci_low"]) > float(fast["ci_high"]) and shift > min_shift
        return moved, shift, str(fast.get("label", "?")), str(slow.get("label", "?"))

    def summary(self) -> dict[str, Any]:
        if not self.usable:
            return {"n_ok": 0, "errors": list(self.errors)}
        return {"median": self.median, "low": self.low, "high": self.high,
                "n_ok": len(self.entries), "errors": list(self.errors),
                "labels": [e.get("label") for e in self.entries]}


@dataclass(frozen=True)
class CanaryCheck:
    """The canary comparison of two sides and what it does to timing verdicts.

    ``status``: one of ``STATUSES``. ``action``: ``gate`` (timings gated as usual),
    ``withhold``, ``normalize`` or ``none`` (ignored). ``ratio``: candidate / baseline canary
    median (> 1: the candidate's machine was slower); ``band``: its bootstrap 95 % CI (the
    sample rule), or the ratios the two sides' CIs allow (the fallback). ``message``: the
    comparison line shown first in every report; ``short``: the reason put on each withheld or
    normalised row.
    """

    status: str
    action: str
    message: str
    short: str = ""
    ratio: float = math.nan
    band: tuple[float, float] = (math.nan, math.nan)
    min_shift: float = DEFAULT_MIN_SHIFT
    base: dict[str, Any] = field(default_factory=dict)
    cand: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        def num(x: float) -> float | None:
            return None if x is None or not math.isfinite(x) else float(x)

        return {"status": self.status, "action": self.action, "message": self.message,
                "ratio": num(self.ratio), "band": [num(self.band[0]), num(self.band[1])],
                "min_shift": self.min_shift, "baseline": self.base, "candidate": self.cand}


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3g} ms"


def _speed_words(ratio: float) -> str:
    """``18% slower`` (the canary took 18 % longer) or ``25% faster`` (the baseline's canary
    took 25 % longer than the candidate's): symmetric, so swapping the sides swaps the word.
    """
    return f"{ratio - 1:.0%} slower" if ratio > 1 else f"{1 / ratio - 1:.0%} faster"


def ignored() -> CanaryCheck:
    """``--ignore-canary``: no effect on any verdict."""
    return CanaryCheck("ignored", "none", "ignored (--ignore-canary)")


def check(base_manifest: Mapping[str, Any] | None, cand_manifest: Mapping[str, Any] | None,
          *, normalize: bool = False, min_shift: float = DEFAULT_MIN_SHIFT) -> CanaryCheck:
    """Compare two sides' canaries (module docstring); never raises on a missing canary."""
    b = SideCanary.from_block((base_manifest or {}).get("canary"))
    c = SideCanary.from_block((cand_manifest or {}).get("canary"))
    return compare_canaries(b, c, normalize=normalize, min_shift=min_shift)


def compare_canaries(b: SideCanary, c: SideCanary, *, normalize: bool = False,
                     min_shift: float = DEFAULT_MIN_SHIFT) -> CanaryCheck:
    """``check`` on two ``SideCanary`` values (also used per A/B round)."""
    summaries = {"base": b.summary(), "cand": c.summary()}
    missing = [(name, s) for name, s in (("baseline", b), ("candidate", c)) if not s.usable]
    if missing:
        why = "; ".join(
            f"the {name} has no canary"
            + (f" (failed: {', '.join(s.errors)})" if s.errors
               else " (recorded before effbench timed one)")
            for name, s in missing)
        msg = f"timing verdicts unverified: {why}"
        return CanaryCheck("unverified", "gate", msg, **summaries, min_shift=min_shift)
    if b.version != c.version:
        msg = (f"timing verdicts unverified: canaries not comparable (canary version "
               f"{b.version} vs {c.version})")
        return CanaryCheck("unverified", "gate", msg, **summaries, min_shift=min_shift)
    if b.threads != c.threads:  # e.g. ``--threads auto`` chose differently under load
        def show(t: set[Any]) -> str:
            return "/".join(sorted(map(str, t)))

        short = (f"the runs used different thread counts (baseline {show(b.threads)}, "
                 f"candidate {show(c.threads)})")
        return CanaryCheck("changed", "withhold", f"{short}: timing verdicts withheld", short,
                           c.median / b.median, (math.nan, math.nan), min_shift, **summaries)
    ratio = c.median / b.median
    by_samples = b.has_samples and c.has_samples
    if by_samples:
        apart, ratio, lo, hi = _differ(b.samples, c.samples, min_shift)
        band = (lo, hi)
        figures = (f"canary {_ms(c.speed)} vs {_ms(b.speed)}, ratio {ratio:.3f}, 95% CI "
                   f"[{lo:.3f}, {hi:.3f}]")
    else:
        band = ((b.low / b.median) / (c.high / c.median),
                (b.high / b.median) / (c.low / c.median))
        apart = c.low > b.high or c.high < b.low
        figures = (f"canary {_ms(c.median)} vs {_ms(b.median)}, ratio {ratio:.3f}, noise band "
                   f"[{band[0]:.3f}, {band[1]:.3f}]")
    for name, side in (("baseline", b), ("candidate", c)):
        moved, shift, fast, slow = side.drift(min_shift)
        if moved:
            short = f"machine speed changed during the {name} run (canary)"
            msg = (f"machine speed changed during the {name} run (canary {shift:.0%} slower "
                   f"at {slow} than at {fast}): timing verdicts withheld"
                   + (" (--normalize cannot correct a change within a run)" if normalize
                      else ""))
            return CanaryCheck("unstable", "withhold", msg, short, ratio, band, min_shift,
                               **summaries)
    noise = [(name, *side.noisy()) for name, side in (("baseline", b), ("candidate", c))]
    loud = [(name, rel, label) for name, is_loud, rel, label in noise if is_loud]
    beyond = by_samples or ratio > 1 + min_shift or ratio < 1 / (1 + min_shift)
    if apart and beyond:
        words = _speed_words(ratio)
        if normalize and not loud:
            msg = (f"machine {words} during the candidate: candidate timings normalised by "
                   f"the canary ratio {ratio:.3f} (--normalize; {figures})")
            short = f"candidate normalised by the canary ratio {ratio:.3f}"
            return CanaryCheck("changed", "normalize", msg, short, ratio, band, min_shift,
                               **summaries)
        why = " (a canary too noisy to normalise by)" if normalize else ""
        msg = (f"machine {words} during the candidate: timing verdicts withheld{why} "
               f"({figures})")
        short = f"machine {words} during the candidate (canary)"
        return CanaryCheck("changed", "withhold", msg, short, ratio, band, min_shift,
                           **summaries)
    if loud:
        name, rel, label = loud[0]
        short = f"machine too noisy during the {name} run (canary)"
        msg = (f"machine too noisy during the {name} run to compare timings (canary at "
               f"{label} +-{rel:.0%}, limit +-{NOISY_REL_CI:.0%}): timing verdicts withheld")
        return CanaryCheck("unstable", "withhold", msg, short, ratio, band, min_shift,
                           **summaries)
    msg = f"same machine speed ({figures}): timing verdicts stand"
    return CanaryCheck("same", "gate", msg, "", ratio, band, min_shift, **summaries)


# ---------------------------------------------------------------------------------------------
# What a check does to frames


def scale_for(metric: str, unit: str, ratio: float) -> float | None:
    """Factor that puts a candidate timing metric on the baseline's machine speed, or None
    when the metric is not proportional to time (a speedup, a ratio, joules...).

    Times (``s``...) are divided by the speed ratio; rates (``.../s``) and percentages of a
    peak rate (``pct_peak_*``) are multiplied by it.
    """
    unit = unit or ""
    if unit in _TIME_UNITS:
        return 1.0 / ratio
    if unit.endswith("/s") or "pct_peak" in metric:
        return ratio
    return None


def _scaled_samples(value: Any, factor: float) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else []
        except ValueError:
            return value
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return value
    return [None if x is None else float(x) * factor for x in value]


def normalize_frame(df: pd.DataFrame, ratio: float) -> tuple[pd.DataFrame, set[tuple[str, str]]]:
    """A copy of a candidate record frame with its timing metrics put on the other side's
    machine speed (``scale_for``); also the (case_id, metric) keys that were scaled. Only
    metrics with samples (two or more) are scaled: single readings are never tested.
    """
    out = df.copy()
    done: set[tuple[str, str]] = set()
    values, samples = list(out["value"]), list(out["samples"])
    for i, (case_id, metric, unit, status) in enumerate(
            zip(out["case_id"], out["metric"], out["unit"], out["status"])):
        if status != "ok" or gate_mod.metric_class(str(metric)) != "timing":
            continue
        factor = scale_for(str(metric), str(unit), ratio)
        scaled = _scaled_samples(samples[i], factor) if factor is not None else None
        if not isinstance(scaled, list) or len(scaled) < 2:
            continue  # not a time or rate, or a single reading (never tested): left as is
        v = values[i]
        values[i] = v * factor if v is not None and not pd.isna(v) else v
        samples[i] = scaled
        done.add((case_id, metric))
    out["value"] = values
    out["samples"] = samples
    for col in ("median", "ci_low", "ci_high"):  # flat copies of load_records frames
        if col in out.columns:
            out[col] = [x * scale_for(str(m), str(u), ratio) if (c, m) in done and x is not None
                        and not pd.isna(x) else x
                        for c, m, u, x in zip(out["case_id"], out["metric"], out["unit"],
                                              out[col])]
    return out, done


_COMPARED = ("regressed", "improved", "unchanged")


def withhold(result: pd.DataFrame, short: str) -> pd.DataFrame:
    """Timing rows that were tested become ``withheld``, their measured reason kept.

    Rows never tested (a single reading such as a profiler's or ``pct_peak_*``, too few samples
    for a test) stay as they are: no verdict was given there to withhold.
    """
    out = result.copy()
    mask = ((out["class"] == "timing") & out["verdict"].isin(_COMPARED)
            & out["p_value"].notna())
    out.loc[mask, "reason"] = [f"{short}: verdict withheld; measured {r}"
                               for r in out.loc[mask, "reason"]]
    out.loc[mask, "verdict"] = "withheld"
    return gate_mod.sort_verdicts(out)


def mark_normalized(result: pd.DataFrame, keys: set[tuple[str, str]], short: str
                    ) -> pd.DataFrame:
    """Say on each timing row whether its candidate was normalised."""
    out = result.copy()
    reasons = []
    for case_id, metric, cls, verdict, reason, unit in zip(
            out["case_id"], out["metric"], out["class"], out["verdict"], out["reason"],
            out["unit"]):
        if cls != "timing" or verdict not in _COMPARED or "too few samples" in str(reason):
            reasons.append(reason)
        elif (case_id, metric) in keys:
            reasons.append(f"{reason} ({short})")
        else:
            reasons.append(f"{reason} (not normalised: unit {unit!r} is not a time or rate)")
    out["reason"] = reasons
    return out
