"""Decision rules for paper claims: pure functions from a run's records to a verdict.

A claim names its rule in data (``rule = { kind = "threshold", ... }``); this module holds the
registered kinds and checks a rule's arguments when the claim registry loads. Every rule
reads metrics through ``pick`` (technique, parameter subset, metric, statistic), so a metric
missing from the run makes that claim "not measurable" with the reason, never a crash, and the
other claims are still decided.

Kinds:
- ``threshold``: one metric against a constant (``op`` one of >=, <=, >, <, ==);
- ``compare``: metric ``a`` against ``factor`` x metric ``b`` (e.g. p99 ITL of chunked prefill
  below that of continuous batching);
- ``ratio``: ``num / den`` against a constant (the measured figure is the ratio);
- ``relative_change``: ``(value - baseline) / |baseline|`` against a constant (quality drop);
- ``all``: every sub-rule holds (the figure shown is the first sub-rule's);
- ``speculative_formula``: tokens per target step against (1 - a^(k+1)) / (1 - a) for the
  measured per-token acceptance a, within a relative tolerance.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from effbench.suite.errors import ConfigError
from effbench.suite.records import Record

HOLDS, FAILS, NOT_MEASURABLE = "holds", "does not hold", "not measurable"
OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "==": lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12),
}
STATS = ("value", "p90", "p99", "ci_low", "ci_high")
_SELECTOR = {"technique", "metric", "where", "stat", "level", "workload"}


@dataclass(frozen=True)
class Outcome:
    """A claim's verdict, the measured figure with its CI where known, and how it was got."""

    verdict: str
    measured: float | None = None
    ci: tuple[float, float] | None = None
    detail: str = ""


class MissingMetric(LookupError):
    """The run lacks a metric a rule needs (the claim is then not measurable)."""


@dataclass(frozen=True)
class Picked:
    value: float
    ci: tuple[float, float] | None
    label: str


def pick(records: Iterable[Record], sel: Mapping[str, Any]) -> Picked:
    """The one ok record matching a selector, as (value of the requested stat, CI, label).

    ``sel``: ``technique``, ``metric``, optional ``where`` (parameter subset), ``level``,
    ``workload`` and ``stat`` (``value`` = the median, or ``p90``/``p99``/``ci_low``/``ci_high``
    from the record's statistics). No match, or several, raises MissingMetric naming why.
    """
    where = dict(sel.get("where", {}))
    matching = [
        r for r in records
        if r.technique == sel["technique"] and r.metric == sel["metric"]
        and all(r.params.get(k) == v for k, v in where.items())
        and sel.get("level") in (None, r.level) and sel.get("workload") in (None, r.workload)
    ]
    found = [r for r in matching if r.status == "ok"]
    label = sel["technique"] + (
        "[" + ",".join(f"{k}={v}" for k, v in where.items()) + "]" if where else "")
    if not found:
        # a skipped or failed record says why the metric is missing (no GPU, no transition)
        why = next((f": {r.status}: {r.error}" for r in matching if r.error), "")
        raise MissingMetric(f"no {sel['metric']} of {label} in the run{why}")
    if len(found) > 1:
        cases = sorted({r.case_id for r in found})
        raise MissingMetric(f"{sel['metric']} of {label} is ambiguous ({len(cases)} cases: "
                            f"{cases[:3]}); narrow it with where/level/workload")
    rec = found[0]
    stat = sel.get("stat", "value")
    value = rec.value if stat == "value" else rec.stats.get(stat)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise MissingMetric(f"{sel['metric']} of {label} has no {stat}")
    ci = None
    if stat == "value" and "ci_low" in rec.stats and "ci_high" in rec.stats:
        ci = (float(rec.stats["ci_low"]), float(rec.stats["ci_high"]))
    return Picked(float(value), ci, f"{sel['metric']} of {label}")


def _decide(measured: float, op: str, value: float) -> str:
    return HOLDS if OPS[op](measured, value) else FAILS


def _threshold(records: list[Record], rule: Mapping[str, Any]) -> Outcome:
    p = pick(records, rule)
    return Outcome(_decide(p.value, rule["op"], rule["value"]), p.value, p.ci,
                   f"{p.label} = {p.value:.4g} {rule['op']} {rule['value']}")


def _compare(records: list[Record], rule: Mapping[str, Any]) -> Outcome:
    a, b = pick(records, rule["a"]), pick(records, rule["b"])
    factor = float(rule.get("factor", 1.0))
    ok = OPS[rule["op"]](a.value, factor * b.value)
    scale = f"{factor:g} x " if factor != 1.0 else ""
    return Outcome(HOLDS if ok else FAILS, a.value, a.ci,
                   f"{a.label} = {a.value:.4g} {rule['op']} {scale}{b.label} = {b.value:.4g}")


def _ratio_ci(a: Picked, b: Picked) -> tuple[float, float] | None:
    if a.ci is None or b.ci is None or min(b.ci) <= 0 or min(a.ci) < 0:
        return None
    return a.ci[0] / b.ci[1], a.ci[1] / b.ci[0]


def _ratio(records: list[Record], rule: Mapping[str, Any]) -> Outcome:
    a, b = pick(records, rule["num"]), pick(records, rule["den"])
    if b.value == 0:
        return Outcome(NOT_MEASURABLE, detail=f"{b.label} is 0: the ratio is undefined")
    r = a.value / b.value
    return Outcome(_decide(r, rule["op"], rule["value"]), r, _ratio_ci(a, b),
                   f"{a.label} / {b.label} = {a.value:.4g} / {b.value:.4g} = {r:.4g} "
                   f"{rule['op']} {rule['value']}")


