"""The regression gate: compare a candidate run with a baseline, metric by metric.

Pure functions, DataFrames in and out: ``compare(base_df, cand_df, thresholds)`` takes two record
frames (``effbench.suite.store.load_records`` shape) and returns one row per (case_id, metric) with
a
verdict. Nothing here reads files or prints.

Metrics fall into three classes (``metric_class``), because noise differs in kind; a metric's
class is the kind its producer declared it with (effbench.suite.metrics), never guessed from
its name here:

* ``timing``: anything measured with a clock or derived from one (latency, TTFT, tokens/s,
  TFLOP/s, speedup, profiler readings...). Noisy, so a verdict needs two independent pieces of
  evidence, computed on the raw samples:

  1. a Mann-Whitney U rank test, one-sided in the direction the medians moved, with
     ``p < alpha`` (default 0.01). It makes no normality assumption about skewed timings.
  2. a minimum effect: the bootstrap CI (``effbench.suite.stats.bootstrap_ratio_ci``) of
     ``median(candidate) / median(baseline)`` must lie *entirely* beyond the threshold
     (default 5 %). For lower-is-better metrics "beyond" means ``ci_low > 1 + t``; for
     higher-is-better ones ``ci_high < 1 / (1 + t)``, the same threshold in log space, so a
     latency and the throughput derived from it get the same verdict.

  Regressed = both say "worse"; improved = both say "better"; otherwise unchanged, with a reason
  naming which half failed. The test alone flags tiny, real but irrelevant shifts (big samples
  make everything significant); the effect alone flags noise. Requiring both keeps the
  false-alarm rate near ``alpha`` times the chance that noise also moves the median by > t.
  Fewer than ``min_samples`` on a side gives "unchanged" with the reason (no test possible).

* ``count``: exact quantities (bytes, FLOPs, tokens/step, exact match, acceptance rate):
  any change beyond a relative tolerance (default 1e-6) is a change; in the bad direction it
  is a regression.
* ``numeric``: deterministic floating-point results (perplexity, KL, top-1 agreement, max
  abs / relative errors): the same rule with a looser tolerance (1e-3 relative or 1e-6
  absolute, whichever is larger), since kernels may reorder sums between versions.

Other verdicts: ``new`` (only in the candidate), ``missing`` (only in the baseline), ``failed``
(the candidate's case failed; every baseline metric of it is marked), ``skipped`` (the caller
refused a class, e.g. timings against another machine's baseline, see ``skip_timing``),
``withheld`` (a timing compared, but the machine's speed differed between or within the runs
according to their canaries, so the verdict is not trusted: effbench.suite.gate_canary; it
never fails the gate, deterministic metrics still do).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps

from effbench.suite.errors import ConfigError, StoreError
from effbench.suite.metrics import DETERMINISTIC_KINDS, KINDS, kind_of
from effbench.suite.records import SCHEMA_VERSION
from effbench.suite.stats import bootstrap_ratio_ci, clean

VERDICTS = ("regressed", "failed", "missing", "improved", "new", "withheld", "skipped",
            "unchanged")
"""Every verdict, in the order a report lists them (what needs attention first)."""
FAILING = ("regressed", "failed")
"""Verdicts that make ``effbench gate`` exit 1."""
CLASSES = KINDS
"""Metric classes: the kinds metrics are declared with (effbench.suite.metrics)."""
DETERMINISTIC_CLASSES = DETERMINISTIC_KINDS

REQUIRED_COLUMNS = ("case_id", "metric", "value", "unit", "direction", "samples", "status")
RESULT_COLUMNS = (
    "case_id",
    "metric",
    "class",
    "direction",
    "unit",
    "base_median",
    "cand_median",
    "ratio",
    "ci_low",
    "ci_high",
    "p_value",
    "n_base",
    "n_cand",
    "verdict",
    "reason",
)


def metric_class(metric: str) -> str:
    """``count``, ``numeric`` or ``timing``: the kind the metric's producer declared it with
    (effbench.suite.metrics, see the module docstring).

    A name nothing declares (a record from another tool or an older effbench) is ``timing``:
    treating it as a noisy measurement can only make the gate less trigger-happy, never raise
    a false alarm on noise.
    """
    return kind_of(metric)


@dataclass(frozen=True)
class Thresholds:
    """How much change each metric class may show before it counts (see module docstring).

    ``alpha``: significance level of the rank test. ``timing_effect``: minimum relative change
    of the median ratio. ``confidence``: level of its bootstrap CI. ``min_samples``: fewest
    samples per side to test at all. ``n_boot``: bootstrap resamples. ``count_rel``/``count_abs``
    and ``numeric_rel``/``numeric_abs``: tolerances of the deterministic classes (a change is
    tolerated when ``|cand - base| <= max(rel * |base|, abs)``). ``canary_shift``: the smallest
    machine-speed change the canaries must show before timing verdicts are withheld or
    normalised (effbench.suite.gate_canary).
    """

    alpha: float = 0.01
    timing_effect: float = 0.05
    confidence: float = 0.95
    min_samples: int = 5
    n_boot: int = 2000
    count_rel: float = 1e-6
    count_abs: float = 0.0
    numeric_rel: float = 1e-3
    numeric_abs: float = 1e-6
    canary_shift: float = 0.025

    def __post_init__(self) -> None:
        _check_open01("alpha", self.alpha)
        _check_open01("confidence", self.confidence)
        for name in ("timing_effect", "count_rel", "count_abs", "numeric_rel", "numeric_abs",
                     "canary_shift"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ConfigError(f"{name} must be a finite number >= 0, got {value!r}", "[gate]")
        if self.min_samples < 2:
            raise ConfigError(f"min_samples must be >= 2, got {self.min_samples}", "[gate]")
        if self.n_boot < 100:
            raise ConfigError(f"n_boot must be >= 100, got {self.n_boot}", "[gate]")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "[gate]") -> Thresholds:
        """Build from a mapping such as a preset's ``[gate]`` table; ConfigError on bad input.

        Unknown keys are rejected with the list of valid ones; values must be numbers (ints
        for ``min_samples`` and ``n_boot``).
        """
        if not isinstance(d, Mapping):
            raise ConfigError(f"expected a table of thresholds, got {type(d).__name__}", where)
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ConfigError(
                f"unknown threshold {unknown[0]!r}; valid: {', '.join(sorted(valid))}", where
            )
        out: dict[str, Any] = {}
        for key, value in d.items():
            want_int = key in ("min_samples", "n_boot")
            ok = isinstance(value, int) if want_int else isinstance(value, (int, float))
            if isinstance(value, bool) or not ok:
                kind = "an integer" if want_int else "a number"
                raise ConfigError(f"{key} must be {kind}, got {value!r}", where)
            out[key] = int(value) if want_int else float(value)
        try:
            return cls(**out)
        except ConfigError as e:  # re-point the message at where the values came from
            raise ConfigError(str(e).removeprefix("[gate]: "), where) from None

    def tolerance(self, cls_name: str) -> tuple[float, float]:
        """(relative, absolute) tolerance of a deterministic class."""
        if cls_name == "count":
            return self.count_rel, self.count_abs
        return self.numeric_rel, self.numeric_abs


def _check_open01(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 < value < 1.0):
        raise ConfigError(f"{name} must be in (0, 1), got {value!r}", "[gate]")


# ---------------------------------------------------------------------------------------------
# Input checks


def check_frame(df: pd.DataFrame, label: str) -> None:
    """StoreError (one line) when ``df`` is not a record frame of this schema version."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise StoreError(f"{label} is not a record table: missing column(s) {missing}")
    if "schema_version" in df.columns and len(df):
        versions = {int(v) for v in df["schema_version"].dropna().unique()}
        other = sorted(versions - {SCHEMA_VERSION})
        if other:
            raise StoreError(
                f"{label} has record schema version {other[0]}, this effbench reads "
                f"version {SCHEMA_VERSION}; re-save it with a matching effbench"
            )


