"""``--technique NAME[:k=v,...]``: registered techniques plugged into the server's engine.

Each spec names a registered technique of a family with an engine slot (attention, cache,
decoder, scheduler: ``Family.engine_slot``); its ``k=v`` values are typed by the technique's own
``Param``s and validated by ``Technique.resolve``, so a bad name or value fails with the same
one line (and the valid choices) as in a preset. Slots left unnamed get their family's
baseline, except the scheduler, which defaults to continuous batching: the scheduling family's
baseline (static batching) holds new requests until the whole running batch has finished,
which is not what a server should do by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from effbench.suite import registry
from effbench.suite.errors import ConfigError
from effbench.suite.family import families, get_family
from effbench.suite.technique import Technique

DEFAULT_SCHEDULER = "continuous-batching"
SLOTS = ("attention", "cache", "decoder", "scheduler")
_WHERE = "--technique"
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class Choice:
    """One slot's technique and its resolved parameters."""

    slot: str
    technique: str
    params: tuple[tuple[str, Any], ...]

    def build(self) -> Any:
        """A fresh object (decoders and cache factories hold state: one per engine)."""
        return registry.get(self.technique).build(dict(self.params))

    @property
    def label(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in self.params)
        return f"{self.technique}:{args}" if args else self.technique


def _typed(tech: Technique, name: str, text: str) -> Any:
    """``text`` converted to the type ``tech`` declares for parameter ``name``."""
    param = next((p for p in tech.params if p.name == name), None)
    if param is None:  # resolve() words the error with the valid parameters
        return text
    try:
        if param.type == "int":
            return int(text)
        if param.type == "float":
            return float(text)
        if param.type == "bool":
            low = text.lower()
            if low not in _TRUE + _FALSE:
                raise ValueError(text)
            return low in _TRUE
    except ValueError:
        raise ConfigError(
            f"technique '{tech.name}': parameter '{name}' must be {param.type}, got {text!r}",
            _WHERE,
        ) from None
    return text


def parse_spec(spec: str) -> tuple[Technique, dict[str, Any]]:
    """``NAME`` or ``NAME:k=v,k=v`` as (technique, resolved parameters); ConfigError else."""
    name, _, rest = spec.partition(":")
    tech = registry.get(name.strip(), _WHERE)
    given: dict[str, Any] = {}
    for item in (x for x in rest.split(",") if x.strip()) if rest else ():
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(
                f"'{spec}': expected NAME:key=value[,key=value...], got {item!r}", _WHERE
            )
        given[key.strip()] = _typed(tech, key.strip(), value.strip())
    return tech, tech.resolve(given, _WHERE)


def slot_of(tech: Technique) -> str:
    """The engine slot ``tech``'s family plugs into; ConfigError for a family without one."""
    slot = get_family(tech.family).engine_slot
    if slot is None:
        with_slots = [f.name for f in families() if f.engine_slot is not None]
        raise ConfigError(
            f"technique '{tech.name}' ({tech.family}) has no engine slot; "
            f"--technique takes techniques of {with_slots}",
            _WHERE,
        )
    return slot


def choose(specs: Sequence[str]) -> dict[str, Choice]:
    """Every slot's choice: the named techniques, else the defaults (see module docstring)."""
    chosen: dict[str, Choice] = {}
    for spec in specs:
        tech, params = parse_spec(spec)
        slot = slot_of(tech)
        if slot in chosen:
            raise ConfigError(
                f"two techniques for the {slot} slot: '{chosen[slot].technique}' and '{tech.name}'",
                _WHERE,
            )
        chosen[slot] = Choice(slot, tech.name, tuple(sorted(params.items())))
    for fam in families():
        slot = fam.engine_slot
        if slot is not None and slot not in chosen:
            name = DEFAULT_SCHEDULER if slot == "scheduler" else registry.baseline_of(fam.name).name
            chosen[slot] = Choice(slot, name, tuple(sorted(registry.get(name).resolve({}).items())))
    return chosen


def needs_draft(chosen: dict[str, Choice]) -> bool:
    """Whether the chosen decoder needs a draft model (speculative decoding)."""
    return "draft-model" in registry.get(chosen["decoder"].technique).requires


def describe(chosen: dict[str, Choice]) -> str:
    """``scheduler=..., attention=..., cache=..., decoder=...`` for logs and /v1/models."""
    return ", ".join(f"{slot}={chosen[slot].label}" for slot in SLOTS if slot in chosen)
