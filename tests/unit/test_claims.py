"""Paper claims: decision rules on known inputs, the claim registry's refusals, CLAIMS.md."""

from pathlib import Path

import pytest

from effbench.suite import claim as claim_mod
from effbench.suite import claims_doc, repro, rules
from effbench.suite.errors import ConfigError
from effbench.suite.records import Record
from effbench.suite.rules import FAILS, HOLDS, NOT_MEASURABLE, evaluate, expected_tokens_per_step

ROOT = Path(__file__).resolve().parents[2]


def rec(technique, metric, value, params=None, stats=None, status="ok", case=None):
    params = params or {}
    case = case or f"engine:{technique}{sorted(params.items())}"
    return Record(run_id="r", case_id=case, technique=technique, family="x", level="engine",
                  params=params, workload="w", device="cpu", metric=metric, value=value,
                  unit="", direction="lower", stats=stats or {}, status=status)


RECORDS = [
    rec("spec", "exact_match", 1.0, {"k": 4}),
    rec("spec", "exact_match", 0.5, {"k": 2}),
    rec("spec", "tokens_per_step", 2.9, {"k": 4}, {"ci_low": 2.8, "ci_high": 3.0}),
    rec("spec", "acceptance_alpha", 0.7, {"k": 4}),
    rec("base", "ppl", 20.0),
    rec("tech", "ppl", 20.3),
    rec("chunk", "itl", 0.01, stats={"p99": 0.02}),
    rec("cont", "itl", 0.01, stats={"p99": 0.08}),
    rec("cont", "tput", 100.0, stats={"ci_low": 90.0, "ci_high": 110.0}),
    rec("chunk", "tput", 95.0, stats={"ci_low": 90.0, "ci_high": 100.0}),
    rec("broken", "ppl", float("nan"), status="failed"),
]


def test_threshold_holds_and_fails_on_the_selected_params():
    ok = evaluate({"kind": "threshold", "technique": "spec", "where": {"k": 4},
                   "metric": "exact_match", "op": ">=", "value": 1.0}, RECORDS)
    assert ok.verdict == HOLDS and ok.measured == 1.0
    bad = evaluate({"kind": "threshold", "technique": "spec", "where": {"k": 2},
                    "metric": "exact_match", "op": ">=", "value": 1.0}, RECORDS)
    assert bad.verdict == FAILS and bad.measured == 0.5


def test_ambiguous_or_missing_metric_is_not_measurable_with_the_reason():
    amb = evaluate({"kind": "threshold", "technique": "spec", "metric": "exact_match",
                    "op": ">=", "value": 1.0}, RECORDS)
    assert amb.verdict == NOT_MEASURABLE and "ambiguous" in amb.detail
    gone = evaluate({"kind": "threshold", "technique": "spec", "metric": "nope",
                     "op": ">=", "value": 1.0}, RECORDS)
    assert gone.verdict == NOT_MEASURABLE and "no nope of spec" in gone.detail
    failed = evaluate({"kind": "threshold", "technique": "broken", "metric": "ppl",
                       "op": "<=", "value": 1.0}, RECORDS)
    assert failed.verdict == NOT_MEASURABLE  # a failed case's record is not evidence


def test_compare_reads_the_requested_statistic():
    out = evaluate({"kind": "compare", "op": "<",
                    "a": {"technique": "chunk", "metric": "itl", "stat": "p99"},
                    "b": {"technique": "cont", "metric": "itl", "stat": "p99"}}, RECORDS)
    assert out.verdict == HOLDS and out.measured == 0.02
    same = evaluate({"kind": "compare", "op": "<",
                     "a": {"technique": "chunk", "metric": "itl"},
                     "b": {"technique": "cont", "metric": "itl"}}, RECORDS)
    assert same.verdict == FAILS  # medians are equal: only the tail differs


def test_ratio_and_its_confidence_interval():
    out = evaluate({"kind": "ratio", "op": ">=", "value": 0.9,
                    "num": {"technique": "chunk", "metric": "tput"},
                    "den": {"technique": "cont", "metric": "tput"}}, RECORDS)
    assert out.verdict == HOLDS and out.measured == pytest.approx(0.95)
    assert out.ci == pytest.approx((90 / 110, 100 / 90))


def test_relative_change_is_signed():
    out = evaluate({"kind": "relative_change", "op": "<=", "value": 0.01,
                    "measured": {"technique": "tech", "metric": "ppl"},
                    "baseline": {"technique": "base", "metric": "ppl"}}, RECORDS)
    assert out.verdict == FAILS and out.measured == pytest.approx(0.015)


def test_all_needs_every_sub_rule_and_reports_the_first_figure():
    sub_ok = {"kind": "threshold", "technique": "base", "metric": "ppl", "op": "<=", "value": 25}
    sub_bad = {"kind": "threshold", "technique": "tech", "metric": "ppl", "op": "<=", "value": 20}
    assert evaluate({"kind": "all", "rules": [sub_ok]}, RECORDS).verdict == HOLDS
    both = evaluate({"kind": "all", "rules": [sub_ok, sub_bad]}, RECORDS)
    assert both.verdict == FAILS and both.measured == 20.0
    gone = {"kind": "threshold", "technique": "x", "metric": "ppl", "op": "<=", "value": 1}
    assert evaluate({"kind": "all", "rules": [sub_ok, gone]}, RECORDS).verdict == NOT_MEASURABLE