def _samples(value: Any) -> np.ndarray:
    """Finite float samples from a list/tuple/array or the store's JSON text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return np.empty(0)
    if isinstance(value, str):
        try:
            value = json.loads(value) if value else []
        except ValueError as e:
            raise StoreError(f"samples are not valid JSON: {value[:40]!r}") from e
    arr, _ = clean([math.nan if x is None else x for x in value])
    return arr


def _index(df: pd.DataFrame) -> dict[tuple[str, str], dict[str, Any]]:
    """(case_id, metric) -> record dict, for the ok records of a frame (last one wins)."""
    ok = df[df["status"] == "ok"]
    return {(r["case_id"], r["metric"]): r for r in ok.to_dict("records")}


def _failed(df: pd.DataFrame) -> dict[str, str]:
    """case_id -> error text of every failed case in a frame."""
    bad = df[df["status"] == "failed"]
    errors = bad["error"] if "error" in bad.columns else pd.Series([""] * len(bad), bad.index)
    return {c: str(e or "failed") for c, e in zip(bad["case_id"], errors)}


def filter_metrics(df: pd.DataFrame, metrics: Iterable[str] | None, label: str) -> pd.DataFrame:
    """Rows of ``df`` whose metric is in ``metrics`` (all when None); failed rows are kept.

    ConfigError when a requested metric is not in ``df``, naming the ones that are.
    """
    if not metrics:
        return df
    wanted = list(metrics)
    have = set(df.loc[df["status"] == "ok", "metric"])
    unknown = [m for m in wanted if m not in have]
    if unknown:
        raise ConfigError(
            f"unknown metric {unknown[0]!r} in {label}; available: {', '.join(sorted(have))}",
            "--metric",
        )
    return _keep_metrics(df, wanted)


def _keep_metrics(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    return df[df["metric"].isin(metrics) | (df["status"] == "failed")]


# ---------------------------------------------------------------------------------------------
# Verdicts


@dataclass(frozen=True)
class _Row:
    verdict: str
    reason: str
    ratio: float = math.nan
    ci_low: float = math.nan
    ci_high: float = math.nan
    p_value: float = math.nan


def _bad_ratio(direction: str, threshold: float) -> float:
    """The ratio cand/base beyond which a change is ``threshold`` worse."""
    return 1.0 + threshold if direction == "lower" else 1.0 / (1.0 + threshold)


def timing_verdict(
    base: np.ndarray, cand: np.ndarray, direction: str, th: Thresholds
) -> tuple[str, str, float, float, float, float]:
    """Verdict of one timing metric from raw samples: (verdict, reason, ratio, lo, hi, p)."""
    row = _timing(base, cand, direction, th)
    return row.verdict, row.reason, row.ratio, row.ci_low, row.ci_high, row.p_value


def _timing(base: np.ndarray, cand: np.ndarray, direction: str, th: Thresholds) -> _Row:
    n_b, n_c = base.size, cand.size
    if min(n_b, n_c) < th.min_samples:
        ratio = float(np.median(cand) / np.median(base)) if n_b and n_c else math.nan
        return _Row(
            "unchanged",
            f"too few samples to test (base {n_b}, candidate {n_c}; need {th.min_samples})",
            ratio,
        )
    ci = bootstrap_ratio_ci(cand, base, n_boot=th.n_boot, confidence=th.confidence)
    up = ci.ratio >= 1.0  # which way the medians moved
    worse = up if direction == "lower" else not up
    alternative = "greater" if up else "less"
    if np.ptp(np.concatenate([base, cand])) == 0:  # all samples equal: no evidence at all
        p = 1.0
    else:
        p = float(sps.mannwhitneyu(cand, base, alternative=alternative).pvalue)
    bad, good = _bad_ratio(direction, th.timing_effect), _bad_ratio(
        "higher" if direction == "lower" else "lower", th.timing_effect
    )
    beyond_bad = ci.low > bad if direction == "lower" else ci.high < bad
    beyond_good = ci.high < good if direction == "lower" else ci.low > good
    beyond = beyond_bad if worse else beyond_good
    change = f"{(ci.ratio - 1) * 100:+.1f}%"
    ci_txt = f"CI [{(ci.low - 1) * 100:+.1f}%, {(ci.high - 1) * 100:+.1f}%]"
    significant = p < th.alpha
    if significant and beyond:
        verdict = "regressed" if worse else "improved"
        reason = f"{change} {ci_txt}, p={p:.2g}"
    elif significant:
        reason = (
            f"{change} is significant (p={p:.2g}) but its {ci_txt} is not entirely beyond "
            f"the {th.timing_effect:.0%} threshold"
        )
        verdict = "unchanged"
    elif beyond:
        reason = f"{change} {ci_txt} but not significant (p={p:.2g} >= {th.alpha:g})"
        verdict = "unchanged"
    else:
        reason = f"{change}, p={p:.2g}: within noise"
        verdict = "unchanged"
    return _Row(verdict, reason, ci.ratio, ci.low, ci.high, p)


def _deterministic(base: float, cand: float, direction: str, rel: float, abs_: float) -> _Row:
    ratio = cand / base if base not in (0.0,) and math.isfinite(base) else math.nan
    if math.isnan(base) and math.isnan(cand):
        return _Row("unchanged", "NaN on both sides", ratio)
    if math.isnan(base) or math.isnan(cand):
        return _Row("regressed", f"value is NaN on one side (base {base}, candidate {cand})")
    diff = cand - base
    tol = max(rel * abs(base), abs_)
    if abs(diff) <= tol:
        why = "identical" if diff == 0 else f"changed by {diff:.3g}, within tolerance {tol:.3g}"
        return _Row("unchanged", why, ratio)
    worse = diff > 0 if direction == "lower" else diff < 0
    rel_txt = f" ({(ratio - 1) * 100:+.3g}%)" if math.isfinite(ratio) else ""
    return _Row(
        "regressed" if worse else "improved",
        f"{base:.6g} -> {cand:.6g}{rel_txt}, beyond tolerance {tol:.3g}",
        ratio,
    )


def _center(rec: dict[str, Any] | None, samples: np.ndarray) -> float:
    if rec is None:
        return math.nan
    if samples.size:
        return float(np.median(samples))
    value = rec.get("value")
    return math.nan if value is None or pd.isna(value) else float(value)


def compare(
    base_df: pd.DataFrame,
    cand_df: pd.DataFrame,
    thresholds: Thresholds | None = None,
    *,
    metrics: Iterable[str] | None = None,
    classes: Iterable[str] = CLASSES,
    skip_timing: str | None = None,
) -> pd.DataFrame:
    """Compare two record frames per (case_id, metric); one row each, in ``RESULT_COLUMNS``.

    ``metrics`` restricts to those names (ConfigError for one neither frame has); ``classes``
    restricts to those metric classes; ``skip_timing``, when given, is the reason every timing
    row is reported as ``skipped`` instead of compared (a baseline from another machine).
    Raises ConfigError when the two runs have no case in common, StoreError for a frame that
    is not a record table of this schema version. Rows are sorted by ``VERDICTS`` order.
    """
    th = thresholds or Thresholds()
    check_frame(base_df, "baseline")
    check_frame(cand_df, "candidate")
    bad_classes = sorted(set(classes) - set(CLASSES))
    if bad_classes:
        raise ConfigError(f"unknown metric class {bad_classes[0]!r}; valid: {CLASSES}")
    common = set(base_df["case_id"]) & set(cand_df["case_id"])
    if not common:
        raise ConfigError(
            f"baseline and candidate have no case in common (baseline: "
            f"{base_df['case_id'].nunique()} case(s), candidate: "
            f"{cand_df['case_id'].nunique()}): were they run from the same preset?"
        )
    if metrics:
        wanted_metrics = list(metrics)
        merged = pd.concat([base_df, cand_df], ignore_index=True)
        filter_metrics(merged, wanted_metrics, "baseline or candidate")  # raises on unknown
        base_df = _keep_metrics(base_df, wanted_metrics)
        cand_df = _keep_metrics(cand_df, wanted_metrics)
    base, cand = _index(base_df), _index(cand_df)
    failed_cand, failed_base = _failed(cand_df), _failed(base_df)
    wanted = set(classes)
    rows = []
    for key in sorted(set(base) | set(cand)):
        case_id, metric = key
        cls_name = metric_class(metric)
        if cls_name not in wanted:
            continue
        b, c = base.get(key), cand.get(key)
        ref = b or c
        bs = _samples(b["samples"]) if b else np.empty(0)
        cs = _samples(c["samples"]) if c else np.empty(0)
        direction = str(ref["direction"])
        if c is None and case_id in failed_cand:
            row = _Row("failed", f"candidate case failed: {failed_cand[case_id]}")
        elif c is None:
            row = _Row("missing", "not in the candidate run")
        elif b is None:
            why = "baseline case failed" if case_id in failed_base else "not in the baseline"
            row = _Row("new", why)
        elif cls_name == "timing" and skip_timing:
            row = _Row("skipped", skip_timing)
        elif cls_name == "timing":
            row = _timing(bs, cs, direction, th)
        else:
            row = _deterministic(
                _center(b, np.empty(0)), _center(c, np.empty(0)), direction,
                *th.tolerance(cls_name),
            )
        rows.append(
            {
                "case_id": case_id,
                "metric": metric,
                "class": cls_name,
                "direction": direction,
                "unit": str(ref["unit"]),
                "base_median": _center(b, bs),
                "cand_median": _center(c, cs),
                "ratio": row.ratio,
                "ci_low": row.ci_low,
                "ci_high": row.ci_high,
                "p_value": row.p_value,
                "n_base": int(bs.size),
                "n_cand": int(cs.size),
                "verdict": row.verdict,
                "reason": row.reason,
            }
        )
    for case_id in sorted(set(failed_cand) - set(base_df["case_id"])):
        rows.append(_case_row(case_id, "failed", f"candidate case failed: {failed_cand[case_id]}"))
    out = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return sort_verdicts(out)


def _case_row(case_id: str, verdict: str, reason: str) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(RESULT_COLUMNS, math.nan)
    row.update(case_id=case_id, metric="error", verdict=verdict, reason=reason, n_base=0,
               n_cand=0, unit="", direction="lower")
    row["class"] = "count"
    return row


def sort_verdicts(df: pd.DataFrame) -> pd.DataFrame:
    """Rows ordered by verdict (what needs attention first), then case and metric."""
    order = {v: i for i, v in enumerate(VERDICTS)}
    key = df["verdict"].map(order)
    return (
        df.assign(_order=key)
        .sort_values(["_order", "case_id", "metric"], kind="stable")
        .drop(columns="_order")
        .reset_index(drop=True)
    )


def counts(result: pd.DataFrame) -> dict[str, int]:
    """Number of rows per verdict, every verdict present (0 when absent)."""
    got = result["verdict"].value_counts().to_dict()
    return {v: int(got.get(v, 0)) for v in VERDICTS}


def passed(result: pd.DataFrame) -> bool:
    """True when no row is regressed or failed."""
    return not result["verdict"].isin(FAILING).any()


def pool_runs(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """One record frame from several runs of the same cases: samples concatenated per metric.

    Used by the A/B gate, which runs each side several times interleaved. A case that failed
    in any run is kept as failed. ``value`` becomes the median of the pooled samples for
    metrics with samples; deterministic values keep the first run's value.
    """
    frames = [f for f in frames if len(f)]
    if not frames:
        raise StoreError("no records to pool: every run came back empty")
    df = pd.concat(frames, ignore_index=True)
    failed = df[df["status"] == "failed"].drop_duplicates("case_id")
    ok = df[(df["status"] == "ok") & ~df["case_id"].isin(failed["case_id"])]
    rows = []
    for _, group in ok.groupby(["case_id", "metric"], sort=False):
        first = group.iloc[0].to_dict()
        pooled = [x for s in group["samples"] for x in _samples(s).tolist()]
        first["samples"] = pooled
        if len(pooled) > 1:
            first["value"] = float(np.median(pooled))
        rows.append(first)
    out = pd.DataFrame(rows, columns=df.columns) if rows else df.iloc[0:0]
    return pd.concat([out, failed], ignore_index=True)
