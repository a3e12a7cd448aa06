"""Paper claims as data: the ``Claim`` spec and its registry, loaded from TOML files.

A claim is what a paper says (verbatim), which registered techniques and which preset measure
it, the metrics it reads, the decision rule (a registered rule name with arguments; see
effbench.suite.rules) and a scale note saying what differs from the paper here. Claims live in
``suite/claims/*.toml`` (one file per paper, ``[[claim]]`` tables) and in any TOML file a
plugin lists under the entry-point group ``effbench.claims``: like presets, they name
techniques, presets and rules and never import code. A claim naming an unknown technique,
preset, rule or rule argument is refused when the registry loads, with the file and the valid
choices.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from effbench.suite.errors import ConfigError, unknown_name
from effbench.suite.technique import REQUIREMENTS, Paper

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

CLAIM_DIR = Path(__file__).parent / "claims"
ENTRY_POINT_GROUP = "effbench.claims"
_KEYS = {"id", "paper", "claim", "figure", "techniques", "preset", "metrics", "rule", "scale",
         "requires", "chart"}
_REQUIRED = ("id", "paper", "claim", "figure", "techniques", "preset", "metrics", "rule",
             "scale")


@dataclass(frozen=True)
class Claim:
    """One headline claim of a paper and how effbench checks it.

    ``figure`` is the paper's figure as the table shows it ("exact match 1.0", "<= 1/10");
    ``rule`` is ``{"kind": <rule name>, ...arguments}``; ``requires`` lists what the machine
    must have (e.g. ``cuda``), else the claim is reported as not measurable here; ``chart``
    optionally names how the dashboard draws it (x and y metrics, a theoretical curve).
    """

    id: str
    paper: Paper
    claim: str
    figure: str
    techniques: tuple[str, ...]
    preset: str
    metrics: tuple[str, ...]
    rule: dict[str, Any]
    scale: str
    requires: tuple[str, ...] = ()
    chart: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def rule_kind(self) -> str:
        return str(self.rule["kind"])


def parse_claims(text: str, source: str) -> list[Claim]:
    """Claims of one TOML text (``[[claim]]`` tables); ConfigError names the file and field."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", source) from None
    extra = set(data) - {"claim"}
    if extra:
        raise ConfigError(f"unknown top-level key {sorted(extra)[0]!r}; a claims file holds "
                          "[[claim]] tables only", source)
    out = []
    for i, c in enumerate(data.get("claim", [])):
        where = f"{source} [[claim]] #{i + 1}"
        if not isinstance(c, dict):
            raise ConfigError("each [[claim]] must be a table", where)
        unknown = set(c) - _KEYS
        if unknown:
            raise ConfigError(f"unknown key {sorted(unknown)[0]!r}; valid keys: "
                              f"{sorted(_KEYS)}", where)
        missing = [k for k in _REQUIRED if k not in c]
        if missing:
            raise ConfigError(f"missing key {missing[0]!r}", where)
        paper = c["paper"]
        if not isinstance(paper, dict) or "title" not in paper:
            raise ConfigError("paper must be a table with title (and arxiv)", where)
        rule = c["rule"]
        if not isinstance(rule, dict) or "kind" not in rule:
            raise ConfigError("rule must be a table with a 'kind'", where)
        requires = tuple(c.get("requires", ()))
        bad = set(requires) - set(REQUIREMENTS)
        if bad:
            raise ConfigError(f"unknown requirement {sorted(bad)[0]!r}; valid: "
                              f"{list(REQUIREMENTS)}", where)
        out.append(Claim(
            id=str(c["id"]), paper=Paper(str(paper["title"]), str(paper.get("arxiv", ""))),
            claim=str(c["claim"]), figure=str(c["figure"]),
            techniques=tuple(c["techniques"]), preset=str(c["preset"]),
            metrics=tuple(c["metrics"]), rule=dict(rule), scale=str(c["scale"]),
            requires=requires, chart=dict(c.get("chart", {})), source=where,
        ))
    return out


def validate(claim: Claim) -> None:
    """Refuse a claim naming a technique, preset, rule or rule argument that does not exist."""
    from effbench.suite import registry, rules
    from effbench.suite.presets import load as load_preset

    for t in claim.techniques:
        registry.get(t, claim.source)
    preset = load_preset(claim.preset)
    named = {b.technique for b in preset.benches}
    absent = [t for t in claim.techniques if t not in named]
    if absent:
        raise ConfigError(
            f"claim {claim.id}: preset {claim.preset!r} does not run technique {absent[0]!r}",
            claim.source)
    rules.check_rule(claim.rule, claim.source)


_CLAIMS: dict[str, Claim] = {}
_LOADED = False


def _files() -> list[tuple[str, str]]:
    found = [(p.read_text(encoding="utf-8"), str(p)) for p in sorted(CLAIM_DIR.glob("*.toml"))]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        path = Path(ep.value)
        found.append((path.read_text(encoding="utf-8"), str(path)))
    return found


def load_claims() -> None:
    """Parse and validate every claims file (once); duplicate ids are refused."""
    global _LOADED
    if _LOADED:
        return
    loaded: dict[str, Claim] = {}
    for text, source in _files():
        for c in parse_claims(text, source):
            if c.id in loaded:
                raise ConfigError(f"claim id {c.id!r} is declared twice "
                                  f"({loaded[c.id].source})", c.source)
            validate(c)
            loaded[c.id] = c
    _CLAIMS.update(loaded)
    _LOADED = True


def claims() -> list[Claim]:
    load_claims()
    return list(_CLAIMS.values())


def get_claim(cid: str, where: str | None = None) -> Claim:
    """The claim called ``cid``; a ConfigError lists the closest ids and all valid ones."""
    load_claims()
    if cid in _CLAIMS:
        return _CLAIMS[cid]
    raise unknown_name("claim", cid, sorted(_CLAIMS), where)