def _relative_change(records: list[Record], rule: Mapping[str, Any]) -> Outcome:
    t, b = pick(records, rule["measured"]), pick(records, rule["baseline"])
    if b.value == 0:
        return Outcome(NOT_MEASURABLE, detail=f"{b.label} is 0: no relative change")
    ch = (t.value - b.value) / abs(b.value)
    return Outcome(_decide(ch, rule["op"], rule["value"]), ch, None,
                   f"({t.label} - {b.label}) / {b.label} = ({t.value:.4g} - {b.value:.4g}) / "
                   f"{abs(b.value):.4g} = {ch:+.3%} {rule['op']} {rule['value']:+.3%}")


def _all(records: list[Record], rule: Mapping[str, Any]) -> Outcome:
    outs = [evaluate(sub, records) for sub in rule["rules"]]
    bad = [o for o in outs if o.verdict == NOT_MEASURABLE]
    if bad:
        return Outcome(NOT_MEASURABLE, detail=bad[0].detail)
    verdict = HOLDS if all(o.verdict == HOLDS for o in outs) else FAILS
    first = outs[0]
    return Outcome(verdict, first.measured, first.ci,
                   "; ".join(f"{o.detail} [{o.verdict}]" for o in outs))


def expected_tokens_per_step(alpha: float, k: int) -> float:
    """Leviathan et al.'s expected tokens per target step for iid per-token acceptance a."""
    if alpha >= 1.0:
        return float(k + 1)
    return (1 - alpha ** (k + 1)) / (1 - alpha)


def _speculative_formula(records: list[Record], rule: Mapping[str, Any]) -> Outcome:
    sel = {"technique": rule["technique"], "where": rule.get("where", {})}
    tps = pick(records, {**sel, "metric": "tokens_per_step"})
    alpha = pick(records, {**sel, "metric": "acceptance_alpha"})
    k = int(rule.get("where", {}).get("k", rule.get("k", 0)))
    if k < 1:
        raise ConfigError("speculative_formula needs k (in where or as k)")
    pred = expected_tokens_per_step(alpha.value, k)
    rel = tps.value / pred - 1
    ok = abs(rel) <= float(rule["tolerance"])
    return Outcome(HOLDS if ok else FAILS, tps.value, tps.ci,
                   f"tokens/step {tps.value:.3f} vs (1-a^{k + 1})/(1-a) = {pred:.3f} at "
                   f"a = {alpha.value:.3f} ({rel:+.1%}, tolerance +-{rule['tolerance']:.0%})")


RULES: dict[str, tuple[Callable[[list[Record], Mapping[str, Any]], Outcome], set[str],
                       set[str]]] = {
    # kind: (function, required arguments, optional arguments)
    "threshold": (_threshold, {"technique", "metric", "op", "value"},
                  {"where", "stat", "level", "workload"}),
    "compare": (_compare, {"a", "b", "op"}, {"factor"}),
    "ratio": (_ratio, {"num", "den", "op", "value"}, set()),
    "relative_change": (_relative_change, {"measured", "baseline", "op", "value"}, set()),
    "all": (_all, {"rules"}, set()),
    "speculative_formula": (_speculative_formula, {"technique", "tolerance"}, {"where", "k"}),
}
_NESTED = {"a", "b", "num", "den", "measured", "baseline"}


def check_rule(rule: Mapping[str, Any], where: str | None = None) -> None:
    """Refuse an unknown kind, a missing or unknown argument, or a bad op, naming the valid."""
    kind = rule.get("kind")
    if kind not in RULES:
        raise ConfigError(f"unknown rule kind {kind!r}; valid kinds: {sorted(RULES)}", where)
    _, required, optional = RULES[kind]
    args = set(rule) - {"kind"}
    missing = required - args
    if missing:
        raise ConfigError(f"rule {kind} needs {sorted(missing)}", where)
    unknown = args - required - optional
    if unknown:
        raise ConfigError(f"rule {kind} has no argument {sorted(unknown)[0]!r}; valid: "
                          f"{sorted(required | optional)}", where)
    if "op" in rule and rule["op"] not in OPS:
        raise ConfigError(f"unknown op {rule['op']!r}; valid ops: {list(OPS)}", where)
    for key in _NESTED & args:
        sel = rule[key]
        if not isinstance(sel, Mapping) or not {"technique", "metric"} <= set(sel):
            raise ConfigError(f"rule {kind}: {key} must name a technique and a metric", where)
        bad = set(sel) - _SELECTOR
        if bad:
            raise ConfigError(f"rule {kind}: {key} has no key {sorted(bad)[0]!r}; valid: "
                              f"{sorted(_SELECTOR)}", where)
    if rule.get("stat", "value") not in STATS:
        raise ConfigError(f"unknown stat {rule['stat']!r}; valid: {list(STATS)}", where)
    if kind == "all":
        for sub in rule["rules"]:
            check_rule(sub, where)


def evaluate(rule: Mapping[str, Any], records: Iterable[Record]) -> Outcome:
    """Decide ``rule`` on ``records``; a missing metric gives "not measurable" with the reason."""
    fn = RULES[rule["kind"]][0]
    try:
        return fn(list(records), rule)
    except MissingMetric as e:
        return Outcome(NOT_MEASURABLE, detail=f"metric missing from the run: {e}")