def test_speculative_formula():
    assert expected_tokens_per_step(0.0, 4) == 1.0
    assert expected_tokens_per_step(1.0, 4) == 5.0
    assert expected_tokens_per_step(0.5, 2) == pytest.approx(1.75)
    pred = expected_tokens_per_step(0.7, 4)  # 2.7731
    out = evaluate({"kind": "speculative_formula", "technique": "spec", "where": {"k": 4},
                    "tolerance": 0.1}, RECORDS)
    assert out.verdict == HOLDS and f"{pred:.3f}" in out.detail
    tight = evaluate({"kind": "speculative_formula", "technique": "spec", "where": {"k": 4},
                      "tolerance": 0.01}, RECORDS)
    assert tight.verdict == FAILS


@pytest.mark.parametrize("rule, message", [
    ({"kind": "magic"}, "unknown rule kind 'magic'; valid kinds"),
    ({"kind": "threshold", "technique": "a", "metric": "m", "op": ">="}, "needs ['value']"),
    ({"kind": "threshold", "technique": "a", "metric": "m", "op": "~", "value": 1},
     "unknown op '~'"),
    ({"kind": "threshold", "technique": "a", "metric": "m", "op": ">=", "value": 1, "x": 2},
     "has no argument 'x'"),
    ({"kind": "ratio", "op": ">=", "value": 1, "num": {"technique": "a"},
      "den": {"technique": "b", "metric": "m"}}, "num must name a technique and a metric"),
    ({"kind": "compare", "op": ">", "a": {"technique": "a", "metric": "m", "colour": 1},
      "b": {"technique": "b", "metric": "m"}}, "has no key 'colour'"),
])
def test_bad_rules_are_refused_with_the_valid_choices(rule, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        rules.check_rule(rule, "test")


CLAIM = """
[[claim]]
id = "x-claim"
paper = { title = "P", arxiv = "1" }
claim = "it works"
figure = "1.0"
techniques = ["speculative"]
preset = "claims-decoding"
metrics = ["exact_match"]
scale = "tiny"
rule = { kind = "threshold", technique = "speculative", metric = "exact_match", op = ">=", \
value = 1.0 }
"""


def test_a_claim_parses_and_validates():
    (c,) = claim_mod.parse_claims(CLAIM, "t.toml")
    assert c.id == "x-claim" and c.techniques == ("speculative",)
    claim_mod.validate(c)


@pytest.mark.parametrize("edit, message", [
    (('techniques = ["speculative"]', 'techniques = ["speculativ"]'),
     "unknown technique 'speculativ' .did you mean speculative"),
    (('techniques = ["speculative"]', 'techniques = ["kivi"]'),
     "does not run technique 'kivi'"),
    (('preset = "claims-decoding"', 'preset = "nope"'), "no preset 'nope'"),
    (('kind = "threshold"', 'kind = "vibes"'), "unknown rule kind"),
])
def test_a_claim_naming_what_does_not_exist_is_refused(edit, message):
    (c,) = claim_mod.parse_claims(CLAIM.replace(*edit), "t.toml")
    with pytest.raises(ConfigError, match=message):
        claim_mod.validate(c)


@pytest.mark.parametrize("edit, message", [
    (('scale = "tiny"', 'colour = "red"'), "unknown key 'colour'"),
    (('scale = "tiny"', ''), "missing key 'scale'"),
    (('figure = "1.0"', 'figure = "1.0"\nrequires = ["tpu"]'), "unknown requirement 'tpu'"),
])
def test_malformed_claims_are_refused(edit, message):
    with pytest.raises(ConfigError, match=message):
        claim_mod.parse_claims(CLAIM.replace(*edit), "t.toml")


def test_every_shipped_claim_loads_and_unknown_ids_get_the_closest():
    ids = {c.id for c in claim_mod.claims()}
    assert {"speculative-lossless", "kivi-near-lossless", "streaming-llm-sinks"} <= ids
    with pytest.raises(ConfigError, match="did you mean speculative-lossless"):
        repro.select(["speculative-losless"], False)
    with pytest.raises(ConfigError, match="name at least one claim, or --all"):
        repro.select([], False)


def test_a_claim_the_machine_cannot_measure_is_reported_not_run(tmp_path):
    cuda = [c for c in claim_mod.claims() if "cuda" in c.requires]
    assert cuda, "expected at least one CUDA-only claim (TKLQT)"
    out = repro.repro(cuda, device="cpu", results=str(tmp_path), log=lambda _: None)
    assert all(r.outcome.verdict == NOT_MEASURABLE and "needs CUDA" in r.outcome.detail
               for r in out)
    assert not (tmp_path / "runs").exists()  # nothing was run


def test_claims_md_is_current():
    text = claims_doc.render(claim_mod.claims(),
                             claims_doc.load_verdicts(ROOT / "results" / "baselines" / "claims"))
    assert (ROOT / "docs" / "CLAIMS.md").read_text(encoding="utf-8") == text, (
        "docs/CLAIMS.md is stale: run `effbench claims --write-doc`")
